"""A sweep's parent run in MLflow: the training runs a sweep made nest under it in the UI.

Kept apart from t2i/tracking.py (opening, reopening and logging one run): a sweep adopts runs
that the train stage already created and finished, after the fact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from t2i.tracking import Run, check_reachable, mlflow_modules, tracking_uri
from t2i.tracking_identity import default_tags


def log_sweep(
    children: list[Mapping[str, str]], rows: list[dict[str, Any]], best: int | None, name: str, params: Mapping[str, Any]
) -> dict[str, str] | None:
    """A parent run over a sweep's training runs: the children nest under it in the UI.

    Logs the comparison table (``sweep.json``, shown as a table in the UI's artifact view) and the
    best point's metrics as ``best.*``. Returns its ``to_json()``; None when nothing was tracked.
    """
    if not children:
        return None
    first = children[0]
    uri = first.get("tracking_uri") or tracking_uri()
    _, client_cls = mlflow_modules()
    client = client_cls(uri)
    check_reachable(uri, client)
    info = client.create_run(first["experiment_id"], run_name=name, tags={**default_tags(), "t2i.kind": "sweep"}).info
    parent = Run(info.run_id, first["experiment_id"], uri)
    parent.log_params(params)
    for child in children:  # runs created by the train stage, adopted after the fact
        adopted = Run(child["run_id"], child["experiment_id"], uri)
        adopted.set_tags({"mlflow.parentRunId": info.run_id})
        adopted.close()
    columns = sorted({k for r in rows for k in r})
    table = {c: [r.get(c) for r in rows] for c in columns}
    parent._call("log_table", lambda: client.log_table(info.run_id, data=table, artifact_file="sweep.json"))
    if best is not None:
        numeric = {f"best.{k}": float(v) for k, v in rows[best].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        parent.log_metrics(numeric)
        parent.set_tags({"best.index": best, **{f"best.{k}": v for k, v in rows[best].items() if isinstance(v, str)}})
    parent.end()
    return parent.to_json()
