"""What `train.precision` resolves to (autocast only where it is fast), and how many threads."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import torch

from t2i.train.runtime import (
    ThreadGovernor, cpu_cores, cpu_has_fast_bf16, default_threads, idle_cores, pick_dtype, setup_runtime,
)

CPU = torch.device("cpu")


def test_auto_on_cpu_is_bf16_only_where_onednn_runs_it_natively() -> None:
    # On an AVX2-only CPU oneDNN emulates bf16 and a training step is ~10x slower than fp32
    # (benchmarks/train_step.py), so auto must fall back to fp32 (None = no autocast) there.
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert cpu_has_fast_bf16() == native
    assert pick_dtype("auto", CPU) == (torch.bfloat16 if native else None)


def test_explicit_precisions_are_honoured() -> None:
    assert pick_dtype("fp32", CPU) is None
    assert pick_dtype("bf16", CPU) == torch.bfloat16  # asked for: given, even where it is slow
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        pick_dtype("fp16", CPU)


@pytest.fixture
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_default_threads_leave_out_busy_cores(restore_threads: None) -> None:
    # A thread on a core another process holds stalls every parallel region: the train step fell
    # to 8-14 images/s from ~99 (benchmarks/train_step.py --contention). The default takes only
    # the idle cores.
    cores = cpu_cores()
    if cores < 2:
        pytest.skip("one core: nothing to leave out")
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores - 1)]
    try:
        time.sleep(1.0)
        assert (idle_cores() or 0) <= 1
        assert 1 <= default_threads() <= cores - 1
        setup_runtime("cpu", "fp32", False, None)  # train_runtime.threads: null
        assert torch.get_num_threads() <= cores - 1
    finally:
        for p in busy:
            p.kill()
            p.wait()


def test_governor_shrinks_the_pool_when_a_neighbour_starts_mid_run(restore_threads: None) -> None:
    cores = cpu_cores()
    if cores < 2:
        pytest.skip("one core: nothing to leave out")
    torch.set_num_threads(cores)  # started on a quiet machine
    governor = ThreadGovernor(every_s=0.5)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores - 1)]
    try:
        x = torch.randn(256, 256)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # this process works too: its own time is not "others"
            x = torch.tanh(x @ x.T / 256)
        governor.check()
        assert torch.get_num_threads() <= cores - 1
    finally:
        for p in busy:
            p.kill()
            p.wait()


def test_torchrun_processes_share_the_free_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cpu_cores() + 1))  # more processes than cores
    assert default_threads() == 1


def test_explicit_threads_are_obeyed(restore_threads: None) -> None:
    setup_runtime("cpu", "fp32", False, 2)
    assert torch.get_num_threads() == 2


def test_the_loop_regoverns_threads_only_when_it_chose_them(tmp_path, restore_threads: None) -> None:  # type: ignore[no-untyped-def]
    from t2i.config import TrainRuntimeParams
    from t2i.train import load_train_data
    from t2i.train.distributed import DistContext
    from t2i.train.loop import _start
    from test_train_fixtures import make_dataset, outputs_in, small_params

    data = load_train_data(*make_dataset(tmp_path))
    chosen = _start(small_params(), data, outputs_in(tmp_path / "a"), DistContext(), TrainRuntimeParams(device="cpu"), None)
    fixed = _start(small_params(), data, outputs_in(tmp_path / "b"), DistContext(), TrainRuntimeParams(device="cpu", threads=1), None)
    assert isinstance(chosen.governor, ThreadGovernor)
    assert fixed.governor is None and torch.get_num_threads() == 1
