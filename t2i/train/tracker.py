"""How the train stage opens its MLflow run: continue the run a checkpoint names, else a new one."""

from __future__ import annotations

from typing import Any, Callable

from t2i.config import TrainParams, TrainRuntimeParams
from t2i.train.data import TrainData


def tracker_opener(params: TrainParams, runtime: TrainRuntimeParams, data: TrainData) -> Callable[[dict | None], Any]:
    """``open_tracker(info)``: ``info`` is the MLflow run a resumed checkpoint recorded (or None)."""

    def open_tracker(info: dict[str, Any] | None) -> Any:
        from t2i import tracking  # imports mlflow: only a tracked run pays for it

        if info:
            try:
                return tracking.resume_run(info)  # a resumed training continues its run
            except tracking.TrackingError as exc:
                print(f"train: cannot reopen MLflow run {info.get('run_id')} ({exc}); starting a new run")
        flat = tracking.flatten_params({"train": params, "train_runtime": runtime, "encoder": data.encoder})
        tags = {**tracking.default_tags(), "data_identity": data.identity[:16]}
        return tracking.start_run("t2i", run_name=None, params=flat, tags=tags)

    return open_tracker
