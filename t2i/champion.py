"""Register an evaluated generator and move the ``champion`` alias only when it is better.

Every evaluated run becomes a version of the registered model ``t2i-generator``; the alias
``champion`` (what ``models:/t2i-generator@champion`` serves) moves to the new version only when
its headline metric beats the current champion's:

- ``test/attr_all`` when the dataset has ground truth (synthetic): the fraction of generated
  test images in which the attribute classifier reads every attribute the caption states. It is
  the project's claim (colour roles follow word order) as one number.
- ``r_precision`` otherwise: how often a generated test image retrieves its own caption.

Both are higher-is-better. A champion scored on another metric (another kind of dataset) is not
comparable: the alias stays unless ``force``. Each version carries its metric and value as tags
(``t2i.headline_metric``, ``t2i.headline_value``) and the decision (``t2i.champion_decision``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

MODEL_NAME = "t2i-generator"
ALIAS = "champion"
HEADLINE_METRICS = ("test/attr_all", "r_precision")  # first one present and finite wins
METRIC_TAG, VALUE_TAG, DECISION_TAG = "t2i.headline_metric", "t2i.headline_value", "t2i.champion_decision"


@dataclass
class Decision:
    model_name: str
    version: str
    metric: str | None
    value: float | None
    champion_version: str | None
    champion_value: float | None
    promoted: bool
    reason: str


def headline_metric(metrics: Mapping[str, float]) -> tuple[str, float] | None:
    """(name, value) of the headline metric among evaluate's flat metrics, or None."""
    for name in HEADLINE_METRICS:
        value = metrics.get(name, metrics.get(f"eval/{name}"))
        if value is not None and math.isfinite(float(value)):
            return name, float(value)
    return None


def _current(client: Any, name: str, alias: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:  # no such model or no such alias yet
        return None


def _decide(head: tuple[str, float] | None, champ: Any | None, force: bool) -> tuple[bool, str]:
    if force:
        return True, "forced"
    if champ is None:
        return head is not None, ("no champion yet" if head is not None else "no headline metric: not promoted")
    if head is None:
        return False, "no headline metric: the champion stays"
    c_metric, c_value = champ.tags.get(METRIC_TAG), champ.tags.get(VALUE_TAG)
    if c_metric != head[0] or c_value is None:
        return False, f"champion was scored on {c_metric!r}, this run on {head[0]!r}: not comparable"
    if head[1] > float(c_value):
        return True, f"{head[0]} {head[1]:.4f} > champion's {float(c_value):.4f}"
    return False, f"{head[0]} {head[1]:.4f} <= champion's {float(c_value):.4f}"


def register_and_promote(model_uri: str, metrics: Mapping[str, float], name: str = MODEL_NAME,
                         alias: str = ALIAS, force: bool = False, tracking_uri: str | None = None) -> Decision:
    """Register ``model_uri`` (``models:/m-...`` or ``runs:/<id>/generator_pyfunc``) as a new
    version of ``name``; point ``alias`` at it when its headline metric beats the current one."""
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()
    head = headline_metric(metrics)
    champ = _current(client, name, alias)
    version = mlflow.register_model(model_uri, name).version
    promoted, reason = _decide(head, champ, force)
    tags = {DECISION_TAG: reason, **({METRIC_TAG: head[0], VALUE_TAG: repr(head[1])} if head else {})}
    for k, v in tags.items():
        client.set_model_version_tag(name, str(version), k, v)
    if promoted:
        client.set_registered_model_alias(name, alias, str(version))
    c_value = champ.tags.get(VALUE_TAG) if champ is not None else None
    return Decision(name, str(version), head[0] if head else None, head[1] if head else None,
                    str(champ.version) if champ is not None else None, float(c_value) if c_value else None,
                    promoted, reason)


def register_run(run_id: str, metrics: Mapping[str, float], force: bool = False,
                 tracking_uri: str | None = None) -> Decision:
    """``register_and_promote`` for the pyfunc model the train stage logged in ``run_id``
    (its URI is the run's ``t2i.pyfunc_uri`` tag)."""
    import mlflow

    from t2i.mlflow_model import PYFUNC_URI_TAG

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    uri = mlflow.MlflowClient().get_run(run_id).data.tags.get(PYFUNC_URI_TAG)
    if not uri:
        raise LookupError(f"run {run_id} has no {PYFUNC_URI_TAG} tag: the train stage logged no pyfunc model "
                          "(t2i.mlflow_model.log_to_run)")
    return register_and_promote(uri, metrics, force=force)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m t2i.champion", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_id", help="the MLflow run that trained the model (models/mlflow_run.json)")
    ap.add_argument("--metrics", default="eval/metrics.json", help="evaluate's flat metrics JSON")
    ap.add_argument("--force", action="store_true", help="move the alias whatever the metric says")
    args = ap.parse_args(argv)
    from t2i.tracking import tracking_uri

    try:
        with open(args.metrics, encoding="utf-8") as f:
            metrics = _flat(json.load(f))
    except FileNotFoundError:
        print(f"t2i.champion: error: {args.metrics} not found: run the evaluate stage first", file=sys.stderr)
        return 2
    try:
        decision = register_run(args.run_id, metrics, force=args.force, tracking_uri=tracking_uri())
    except LookupError as exc:
        print(f"t2i.champion: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(decision), indent=1))
    return 0


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """eval/metrics.json may nest ({"test": {"attr_all": ..}}): flatten to "test/attr_all"."""
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


if __name__ == "__main__":
    sys.exit(main())
