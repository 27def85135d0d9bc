"""The generator as an MLflow pyfunc model, the champion alias, and `mlflow models serve`
answering captions: a real SQLite store, a real scoring-server process on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from PIL import Image

from t2i import champion, mlflow_model
from t2i.models import GANConfig, Generator, save_generator
from t2i.pipeline import GenerationPipeline

CAPTION = "a red flower with a yellow stem"


def save_tiny(directory: Path) -> Path:
    torch.manual_seed(0)
    config = GANConfig(resolution=32, text_dim=512, z_dim=8, g_width=32, attention=())
    encoder = {"name": "use", "dim": 512, "version": None, "handle": None}
    save_generator(directory, Generator(config), {"model": config.to_dict(), "encoder": encoder, "step": 0})
    (directory / "samples.png").write_bytes(b"not part of the model")
    return directory


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A SQLite store with one run holding the pyfunc model (logged once: ~5 s)."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    exp_id = mlflow.MlflowClient().create_experiment("t2i-test", artifact_location=(root / "artifacts").as_uri())
    exp = mlflow.set_experiment(experiment_id=exp_id)
    with mlflow.start_run() as run:
        pass
    models = save_tiny(root / "models")
    model_uri = mlflow_model.log_to_run(models, run.info.run_id, uri)
    return {"uri": uri, "run_id": run.info.run_id, "model_uri": model_uri, "models": str(models),
            "experiment_id": exp.experiment_id, "root": str(root)}


def _decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_pyfunc_draws_what_the_pipeline_draws(store: dict[str, str]) -> None:
    mlflow.set_tracking_uri(store["uri"])
    model = mlflow.pyfunc.load_model(store["model_uri"])
    sig = model.metadata.signature
    assert sig.inputs.input_types()[0].name == "string" and {p.name for p in sig.params.params} == {"n", "seed"}
    out = model.predict([CAPTION, "a blue flower"], params={"n": 2, "seed": 5})
    assert len(out) == 4
    want = GenerationPipeline.from_pretrained(store["models"], device="cpu").generate_array(
        [CAPTION, "a blue flower"], seed=5, n=2)
    assert np.array_equal(np.stack([_decode(s) for s in out]), want)
    files = {p.name for p in Path(mlflow.artifacts.download_artifacts(store["model_uri"])).rglob("*") if p.is_file()}
    assert {"config.json", "generator.safetensors", "input_example.json"} <= files
    assert "samples.png" not in files and not any(f.endswith(".pyc") for f in files)
    tags = mlflow.MlflowClient().get_run(store["run_id"]).data.tags
    assert tags[mlflow_model.PYFUNC_URI_TAG] == store["model_uri"]


def test_bad_input_is_an_invalid_parameter(store: dict[str, str]) -> None:
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(store["uri"])
    model = mlflow.pyfunc.load_model(store["model_uri"])
    with pytest.raises(MlflowException, match="caption is empty"):
        model.predict(["  "])
    with pytest.raises(MlflowException, match="between 1 and 64"):
        model.predict([CAPTION], params={"n": 65})


def test_champion_moves_only_on_a_better_headline(store: dict[str, str]) -> None:
    uri, name = store["uri"], "t2i-generator-champion-test"
    d1 = champion.register_and_promote(store["model_uri"], {"test/attr_all": 0.5, "r_precision": 0.9},
                                       name=name, tracking_uri=uri)
    assert d1.promoted and d1.metric == "test/attr_all" and d1.reason == "no champion yet"
    d2 = champion.register_and_promote(store["model_uri"], {"test/attr_all": 0.4}, name=name, tracking_uri=uri)
    assert not d2.promoted and d2.champion_version == d1.version and "<=" in d2.reason
    d3 = champion.register_and_promote(store["model_uri"], {"r_precision": 0.99}, name=name, tracking_uri=uri)
    assert not d3.promoted and "not comparable" in d3.reason
    d4 = champion.register_and_promote(store["model_uri"], {"eval/test/attr_all": 0.6}, name=name, tracking_uri=uri)
    assert d4.promoted and d4.champion_value == 0.5
    client = mlflow.MlflowClient(uri)
    current = client.get_model_version_by_alias(name, "champion")
    assert str(current.version) == d4.version
    assert current.tags[champion.VALUE_TAG] == "0.6"
    assert client.get_model_version(name, d2.version).tags[champion.DECISION_TAG].startswith("test/attr_all 0.4000")
    assert champion.headline_metric({"test/attr_all": float("nan"), "r_precision": 0.3}) == ("r_precision", 0.3)


def test_register_run_reads_the_run_tag(store: dict[str, str], tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"test": {"attr_all": 0.7}, "diversity": 0.1}), encoding="utf-8")
    env = {**os.environ, "MLFLOW_TRACKING_URI": store["uri"]}
    out = subprocess.run([sys.executable, "-m", "t2i.champion", store["run_id"], "--metrics", str(metrics)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    decision = json.loads(out.stdout)
    assert decision["model_name"] == champion.MODEL_NAME and decision["value"] == 0.7
    with mlflow.start_run(experiment_id=store["experiment_id"]) as bare:
        pass
    with pytest.raises(LookupError, match="t2i.pyfunc_uri"):
        champion.register_run(bare.info.run_id, {"test/attr_all": 1.0}, tracking_uri=store["uri"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow
def test_mlflow_models_serve_answers_captions(store: dict[str, str]) -> None:
    """`mlflow models serve -m models:/t2i-generator@champion --env-manager local` as a user runs it."""
    champion.register_and_promote(store["model_uri"], {"test/attr_all": 0.1}, force=True, tracking_uri=store["uri"])
    port = _free_port()
    bin_dir = str(Path(sys.executable).parent)  # the scoring server execs `uvicorn` from PATH
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "MLFLOW_TRACKING_URI": store["uri"], "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])),
           "MLFLOW_DISABLE_TELEMETRY": "true", "T2I_DEVICE": "cpu"}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{champion.MODEL_NAME}@champion",
           "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(cmd, env=env, cwd=store["root"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 50
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")[-3000:]  # type: ignore[union-attr]
            try:
                urllib.request.urlopen(f"{url}/ping", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        status, body = _post(f"{url}/invocations", {"inputs": [CAPTION]})
        assert status == 200, body
        assert len(body["predictions"]) == 1 and _decode(body["predictions"][0]).shape == (32, 32, 3)
        status, body = _post(f"{url}/invocations", {"inputs": [CAPTION, "a blue flower"], "params": {"n": 2}})
        assert status == 200 and len(body["predictions"]) == 4
        status, body = _post(f"{url}/invocations", {"inputs": [" "]})
        assert status == 400 and "caption is empty" in body["message"]
    finally:
        os.killpg(proc.pid, 15)  # the CLI execs uvicorn in a child: end the whole group it started
        proc.wait(timeout=30)
