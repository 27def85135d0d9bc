"""Prefect flows against a real DVC project of two toy stages (fast; the real stages: test_flows_e2e).

The toy `fit` stage goes through t2i.tracking like the real train stage, so the test sees the
Prefect flow-run id arrive on an MLflow run, and fails or gets SIGKILLed on demand.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from t2i import orchestration as orch

ROOT = Path(__file__).resolve().parents[1]

PARAMS = """# toy params (sections must be valid t2i sections: overrides are validated)
train:
  seed: 0   # 13 fails, 9 is SIGKILLed once
  steps: 3
"""
DVC_YAML = """stages:
  fit:
    cmd: python fit.py
    deps: [fit.py, data/prep.txt]
    params: [train]
    outs: [models]
    metrics: [eval/metrics.json: {cache: false}]
  prep:
    cmd: python -c "import pathlib; pathlib.Path('data').mkdir(exist_ok=True); pathlib.Path('data/prep.txt').write_text('x')"
    outs: [data/prep.txt]
"""
FIT = """import json, os, pathlib, signal, sys, yaml
from t2i import tracking
p = yaml.safe_load(open("params.yaml"))["train"]
print("fit: steps", p["steps"], flush=True)
if p["seed"] == 13:
    print("boom: seed 13 is unlucky", file=sys.stderr, flush=True); sys.exit(1)
if p["seed"] == 9 and not pathlib.Path("killed-once").exists():
    pathlib.Path("killed-once").write_text("1"); os.kill(os.getpid(), signal.SIGKILL)
run = tracking.start_run("t2i", None, {"train": p}, {})
run.log_metrics({"loss": 1.0 / p["steps"]}, step=p["steps"])
run.end()
pathlib.Path("models").mkdir(exist_ok=True); pathlib.Path("eval").mkdir(exist_ok=True)
json.dump(run.to_json(), open("models/mlflow_run.json", "w"))
json.dump({"score": p["steps"] * 0.1, "nested": {"acc": 0.5}}, open("eval/metrics.json", "w"))
"""


@pytest.fixture(scope="module")
def prefect_harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


@pytest.fixture()
def toy_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "toy"
    root.mkdir()
    for name, text in {"params.yaml": PARAMS, "dvc.yaml": DVC_YAML, "fit.py": FIT, ".gitignore": "/mlflow.db\n/mlruns/\nkilled-once\n"}.items():
        (root / name).write_text(text)
    _git(root, "init", "-q")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "empty")
    subprocess.run(orch.dvc("init", "-q"), cwd=root, check=True)
    _git(root, "add", "-A")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "toy")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "t")  # dvc exp run commits
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "t@t")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "t")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "t@t")
    return root


def _logs(flow_run_id: Any) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)  # logs are shipped in the background
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return "\n".join(log.message for log in logs)


def test_stage_order_follows_deps_not_file_order(toy_repo: Path) -> None:
    assert orch.stage_order(toy_repo) == ["prep", "fit"]
    assert orch.stage_order(ROOT) == ["check_params", "ingest", "embed", "matcher", "train", "evaluate"]


def test_apply_overrides_keeps_comments_and_validates(toy_repo: Path) -> None:
    params = toy_repo / "params.yaml"
    orch.apply_overrides(params, {"train.steps": "7", "train.model.attention": []})
    assert "# 13 fails" in params.read_text() and "steps: 7" in params.read_text()
    with pytest.raises(ValueError, match="train.stepz"):
        orch.apply_overrides(params, {"train.stepz": 1})


def test_pipeline_override_makes_experiment_and_tagged_mlflow_run(prefect_harness: None, toy_repo: Path) -> None:
    from mlflow import MlflowClient

    from flows.pipeline import pipeline

    state = pipeline(overrides={"train.steps": 5}, exp_name="toy-five", project_dir=str(toy_repo), return_state=True)
    assert state.is_completed(), state.message
    assert state.result() == {"score": 0.5, "nested.acc": 0.5}
    assert "toy-five" in orch.list_experiments(toy_repo)
    info = json.loads((toy_repo / "models" / "mlflow_run.json").read_text())
    tags = MlflowClient(info["tracking_uri"]).get_run(info["run_id"]).data.tags
    assert tags["prefect.flow_run_id"] == str(state.state_details.flow_run_id)
    assert tags["dvc.exp_name"] == "toy-five"
    logs = _logs(state.state_details.flow_run_id)
    assert "fit: steps 5" in logs  # stage output streamed into the run's logs

    again = pipeline(overrides={"train.steps": 6}, exp_name="toy-five", project_dir=str(toy_repo), return_state=True)
    assert again.is_failed() and "exists" in str(again.message)
    assert "steps: 5" in (toy_repo / "params.yaml").read_text()  # refused before touching params


def test_failing_stage_fails_flow_with_its_error(prefect_harness: None, toy_repo: Path) -> None:
    from flows.pipeline import pipeline

    state = pipeline(overrides={"train.seed": 13}, project_dir=str(toy_repo), return_state=True)
    assert state.is_failed()
    logs = _logs(state.state_details.flow_run_id)
    assert "boom: seed 13 is unlucky" in logs and "stage 'fit' failed" in logs


def test_killed_stage_is_retried_and_resumes(prefect_harness: None, toy_repo: Path) -> None:
    from flows.pipeline import pipeline

    state = pipeline(overrides={"train.seed": 9}, project_dir=str(toy_repo), return_state=True)
    assert state.is_completed(), state.message
    logs = _logs(state.state_details.flow_run_id)
    # DVC sees SIGKILL as -9 when the stage's shell execs the command, 137 (128+9) when it does not.
    assert re.search(r"exited with (-9|137)\b", logs), logs[-2000:]
    assert "Retry 1/1" in logs


def test_sweep_two_points_two_experiments(prefect_harness: None, toy_repo: Path) -> None:
    from mlflow import MlflowClient

    from flows.sweep import sweep

    result = sweep(grid={"train.steps": [2, 4]}, metric="score", prefix="toy", project_dir=str(toy_repo))
    assert {"toy-0", "toy-1"} <= set(orch.list_experiments(toy_repo))
    assert result["best"]["experiment"] == "toy-1"
    parent = result["mlflow_parent"]
    client = MlflowClient(parent["tracking_uri"])
    assert client.get_run(parent["run_id"]).data.metrics["best.score"] == pytest.approx(0.4)
    children = client.search_runs([parent["experiment_id"]], f"tags.mlflow.parentRunId = '{parent['run_id']}'")
    assert len(children) == 2
    assert "steps: 4" in (toy_repo / "params.yaml").read_text()  # best point applied



def test_sweep_rejects_an_unknown_metric_before_any_point_trains(prefect_harness: None, toy_repo: Path) -> None:
    from flows.sweep import sweep

    # Nothing evaluated yet: the first point's metrics are the check; the second point never trains.
    state = sweep(grid={"train.steps": [2, 4]}, metric="scor", prefix="typo", project_dir=str(toy_repo),
                  return_state=True)
    assert state.is_failed()
    assert "'scor'" in str(state.message) and "score" in str(state.message) and "nested.acc" in str(state.message)
    assert "typo-1" not in orch.list_experiments(toy_repo)
    assert "steps: 3" in (toy_repo / "params.yaml").read_text()  # baseline restored
    # Now eval/metrics.json exists: a wrong key fails before any point, a "/" key is accepted.
    before = set(orch.list_experiments(toy_repo))
    state = sweep(grid={"train.steps": [5]}, metric="swap", prefix="early", project_dir=str(toy_repo), return_state=True)
    assert state.is_failed() and "valid keys: nested.acc, score" in str(state.message)
    assert set(orch.list_experiments(toy_repo)) == before
    result = sweep(grid={"train.steps": [5]}, metric="nested/acc", prefix="slash", project_dir=str(toy_repo))
    assert result["best"]["nested.acc"] == 0.5


def test_sweep_command_rejects_an_unknown_metric_in_one_line(toy_repo: Path) -> None:
    import sys

    (toy_repo / "eval").mkdir()
    (toy_repo / "eval" / "metrics.json").write_text('{"test": {"swap": 0.5}}')
    proc = subprocess.run([sys.executable, str(ROOT / "flows" / "sweep.py"), "-G", "train.steps=[2]", "--metric", "swap"],
                          cwd=toy_repo, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("sweep: error: metric 'swap' is not one the evaluate stage writes "
                                   "(did you mean test.swap?); valid keys: test.swap")
    assert orch.list_experiments(toy_repo) == []


def test_check_metric_key_lists_valid_keys_and_suggests() -> None:
    keys = ["test.attr_all", "test.swap", "unseen.swap"]
    assert orch.check_metric_key("test/swap", keys) == "test.swap"
    with pytest.raises(ValueError, match=r"did you mean test.swap, unseen.swap\?.*valid keys: test.attr_all"):
        orch.check_metric_key("swap", keys)


def test_pipeline_ends_by_printing_the_mlflow_run_and_its_url(prefect_harness: None, toy_repo: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from flows.pipeline import pipeline

    assert pipeline(project_dir=str(toy_repo)) == {"score": pytest.approx(0.3), "nested.acc": 0.5}
    info = json.loads((toy_repo / "models" / "mlflow_run.json").read_text())
    out = capsys.readouterr().out
    last = next(ln for ln in reversed(out.splitlines()) if ln.startswith("MLflow run "))
    assert last.startswith(f"MLflow run {info['run_id']}: http://127.0.0.1:5000/#/experiments/{info['experiment_id']}/runs/{info['run_id']}")
    assert "mlflow ui --backend-store-uri sqlite:" in last  # a local store: say how to open it

# -- the real stages, in a throwaway copy of the project (tests/pipeline_repo.py) -----------------


@pytest.fixture(scope="module")
def real_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from pipeline_repo import make_project, project_env

    root = make_project(tmp_path_factory.mktemp("t2i-flow"))
    with pytest.MonkeyPatch.context() as mp:
        for key, value in project_env().items():
            mp.setenv(key, value)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        yield root


@pytest.mark.slow
def test_pipeline_real_stages_tiny_override(prefect_harness: None, real_project: Path) -> None:
    from mlflow import MlflowClient

    from flows.pipeline import pipeline
    from t2i.tracking_export import load_logged_generator

    state = pipeline(overrides={"train.steps": 3}, exp_name="flow-e2e", project_dir=str(real_project), return_state=True)
    assert state.is_completed(), state.message
    metrics = state.result()
    assert metrics, "eval/metrics.json gave no numbers"
    assert "flow-e2e" in orch.list_experiments(real_project)
    info = json.loads((real_project / "models" / "mlflow_run.json").read_text())
    run = MlflowClient(info["tracking_uri"]).get_run(info["run_id"])
    assert run.data.tags["prefect.flow_run_id"] == str(state.state_details.flow_run_id)
    assert run.data.tags["dvc.exp_name"] == "flow-e2e"
    assert load_logged_generator(f"runs:/{info['run_id']}/generator") is not None


@pytest.mark.slow
def test_sweep_real_stages_two_points(prefect_harness: None, real_project: Path) -> None:
    from flows.sweep import sweep

    metric = next(iter(orch.numeric_metrics(orch.read_json(real_project / "eval" / "metrics.json") or {"x": 0})))
    # lr_g, not steps: a steps change makes the train stage resume from its persisted checkpoint.
    result = sweep(grid={"train.optim.lr_g": [0.0002, 0.0001]}, metric=metric, prefix="e2e", project_dir=str(real_project))
    assert {"e2e-0", "e2e-1"} <= set(orch.list_experiments(real_project))
    assert all("failed" not in r for r in result["rows"]), result["rows"]
