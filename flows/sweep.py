"""Prefect flow: grid search, one DVC experiment per point, one after another in one workspace.

    python flows/sweep.py -G 'train.lr_g=[0.0001, 0.0002]' -G 'train.attention=[[], [8, 16]]' --metric <key>

Each point is a `t2i-pipeline` subflow on the baseline params plus the point (never two
`dvc repro` at once: DVC locks the workspace). At the end: a comparison table and the best point
in Prefect (artifacts) and in MLflow (a parent run over the points' runs), and the best
experiment applied to the workspace (`dvc exp apply`).

``--metric`` is checked before any point trains, against the keys of the evaluate stage's
metrics file (the workspace's, else the last commit's): a typo is an error listing the valid
keys. With no metrics file yet, the first point's metrics are the check, and the sweep stops
there rather than training every point for a metric that does not exist.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from flows.pipeline import pipeline
from t2i import orchestration as orch
from t2i.tracking_sweep import log_sweep


@flow(name="t2i-sweep")
def sweep(grid: dict[str, list[Any]], metric: str, mode: str = "max", overrides: dict[str, Any] | None = None,
          prefix: str | None = None, force: bool = False, project_dir: str = ".") -> dict[str, Any]:
    """Run every point of ``grid`` (dotted param -> values); rank points by ``metric`` (``mode`` max|min)."""
    logger, root = get_run_logger(), Path(project_dir).resolve()
    keys = orch.known_metric_keys(root)
    if keys is not None:
        metric = orch.check_metric_key(metric, keys)  # before any point trains
    prefix = prefix or f"sweep-{flow_run.name}"
    baseline = (root / "params.yaml").read_text(encoding="utf-8")
    rows: list[dict[str, Any]] = []
    children: list[dict[str, str]] = []
    for i, point in enumerate(orch.grid_points(grid)):
        (root / "params.yaml").write_text(baseline, encoding="utf-8")  # each point = baseline + point
        name = f"{prefix}-{i}"
        state = pipeline(overrides={**(overrides or {}), **point}, exp_name=name, force=force,
                         project_dir=str(root), return_state=True)
        row: dict[str, Any] = {"experiment": name, **{k: str(v) for k, v in point.items()}}
        if state.is_completed():
            row.update(state.result())
            if keys is None:  # nothing evaluated before the sweep: the first result is the check
                keys = sorted(state.result())
                try:
                    metric = orch.check_metric_key(metric, keys)
                except ValueError:
                    (root / "params.yaml").write_text(baseline, encoding="utf-8")
                    raise
            if info := orch.read_json(root / "models" / "mlflow_run.json"):
                children.append(info)
                row["mlflow_run"] = info["run_id"]
        else:
            row["failed"] = state.message or "failed"
            logger.error("point %s %s failed: %s", i, point, state.message)
        rows.append(row)
    (root / "params.yaml").write_text(baseline, encoding="utf-8")
    best = orch.best_index(rows, metric, mode)
    columns = ["experiment", *grid, metric, *(["failed"] if any("failed" in r for r in rows) else [])]
    best_line = f"best: `{rows[best]['experiment']}` ({metric} = {rows[best][metric]:.4g})" if best is not None else "no point produced the metric"
    create_markdown_artifact(markdown=f"### t2i sweep `{prefix}`\n\n{best_line}\n\n{orch.markdown_table(rows, columns)}", key="t2i-sweep")
    create_table_artifact(table=rows, key="t2i-sweep-table")
    parent = log_sweep(children, rows, best, prefix, {"grid": grid, "metric": metric, "mode": mode})
    if best is not None:  # leave the workspace on the best point, coherent with its outs
        subprocess.run(orch.dvc("exp", "apply", rows[best]["experiment"]), cwd=root, check=True)
    return {"rows": rows, "best": rows[best] if best is not None else None, "mlflow_parent": parent}


def _grid_arg(text: str) -> tuple[str, list[Any]]:
    key, _, values = text.partition("=")
    parsed = orch.parse_value(values)  # a YAML list: lists of lists stay intact
    if not isinstance(parsed, list):
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=[V1, V2, ...]")
    return key, parsed


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-G", "--grid", action="append", type=_grid_arg, required=True, metavar="KEY=[V1, V2]")
    ap.add_argument("-S", "--set-param", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--metric", required=True)
    ap.add_argument("--mode", choices=["max", "min"], default="max")
    args = ap.parse_args()
    if (known := orch.known_metric_keys(Path.cwd())) is not None:
        try:
            orch.check_metric_key(args.metric, known)
        except ValueError as exc:  # one line, before Prefect starts
            sys.exit(f"sweep: error: {exc}")
    result = sweep(dict(args.grid), args.metric, args.mode, orch.parse_overrides(args.set_param) or None)
    print(orch.markdown_table(result["rows"]))
