"""The whole serving story on a real tiny pipeline: `dvc repro` trains, evaluates and registers
the generator with the `champion` alias; `mlflow models serve` answers captions from
``models:/t2i-generator@champion``; `t2i serve` serves the page from the same URI, with the judge
the evaluation logged to that run.
"""

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
from PIL import Image
from pipeline_repo import make_project, project_env, run

from t2i.champion import ALIAS, DECISION_TAG, METRIC_TAG, MODEL_NAME, VALUE_TAG, headline_metric
from t2i.eval.classifier import JUDGE_WEIGHTS
from t2i.nesting import flatten

pytestmark = pytest.mark.slow
CAPTION = "a red flower with a yellow stem"
CHAMPION = f"models:/{MODEL_NAME}@{ALIAS}"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_project(tmp_path_factory.mktemp("serve-e2e"))
    run(["dvc", "repro"], root)
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, body: dict | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Server:
    """A server process in its own group, stopped (with its children) on exit."""

    def __init__(self, cmd: list[str], ready: str, cwd: Path, env: dict[str, str], timeout: float = 90) -> None:
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{cmd[2:5]} exited: {self.proc.stdout.read().decode(errors='replace')[-3000:]}")  # type: ignore[union-attr]
            try:
                urllib.request.urlopen(ready, timeout=2)
                return
            except OSError:
                time.sleep(0.5)
        self.__exit__()
        raise AssertionError(f"{cmd[2:5]} not answering {ready} after {timeout} s")

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_: object) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(timeout=30)


def _env(project: Path) -> dict[str, str]:
    repo = str(Path(__file__).resolve().parents[1])
    return {**project_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}", "T2I_DEVICE": "cpu",
            "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}


def test_repro_registers_a_champion_with_its_judge(project: Path) -> None:
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    version = client.get_model_version_by_alias(MODEL_NAME, ALIAS)
    # A judge this briefly trained is void (test/attr_all null), so r_precision is the headline.
    metrics = {k: v for k, v in flatten(json.loads((project / "eval" / "metrics.json").read_text()), "/").items()
               if v is not None}
    assert (version.tags[METRIC_TAG], float(version.tags[VALUE_TAG])) == headline_metric(metrics)
    assert version.tags[DECISION_TAG] == "no champion yet"
    run_id = json.loads((project / "models" / "mlflow_run.json").read_text(encoding="utf-8"))["run_id"]
    assert version.run_id == run_id
    logged = {f.path for f in client.list_artifacts(run_id, "eval/judge")}
    assert logged == {"eval/judge/classifier.json", f"eval/judge/{JUDGE_WEIGHTS}"}
    assert (project / "eval" / "judge" / JUDGE_WEIGHTS).is_file()
    report = (project / "eval" / "report.html").read_text(encoding="utf-8")
    assert report.count('<svg class="chart"') == 2  # attribute accuracy and the training losses


def test_mlflow_models_serve_answers_from_the_champion(project: Path) -> None:
    port = _free_port()
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", CHAMPION, "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port)]
    with Server(cmd, f"http://127.0.0.1:{port}/ping", project, _env(project)):
        status, body = _request(f"http://127.0.0.1:{port}/invocations", {"inputs": [CAPTION], "params": {"n": 2}})
        assert status == 200, body[-2000:]
        pngs = json.loads(body)["predictions"]
        images = [np.asarray(Image.open(io.BytesIO(base64.b64decode(p)))) for p in pngs]
        assert len(images) == 2 and images[0].shape == (32, 32, 3) and not np.array_equal(*images)


def test_t2i_serve_serves_the_champion_with_the_runs_judge(project: Path, tmp_path: Path) -> None:
    port = _free_port()
    cmd = [sys.executable, "-m", "t2i.cli", "serve", "--model", CHAMPION, "--port", str(port), "--device", "cpu"]
    url = f"http://127.0.0.1:{port}"
    # Started outside the project: the judge can only come from the champion's run.
    with Server(cmd, f"{url}/info", tmp_path, _env(project)):
        info = json.loads(_request(f"{url}/info")[1])
        assert info["source"] == CHAMPION and info["judge"] is True and info["resolution"] == 32
        status, body = _request(f"{url}/generate", {"caption": CAPTION, "n": 2, "seed": 1})
        assert status == 200, body[-2000:]
        images = json.loads(body)["images"]
        assert len(images) == 2 and images[0]["judge"]["stated"] == {"petal_color": "red", "stem_color": "yellow"}
        assert b'id="caption"' in _request(f"{url}/")[1]
        status, body = _request(f"{url}/generate", {"caption": " "})
        assert status == 422 and b"caption is empty" in body
