"""The train stage against a real MLflow SQLite store: params, losses by step, sample grids by
step, the final generator loadable with mlflow.pytorch.load_model, the run id in models/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_train_fixtures import make_dataset, save_small_matcher

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_stage_logs_run_and_loadable_generator(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    save_small_matcher(tmp_path)  # the default train.matcher_weight=1 reads data/matcher
    train = dict(steps=6, batch_size=8, checkpoint_every=3, sample_every=3, log_every=2,
                 model=dict(z_dim=8, g_width=32, d_width=16))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": train, "train_runtime": {"threads": 1}}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": uri}
    out = subprocess.run([sys.executable, "-m", "stages.train"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads((tmp_path / "models" / "mlflow_run.json").read_text())
    config = json.loads((tmp_path / "models" / "config.json").read_text())
    assert config["step"] == 6 and config["model"]["z_dim"] == 8 and config["encoder"]["dim"] == 32

    import mlflow
    import torch

    client = mlflow.MlflowClient(uri)
    run = client.get_run(info["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.steps"] == "6"
    assert [m.step for m in client.get_metric_history(info["run_id"], "batch/loss_d")] == [2, 4, 6]
    images = [a.path for a in client.list_artifacts(info["run_id"], "images")]
    assert images, "no sample grid logged"
    mlflow.set_tracking_uri(uri)
    g = mlflow.pytorch.load_model(f"runs:/{info['run_id']}/generator")
    assert g(torch.randn(3, 8), torch.randn(3, 32)).shape == (3, 3, 32, 32)
    # t2i's own loader: the same run's safetensors weights + config, equal to models/.
    from t2i.models import load_generator

    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        local, _ = load_generator(tmp_path / "models")
        for name in (f"runs:/{info['run_id']}", f"runs:/{info['run_id']}/generator"):
            logged, logged_config = load_generator(name)
            assert logged_config == config
            for (k, a), (_, b) in zip(local.state_dict().items(), logged.state_dict().items()):
                assert torch.equal(a, b), k
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI")
