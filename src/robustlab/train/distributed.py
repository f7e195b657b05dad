"""Data-parallel training with torch.distributed, started by torchrun.

``torchrun --nproc_per_node=K -m robustlab.cli train ...`` sets RANK, WORLD_SIZE and
LOCAL_RANK; ``setup`` reads them, joins the process group (NCCL on CUDA, Gloo on the CPU)
and picks one device per process. Every rank builds the same loader with the same seed,
so all ranks see the same global batch of ``train.batch_size`` images; each trains on its
contiguous shard (``shard``), and DDP averages the gradients. Each rank's loss is weighted
by its share of the batch, so the averaged gradient is that of the whole batch and the run
matches single-process training up to the order of floating-point reductions. Only rank 0
writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from robustlab.runtime import resolve_device

Picklable = TypeVar("Picklable")


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def setup(device_name: str = "auto") -> tuple[DistributedContext, torch.device]:
    """The process's rank and device; joins the process group when torchrun started us."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return DistributedContext(), resolve_device(device_name)
    context = DistributedContext(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=context.rank, world_size=context.world_size)
    return context, device


def teardown(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, context: DistributedContext, device: torch.device) -> nn.Module:
    """DDP around the model; BatchNorm becomes SyncBatchNorm on CUDA so statistics span the global batch."""
    if not context.enabled:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def shard(x: torch.Tensor, y: torch.Tensor, context: DistributedContext) -> tuple[torch.Tensor, torch.Tensor, float]:
    """This rank's contiguous part of a global batch, and the weight of its mean loss.

    With ``n_r`` of the ``n`` images on rank r, weighting its mean loss by ``n_r * K / n``
    makes DDP's average over K ranks equal to the mean over the whole batch.
    """
    if not context.enabled:
        return x, y, 1.0
    if len(x) < context.world_size:
        raise ValueError(
            f"a batch of {len(x)} images cannot be split over {context.world_size} processes; "
            "choose train.batch_size (and a training-set size) so that every batch has at least one image per process"
        )
    x_part = x.tensor_split(context.world_size)[context.rank]
    y_part = y.tensor_split(context.world_size)[context.rank]
    return x_part, y_part, len(x_part) * context.world_size / len(x)


def all_reduce(tensor: torch.Tensor, context: DistributedContext, op: str = "sum") -> torch.Tensor:
    """Sum (or max / min) a tensor over all ranks, in place; a no-op in a single process."""
    if context.enabled:
        dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op])
    return tensor


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()


def broadcast_object(value: Picklable, context: DistributedContext) -> Picklable:
    """Rank 0's value of a small picklable object (e.g. the run directory) on every rank."""
    if not context.enabled:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
