"""torchrun support: `torchrun --nproc_per_node=N -m stages.train` trains with DDP.

A plain `python -m stages.train` is a world of one and never touches torch.distributed.
NCCL on GPU, gloo on CPU. Each rank draws its own shard of every epoch (`ShardedSampler`);
only rank 0 logs, samples, checkpoints and writes outs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistContext:
    """Join the process group torchrun described in the environment (RANK, WORLD_SIZE, ...)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistContext(rank=dist.get_rank(), local_rank=int(os.environ.get("LOCAL_RANK", "0")), world_size=world)


def device_type_hint(device: str) -> str:
    """Backend choice must come before the model exists: 'auto' means CUDA if visible."""
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def any_rank(flags: list[bool], ctx: DistContext, device: torch.device) -> list[bool]:
    """Each flag is true on every rank if it is true on one (a signal or a NaN seen by one rank
    stops all ranks together, so none is left waiting in a collective)."""
    if not ctx.enabled:
        return flags
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v > 0) for v in t.tolist()]


def sync_buffers(modules: list[nn.Module], ctx: DistContext) -> None:
    """Broadcast rank 0's buffers (BN running stats, spectral-norm vectors): DDP syncs them at
    each forward, but the last forward updates them locally after that sync."""
    if not ctx.enabled:
        return
    for m in modules:
        for b in m.buffers():
            dist.broadcast(b.data, src=0)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
