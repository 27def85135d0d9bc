"""Where and how the step runs: device, precision, threads, seeding.

Kept apart from the loop so the benchmark measures exactly what training uses.

Threads on a CPU: ``train_runtime.threads: null`` (the default) asks ``default_threads``, which
uses only the cores that are idle when training starts. A thread pool wider than the free cores
collapses rather than slows down: every parallel region waits for its thread that shares a core
with someone else's process (a sweep's second job, a queued ``dvc exp run``, a second user), and
the step ran at 8-14 images/s against ~99 alone on a 2-core host. ``benchmarks/train_step.py
--contention`` measures it.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from dataclasses import dataclass
from typing import ContextManager

import numpy as np
import torch

from t2i.device import pick_device


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    dtype: torch.dtype | None   # autocast dtype, None = fp32
    channels_last: bool

    def autocast(self) -> ContextManager[object]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def pick_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError("train.precision=fp16 needs CUDA; use bf16 or fp32 on CPU")
        return torch.float16
    # auto: bf16 on CUDA where the GPU supports it (no loss scaling needed, which the gradient
    # penalty would complicate), and on CPUs that compute it natively: ~1.6x over fp32 on an
    # AVX-512 CPU, but ~10x *slower* on an AVX2-only one, where oneDNN emulates it
    # (benchmarks/train_step.py: 9.7 vs 105 images/s on a 2-core AMD EPYC).
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else None


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions natively here (AVX-512 and up), not emulated."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN: ask the vector unit instead
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def cpu_cores() -> int:
    """Cores this process may run on (its affinity, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cpu_times() -> dict[int, tuple[int, int]] | None:
    """Per core: (idle jiffies, total jiffies) from /proc/stat; None where there is none."""
    try:
        lines = open("/proc/stat", encoding="ascii").read().splitlines()
    except OSError:
        return None
    out: dict[int, tuple[int, int]] = {}
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            values = [int(v) for v in fields[:8]]
            out[int(name[3:])] = (values[3] + values[4], sum(values))  # idle + iowait, all
    return out


def idle_cores(sample_s: float = 0.3) -> int | None:
    """How many of this process's cores were at least half idle over ``sample_s`` seconds."""
    before = _cpu_times()
    if before is None:
        return None
    time.sleep(sample_s)
    after = _cpu_times() or {}
    mine = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(before)
    idle = 0
    for core in mine:
        if core in before and core in after:
            d_idle, d_all = (a - b for a, b in zip(after[core], before[core]))
            idle += d_all > 0 and d_idle / d_all >= 0.5
    return idle


def default_threads() -> int:
    """Torch CPU threads when ``train_runtime.threads`` is null: the cores idle right now, at
    least one. With one of two cores busy this is 1 thread, which keeps its core; 2 threads
    would stall on the busy one (see the module docstring)."""
    idle = idle_cores()
    return max(1, min(cpu_cores(), cpu_cores() if idle is None else idle))


def setup_runtime(device: str, precision: str, channels_last: bool, threads: int | None, local_rank: int = 0,
                  key: str = "train_runtime.device") -> Runtime:
    """``key``: the params key that named ``device``, for the error when CUDA is missing."""
    dev = pick_device(device, local_rank, key=key)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cudnn.benchmark = True
    if dev.type == "cpu" or threads:
        torch.set_num_threads(threads or default_threads())
    # Denormal floats in small conv nets make a CPU training step up to 8x slower.
    torch.set_flush_denormal(True)
    return Runtime(device=dev, dtype=pick_dtype(precision, dev), channels_last=channels_last)


def seed_everything(seed: int) -> None:
    """Global seeds for weight init; per-step randomness uses `step_generator` instead."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """A CPU generator seeded from (seed, rank, step): the noise of step k is a pure function of
    k, so resuming from a checkpoint needs no saved RNG state and reproduces the run exactly,
    on every rank of a distributed run too."""
    return torch.Generator().manual_seed((seed * 1_000_003 + rank) * 10_000_019 + step)
