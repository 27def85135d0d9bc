"""The real stage in a subprocess: kill -9 after a checkpoint, rerun resumes; SIGTERM checkpoints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from t2i.train.checkpoint import load_checkpoint
from test_train_fixtures import make_dataset, save_small_matcher

REPO = Path(__file__).resolve().parents[1]


def _project(tmp: Path, steps: int) -> None:
    make_dataset(tmp)
    save_small_matcher(tmp)  # the default train.matcher_weight=1 reads data/matcher
    train = dict(steps=steps, batch_size=8, checkpoint_every=3, sample_every=1000, log_every=1, precision="fp32",
                 model=dict(z_dim=8, g_width=32, d_width=16, attention=[8]))
    (tmp / "params.yaml").write_text(yaml.safe_dump({"train": train, "train_runtime": {"threads": 1}}))


def _start(tmp: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "stages.train", "--no-tracking"], cwd=tmp, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_checkpoint(tmp: Path, proc: subprocess.Popen[str], timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ck = load_checkpoint(tmp / "checkpoints") if (tmp / "checkpoints" / "last.safetensors").exists() else None
        if ck is not None and ck.step >= 3:
            return ck.step
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def test_sigkill_then_rerun_resumes_from_last_checkpoint(tmp_path: Path) -> None:
    steps = 40  # `steps` is fingerprinted: the rerun keeps it, so the run must be short
    _project(tmp_path, steps=steps)
    proc = _start(tmp_path)
    _wait_for_checkpoint(tmp_path, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    ck = load_checkpoint(tmp_path / "checkpoints")
    assert ck is not None
    killed_at = ck.step
    assert killed_at < steps
    out = subprocess.run([sys.executable, "-m", "stages.train", "--no-tracking"], cwd=tmp_path, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"resuming from checkpoints at step {killed_at}" in out.stdout
    final = load_checkpoint(tmp_path / "checkpoints")
    assert final is not None and final.step == steps
    assert (tmp_path / "models" / "generator.safetensors").is_file()
    assert (tmp_path / "plots" / "train" / "losses.csv").read_text().count("\n") == steps + 1  # header + rows


def test_sigterm_writes_checkpoint_then_exits(tmp_path: Path) -> None:
    _project(tmp_path, steps=100_000)
    proc = _start(tmp_path)
    _wait_for_checkpoint(tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "stopped by SIGTERM at step" in out
    stopped_at = int(out.split("stopped by SIGTERM at step ")[1].split(";")[0])
    ck = load_checkpoint(tmp_path / "checkpoints")
    assert ck is not None and ck.step == stopped_at
