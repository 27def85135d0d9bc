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
