"""One training step: forward (under bf16 autocast when asked), loss, backward, optimizer, schedule.

The same step runs on the CPU, on one GPU and under DDP; ``robustlab.train.cuda_graph``
replays its forward and backward pass from a captured CUDA graph.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# /proc/cpuinfo flags of native bfloat16 arithmetic: x86 (AVX-512 BF16, AMX) and Arm (FEAT_BF16)
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
CPUINFO = Path("/proc/cpuinfo")


def cpu_bf16_flags(cpuinfo: str | Path | None = None) -> set[str]:
    """The bfloat16 flags the CPU reports (empty where it has none, or no /proc/cpuinfo).

    Without them, oneDNN emulates bfloat16 through float32 conversions: autocast then only
    adds work (see docs/performance.md).
    """
    try:
        text = Path(cpuinfo or CPUINFO).read_text()
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags |= CPU_BF16_FLAGS.intersection(value.split())
    return flags


class TrainStep:
    """One optimizer step on a batch: forward (under bf16 autocast when asked), loss, backward,
    optimizer and schedule. Returns the (unweighted) loss and the logits, detached, on the device.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: torch.optim.lr_scheduler.LRScheduler,
        autocast: torch.dtype | None = None,
        grad_clip: float | None = None,
    ):
        self.model, self.loss_fn, self.optimizer, self.schedule = model, loss_fn, optimizer, schedule
        self.autocast, self.grad_clip = autocast, grad_clip

    def forward_backward(
        self, x: torch.Tensor, y: torch.Tensor, loss_weight: float = 1.0, autocast_cache: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(
            x.device.type,
            dtype=self.autocast or torch.bfloat16,
            enabled=self.autocast is not None,
            cache_enabled=autocast_cache,
        ):
            logits = self.model(x)
        loss = self.loss_fn(logits.float(), y)
        (loss * loss_weight).backward()
        return loss.detach(), logits.detach().float()

    def __call__(self, x: torch.Tensor, y: torch.Tensor, loss_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        loss, logits = self.forward_backward(x, y, loss_weight)
        self.clip_gradients()
        self.optimizer.step()
        self.schedule.step()
        return loss, logits

    def clip_gradients(self) -> None:
        """Scales the gradients down to global L2 norm ``grad_clip``, if set (no host sync)."""
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip, foreach=True)
