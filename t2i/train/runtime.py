"""Where and how the step runs: device, precision, threads, seeding.

Kept apart from the loop so the benchmark measures exactly what training uses.

Threads on a CPU: ``train_runtime.threads: null`` (the default) asks ``default_threads``, which
uses only the cores other processes leave free when training starts (``ThreadGovernor``
re-decides between steps, for the loop). A thread pool wider than the free cores
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


def _busy_jiffies() -> int | None:
    """Busy time (all but idle and iowait) of this process's cores, in jiffies, from /proc/stat;
    None where there is none."""
    try:
        lines = open("/proc/stat", encoding="ascii").read().splitlines()
    except OSError:
        return None
    mine = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    busy = 0
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and (mine is None or int(name[3:]) in mine):
            values = [int(v) for v in fields[:8]]
            busy += sum(values) - values[3] - values[4]
    return busy


class CoreMeter:
    """How many cores other processes keep busy, between two readings: the cores' busy time less
    this process's own CPU time (so a run measures its neighbours, not itself)."""

    def __init__(self) -> None:
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._last = self._read()

    def _read(self) -> tuple[float, float, float] | None:
        busy = _busy_jiffies()
        if busy is None:
            return None
        own = os.times()
        return time.monotonic(), busy / self._tick, own.user + own.system

    def others(self) -> float | None:
        """Cores' worth of other processes' work since the last call (None: cannot tell)."""
        now, before = self._read(), self._last
        self._last = now
        if now is None or before is None or now[0] - before[0] < 0.05:
            return None
        return max(0.0, (now[1] - before[1]) - (now[2] - before[2])) / (now[0] - before[0])

    def free_cores(self) -> int | None:
        """Cores left over by other processes since the last reading, at least 1."""
        others = self.others()
        return None if others is None else max(1, min(cpu_cores(), int(cpu_cores() - others + 0.3)))


def idle_cores(sample_s: float = 0.3) -> int | None:
    """Cores other processes left free over the next ``sample_s`` seconds (at least 1)."""
    meter = CoreMeter()
    time.sleep(sample_s)
    return meter.free_cores()


def default_threads() -> int:
    """Torch CPU threads when ``train_runtime.threads`` is null: the cores other processes leave
    free right now. With one of two cores busy this is 1 thread, which keeps its core; 2 threads
    would stall on the busy one (see the module docstring)."""
    # torchrun starts LOCAL_WORLD_SIZE such processes at once: each takes its share.
    per_host = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, (idle_cores() or cpu_cores()) // per_host)


class ThreadGovernor:
    """Re-decides the thread count between steps, for a neighbour that starts (or ends) after
    training started. ``check()`` is cheap; every ``every_s`` seconds it compares the cores'
    busy time with this process's own and resizes the pool when the free cores changed. Used
    only when ``train_runtime.threads`` is null on a CPU."""

    def __init__(self, every_s: float = 20.0) -> None:
        self.every_s = every_s
        self._meter = CoreMeter()
        self._next = time.monotonic() + every_s

    def check(self) -> int | None:
        """The new thread count when it changed, else None."""
        if time.monotonic() < self._next:
            return None
        self._next = time.monotonic() + self.every_s
        free = self._meter.free_cores()
        if free is None or free == torch.get_num_threads():
            return None
        torch.set_num_threads(free)
        return free


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
