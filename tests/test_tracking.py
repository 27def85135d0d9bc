"""t2i.tracking against a real SQLite store and a real `mlflow server` that dies mid-run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image

from t2i import tracking, tracking_export

Z_DIM, TEXT_DIM, RES = 4, 6, 8


class TinyGenerator(torch.nn.Module):
    """Same call signature as the real generator: (z, text) -> (B, 3, R, R) in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(Z_DIM + TEXT_DIM, 3 * RES * RES)

    def forward(self, z: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(torch.cat([z, text], dim=1))).view(-1, 3, RES, RES)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def sqlite_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)  # the default artifact root ./mlruns lands in tmp_path
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def test_tracking_uri_default_is_absolute_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve().as_posix()}/mlflow.db"


def test_flatten_params() -> None:
    assert tracking.flatten_params({"train": {"lr": 0.1, "att": [8, 16]}, "x": 1}) == {
        "train.lr": 0.1,
        "train.att": [8, 16],
        "x": 1,
    }


def test_default_tags_read_dvc_and_prefect_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVC_EXP_NAME", "brave-exp")
    monkeypatch.setenv(tracking.PREFECT_FLOW_RUN_ENV, "flow-123")
    tags = tracking.default_tags()
    assert tags["dvc.exp_name"] == "brave-exp"
    assert tags["prefect.flow_run_id"] == "flow-123"
    assert tags["host"]


def test_run_round_trip_sqlite(sqlite_store: str) -> None:
    from mlflow import MlflowClient

    run = tracking.start_run("t2i-test", "tiny", {"train": {"steps": 3, "lr_g": 2e-4}}, {"who": "test"})
    for step in range(3):
        run.log_metrics({"loss_d": 1.0 / (step + 1), "loss_g": float(step)}, step=step)
    run.log_image(Image.new("RGB", (8, 8), (255, 0, 0)), key="samples", step=0)
    run.log_image(Image.new("RGB", (8, 8), (0, 255, 0)), key="samples", step=2)
    torch.manual_seed(0)
    gen = TinyGenerator()
    run.log_generator(gen, z_dim=Z_DIM, text_dim=TEXT_DIM)
    run.end()

    # The evaluate stage reopens the training run from its JSON and logs into it.
    again = tracking.resume_run(run.to_json())
    again.log_metrics({"eval.accuracy": 0.5})
    again.end()

    client = MlflowClient(sqlite_store)
    data = client.get_run(run.run_id)
    assert data.info.status == "FINISHED"
    assert data.data.params["train.steps"] == "3"
    assert data.data.tags["who"] == "test" and "host" in data.data.tags
    assert [m.step for m in client.get_metric_history(run.run_id, "loss_g")] == [0, 1, 2]
    assert data.data.metrics["eval.accuracy"] == 0.5
    images = [f.path for f in client.list_artifacts(run.run_id, "images")]
    assert sum("samples" in p and p.endswith(".png") for p in images) == 2, images

    loaded = tracking_export.load_logged_generator(f"runs:/{run.run_id}/generator")
    z, text = torch.randn(3, Z_DIM), torch.randn(3, TEXT_DIM)  # batch 3 != example batch 2
    with torch.no_grad():
        assert torch.allclose(loaded(z, text), gen(z, text), atol=1e-6)


def test_unreachable_server_raises_naming_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    started = time.monotonic()
    with pytest.raises(tracking.TrackingError, match=uri.replace(".", r"\.")):
        tracking.start_run("t2i-test", None, {}, {})
    # MLflow's default retries back off for minutes; ours give up at once. The margin is wide
    # because CI machines are loaded: this tells seconds from minutes, it is not a benchmark.
    assert time.monotonic() - started < 60


@pytest.fixture()
def mlflow_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination", str(tmp_path / "artifacts"),
    ]
    # Own process group: killing it takes the uvicorn worker down too.
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("mlflow server did not start")
                time.sleep(0.3)
        yield uri, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_server_gone_mid_run_warns_once_and_continues(
    mlflow_server: tuple[str, subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    uri, proc = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run = tracking.start_run("t2i-test", "server", {"a": 1}, {})
    run.log_metrics({"loss": 1.0}, step=0)
    run.log_image(Image.new("RGB", (4, 4)), key="samples", step=0)
    assert run.flush(30)
    assert [m.step for m in MlflowClient(uri).get_metric_history(run.run_id, "loss")] == [0]
    monkeypatch.setenv(tracking.FLUSH_ENV, "2")  # end() waits this long for the queued calls

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    started = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(1, 50):  # a training loop keeps calling
            run.log_metrics({"loss": 1.0 / step}, step=step)
            run.log_image(Image.new("RGB", (4, 4)), key="samples", step=step)
        run.set_tags({"done": "yes"})
        run.end()
    elapsed = time.monotonic() - started
    ours = [w for w in caught if issubclass(w.category, tracking.TrackingWarning)]
    assert len(ours) == 1, [str(w.message) for w in ours]
    assert uri in str(ours[0].message)
    assert elapsed < 60, elapsed  # 49 steps of minutes-long retries would take far longer
