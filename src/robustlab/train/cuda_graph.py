"""A training step replayed from a CUDA graph (``train.cuda_graph: true``).

Why: one step of these networks is hundreds of small kernels, and a fast GPU runs them
faster than the host can launch them one by one, so an eager step waits on its launches
(docs/performance.md has the profile). Replaying a captured graph launches the whole forward
and backward pass at once.

How: the first ``WARMUP_STEPS`` steps run eagerly on a side stream (cuDNN picks its
kernels, the allocator grows, CPL layers size their power-iteration vectors,
torch.compile compiles). The next step's forward and backward pass is captured into a
graph with static input and output tensors; every step from then on copies its batch into
the static input, replays the graph, and runs the optimizer and the schedule eagerly.
The optimizer stays outside the graph because the learning rate changes every step and a
captured step would replay the first one forever; SGD is one fused kernel on CUDA anyway.

The numbers are those of eager steps: the same kernels run in the same order. Gradients
live in the graph's memory from the capture on, so they are overwritten by each replay and
never set to None.
"""

from __future__ import annotations

import torch
from torch import nn

from robustlab.errors import RobustlabError
from robustlab.train.step import TrainStep

WARMUP_STEPS = 3


class GraphCaptureError(RobustlabError, RuntimeError):
    """The training step could not be captured: something in it waits for the host."""


class GraphedTrainStep(TrainStep):
    """``TrainStep`` whose forward and backward pass is a CUDA graph after ``WARMUP_STEPS`` steps."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: torch.optim.lr_scheduler.LRScheduler,
        autocast: torch.dtype | None = None,
        grad_clip: float | None = None,
    ):
        super().__init__(model, loss_fn, optimizer, schedule, autocast, grad_clip)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.eager_steps = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor, loss_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        if loss_weight != 1.0:
            raise ValueError("a graphed training step has no loss weight (it is for multi-process training only)")
        if self.eager_steps < WARMUP_STEPS:
            self.eager_steps += 1
            return self._on_side_stream(x, y)
        if self.graph is None:
            self._capture(x, y)
        else:
            self.static_x.copy_(x)
            self.static_y.copy_(y)
        assert self.graph is not None  # _capture made it
        self.graph.replay()
        self.clip_gradients()
        self.optimizer.step()
        self.schedule.step()
        return self.static_loss.clone(), self.static_logits.clone()

    def _on_side_stream(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """An eager step off the default stream, as CUDA graph capture wants its warm-up."""
        stream = torch.cuda.Stream(device=x.device)
        stream.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(stream):
            loss, logits = super().__call__(x, y)
        torch.cuda.current_stream(x.device).wait_stream(stream)
        return loss, logits

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.static_x, self.static_y = x.clone(), y.clone()
        self.optimizer.zero_grad(set_to_none=True)  # the captured backward allocates them in the graph's memory
        self.graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(self.graph):
                # autocast's weight cache would hand the graph casts made outside it
                self.static_loss, self.static_logits = self.forward_backward(
                    self.static_x, self.static_y, autocast_cache=False
                )
        except RuntimeError as error:
            raise GraphCaptureError(
                f"train.cuda_graph: the training step of {type(self.model).__name__} cannot be captured in a CUDA "
                f"graph ({str(error).splitlines()[0]}); some layer reads a value back to the host or synchronises "
                "during its forward or backward pass. Train it with train.cuda_graph=false"
            ) from error
