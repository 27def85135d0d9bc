"""Prefect flow: run the DVC pipeline, one task per stage, in dvc.yaml's order.

    python flows/pipeline.py                              # like `dvc repro`
    python flows/pipeline.py -S train.steps=200 -n short  # a DVC experiment, like `dvc exp run -S`

DVC decides what is up to date; this flow adds logs, retries, artifacts and links (t2i/orchestration.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python flows/pipeline.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import t2i  # noqa: F401  (telemetry defaults before prefect is imported)
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from t2i import orchestration as orch
from t2i import tracking


def _interrupted(task: Any, task_run: Any, state: Any) -> bool:
    # Retry only a stage killed from outside (it resumes); never a failure of its own (divergence).
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, orch.StageFailed) and exc.interrupted


@task(task_run_name="{stage}", retries=1, retry_delay_seconds=5, retry_condition_fn=_interrupted, cache_policy=NO_CACHE)
def run_stage(stage: str, root: str, exp_name: str | None, force: bool) -> None:
    logger = get_run_logger()
    env = tracking.stage_env(str(flow_run.id) if flow_run.id else None)
    if exp_name:
        env["DVC_EXP_NAME"] = exp_name  # what `dvc exp run` sets: the MLflow run gets tagged with it
    orch.repro_stage(stage, Path(root), env, logger.info, force=force)


@task(cache_policy=NO_CACHE)
def record_experiment(name: str, root: str) -> None:
    orch.record_experiment(name, Path(root), tracking.stage_env(None), get_run_logger().info)


@task(cache_policy=NO_CACHE)
def publish(root: str, exp_name: str | None) -> dict[str, float]:
    """Final metrics as a markdown artifact and a link to the MLflow run (the stage tagged it with our id)."""
    metrics = orch.numeric_metrics(orch.read_json(Path(root) / "eval" / "metrics.json") or {})
    rows = [{"metric": k, "value": v} for k, v in metrics.items()]
    title = f"DVC experiment `{exp_name}`" if exp_name else "workspace"
    create_markdown_artifact(markdown=f"### t2i metrics ({title})\n\n{orch.markdown_table(rows)}", key="t2i-metrics")
    info = orch.read_json(Path(root) / "models" / "mlflow_run.json")
    if info:
        link = orch.mlflow_ui_link(info)
        create_link_artifact(link=link, link_text=f"MLflow run {info['run_id']}", key="t2i-mlflow-run",
                             description=f"Store: {info.get('tracking_uri')} (local store: open with `mlflow ui`)")
    return metrics


@flow(name="t2i-pipeline")
def pipeline(overrides: dict[str, Any] | None = None, exp_name: str | None = None, force: bool = False,
             project_dir: str = ".") -> dict[str, float]:
    """Run ingest -> embed -> matcher -> train -> evaluate through DVC; overrides or a name make a DVC experiment."""
    root = str(Path(project_dir).resolve())
    if overrides:
        exp_name = exp_name or f"t2i-{flow_run.name}"
    if exp_name and exp_name in orch.list_experiments(Path(root)):  # fail now, not after training
        raise ValueError(f"DVC experiment {exp_name!r} exists: pick another name or `dvc exp remove {exp_name}`")
    if overrides:
        orch.apply_overrides(Path(root) / "params.yaml", overrides)  # a bad key fails here, before work
    for stage in orch.stage_order(Path(root)):  # sequential: one `dvc repro` at a time (DVC locks)
        run_stage(stage, root, exp_name, force)
    if exp_name:
        record_experiment(exp_name, root)
    metrics = publish(root, exp_name)
    if info := orch.read_json(Path(root) / "models" / "mlflow_run.json"):
        line = orch.mlflow_run_line(info)  # the last thing the flow says: which run, and its URL
        get_run_logger().info(line)
        print(line, flush=True)
    return metrics


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-S", "--set-param", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("-n", "--name", help="DVC experiment name (with -S)")
    ap.add_argument("-f", "--force", action="store_true", help="rerun stages even if up to date")
    args = ap.parse_args()
    print(pipeline(orch.parse_overrides(args.set_param) or None, args.name, args.force))
