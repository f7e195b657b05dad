"""What training a config's model costs: parameters, seconds per step and peak memory.

A few real training steps (the model, loss, optimizer and schedule the training loop would
build, on a batch of training images) on the config's device, after warm-up steps that pay
for one-time work (library initialisation, the optimizer's state). The layer comparison
reports these numbers and turns a wall-clock budget into epochs with them, as "1-Lipschitz
layers compared" did (it measured each method's time per epoch, then trained for budget /
time).

Peak memory is the training state at its largest during the timed steps: weights, optimizer
state, gradients, activations and normalisers. On CUDA the allocator's peak
(``max_memory_allocated``); on the CPU (Linux) the bytes of the weights and optimizer state
plus how far the resident set rose above its level before the steps (its high-water mark
VmHWM, reset through /proc/self/clear_refs); elsewhere None.
"""

from __future__ import annotations

import ctypes
import gc
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from robustlab.config import ExperimentConfig
from robustlab.data.splits import PreparedData
from robustlab.runs.checkpoint import build_model
from robustlab.runtime import resolve_device
from robustlab.train.losses import build_loss
from robustlab.train.optim import build_optimizer, build_schedule
from robustlab.train.step import TrainStep

PROC_STATUS = Path("/proc/self/status")


@dataclass
class TrainingCost:
    parameters: int
    seconds_per_step: float  # median over the timed steps
    steps_per_epoch: int
    peak_memory_mb: float | None
    device: str

    @property
    def seconds_per_epoch(self) -> float:
        return self.seconds_per_step * self.steps_per_epoch

    def to_dict(self) -> dict:
        return {**asdict(self), "seconds_per_epoch": self.seconds_per_epoch}


def measure_training_cost(
    config: ExperimentConfig, data: PreparedData, steps: int = 10, warmup: int = 2
) -> TrainingCost:
    """``warmup`` untimed, then ``steps`` timed training steps of ``config``'s model on ``data``;
    the median step time (one slow step, e.g. another process taking the core, moves it little)."""
    device = resolve_device(config.train.device)
    x, y = _first_batch(data, config.train.batch_size, device)
    model = build_model(config, data).to(device)
    optimizer = build_optimizer(model.parameters(), config.optim)
    schedule = build_schedule(optimizer, config.optim, warmup + steps)
    autocast = torch.bfloat16 if config.train.precision == "bfloat16" else None
    step = TrainStep(model, build_loss(config.loss), optimizer, schedule, autocast)
    model.train()
    for _ in range(warmup):
        step(x, y)
    times = []
    with _PeakMemory(device, _state_bytes(model, optimizer)) as memory:
        for _ in range(steps):
            _synchronize(device)
            start = time.perf_counter()
            step(x, y)
            _synchronize(device)
            times.append(time.perf_counter() - start)
    return TrainingCost(
        parameters=sum(p.numel() for p in model.parameters()),
        seconds_per_step=statistics.median(times),
        steps_per_epoch=math.ceil(len(data.y_train) / config.train.batch_size),
        peak_memory_mb=memory.peak_mb,
        device=str(device),
    )


def _state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the weights, buffers and optimizer state, which live through every step."""
    tensors = [*model.parameters(), *model.buffers()]
    tensors += [value for state in optimizer.state.values() for value in state.values() if torch.is_tensor(value)]
    return sum(t.numel() * t.element_size() for t in tensors)


def _first_batch(data: PreparedData, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    index = torch.arange(batch_size) % len(data.y_train)  # repeats a training set smaller than a batch
    images = torch.as_tensor(data.x_train[index.numpy()]).permute(0, 3, 1, 2)
    images = images.float().div(255) if images.dtype == torch.uint8 else images.float()
    return images.to(device), torch.as_tensor(data.y_train[index.numpy()]).to(device)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _PeakMemory:
    """Peak training memory in MB over the block (see the module docstring), or None."""

    def __init__(self, device: torch.device, state_bytes: int):
        self.device, self.state_bytes = device, state_bytes
        self.base: int | None = None
        self.peak_mb: float | None = None

    def __enter__(self) -> _PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.device.type == "cpu":
            self.base = _reset_resident_peak()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self.device.type == "cpu" and self.base is not None:
            peak = _status_kb("VmHWM")
            if peak is not None:
                self.peak_mb = (self.state_bytes + (peak - self.base) * 2**10) / 2**20


def _reset_resident_peak() -> int | None:
    """Returns memory to the system, resets the high-water mark to the current resident set
    and returns that (kB), or None when the system offers neither (not Linux)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap pages would hide new allocations
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        return None
    return _status_kb("VmRSS")


def _status_kb(key: str) -> int | None:
    try:
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None
