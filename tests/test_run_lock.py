"""One training run per output directory, with two real processes: the second is refused at once
naming the first; a lock left by a killed process is taken over, not obeyed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from t2i.run_lock import RunLockedError, run_lock

REPO = Path(__file__).resolve().parents[1]
HOLD = """
import sys, time
from t2i.run_lock import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def _holder(lock: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_second_run_is_refused_at_once_naming_the_first(tmp_path: Path) -> None:
    lock = tmp_path / ".train.lock"
    first = _holder(lock)
    try:
        started = time.monotonic()
        with pytest.raises(RunLockedError) as info:
            with run_lock(lock):
                pass
        assert time.monotonic() - started < 1.0  # refused, not queued
        assert f"pid {first.pid}" in str(info.value) and "started" in str(info.value)
        assert str(lock) in str(info.value)
    finally:
        first.kill()
        first.wait()


def test_lock_of_a_killed_run_is_taken_over(tmp_path: Path) -> None:
    lock = tmp_path / ".train.lock"
    first = _holder(lock)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert json.loads(lock.read_text())["pid"] == first.pid  # the dead run's description is still there
    said: list[str] = []
    with run_lock(lock, say=said.append) as me:
        assert me["pid"] == os.getpid()
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert len(said) == 1 and f"pid {first.pid}" in said[0] and "no longer running" in said[0]
    # A cleanly released lock is taken again without a takeover message.
    with run_lock(lock, say=said.append):
        pass
    assert len(said) == 1


def test_lock_is_released_when_the_block_raises(tmp_path: Path) -> None:
    lock = tmp_path / ".train.lock"
    with pytest.raises(ValueError):
        with run_lock(lock):
            raise ValueError("boom")
    probe = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(120)", "pass"), str(lock)],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert probe.returncode == 0 and "locked" in probe.stdout, probe.stderr


@pytest.mark.skipif("run_lock" not in (REPO / "stages" / "train.py").read_text(),
                    reason="stages/train.py does not take the run lock yet (see docs/reliability.md, fault 5)")
def test_second_train_stage_is_refused_naming_the_first(tmp_path: Path) -> None:
    import yaml

    from test_train_fixtures import make_dataset

    make_dataset(tmp_path)
    train = dict(steps=100_000, batch_size=8, checkpoint_every=4, sample_every=1000, log_every=1, precision="fp32",
                 model=dict(z_dim=8, g_width=32, d_width=16, attention=[8], caption_code=False), loss=dict(matcher_weight=0.0))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": train, "train_runtime": {"threads": 1}}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "stages.train", "--no-tracking"]
    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "checkpoints").exists():  # the first run holds the lock by now
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.2)
        second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 3, second.stderr
        assert f"pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
        assert first.poll() is None  # the first run goes on
    finally:
        first.kill()
        first.wait()
