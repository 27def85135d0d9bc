"""The real train stage killed with SIGKILL and rerun, logging to a real MLflow SQLite store:
the dead run is marked KILLED when the stage starts again, the rerun continues the same MLflow
run, and no step is logged twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from t2i.train.checkpoint import FILE
from test_train_fixtures import make_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_killed_stage_is_marked_and_resumed_without_duplicate_steps(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    make_dataset(tmp_path)
    train = dict(steps=100_000, batch_size=8, checkpoint_every=4, sample_every=1000, log_every=1, precision="fp32",
                 model=dict(z_dim=8, g_width=32, d_width=16, attention=[8], caption_code=False), loss=dict(matcher_weight=0.0))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": train, "train_runtime": {"threads": 1}}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = MlflowClient(uri)
    deadline, run_id = time.monotonic() + 240, None
    # Kill after the second checkpoint, once steps past it are logged: those are redone on resume.
    while run_id is None:
        assert time.monotonic() < deadline, "no checkpoint with logged steps after it"
        assert proc.poll() is None, "the stage ended early"
        time.sleep(0.2)
        exp = client.get_experiment_by_name("t2i") if (tmp_path / "mlflow.db").exists() else None
        runs = client.search_runs([exp.experiment_id]) if exp else []
        if runs and (tmp_path / "checkpoints" / FILE).exists():
            steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "batch/loss_d")]
            if steps and max(steps) >= 10 and max(steps) % 4 != 0:
                run_id = runs[0].info.run_id
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    logged_before = max(m.step for m in client.get_metric_history(run_id, "batch/loss_d"))
    assert client.get_run(run_id).info.status == "RUNNING"

    # The same params (a checkpoint is resumed only by the run that wrote it); stopped by SIGTERM
    # once it has logged past the killed run's last step.
    second = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while True:
            assert time.monotonic() < deadline + 240 and second.poll() is None, "the rerun ended early"
            time.sleep(0.2)
            steps = [m.step for m in client.get_metric_history(run_id, "batch/loss_d")]
            if max(steps) >= logged_before + 3:
                break
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=120)
    finally:
        second.kill()
    assert second.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert f"marked run {run_id}" in err and "KILLED" in err
    runs = client.search_runs([client.get_run(run_id).info.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]  # continued, not a second run
    run = client.get_run(run_id)
    assert "ended without closing the run" in run.data.tags["t2i.end_reason"]
    steps = [m.step for m in client.get_metric_history(run_id, "batch/loss_d")]
    assert len(steps) == len(set(steps)), "a step was logged twice"
    assert sorted(steps)[: logged_before + 3] == list(range(1, logged_before + 4))  # none missing
