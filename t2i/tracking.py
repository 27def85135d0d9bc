"""The one place that talks to MLflow.

Stages call ``start_run`` (train) or ``resume_run`` (evaluate, resumed training) and log through
the returned ``Run``. Two rules shape this module:

* An unreachable tracking server is an error at start (``TrackingError`` names the URI and what
  to do), because a run that silently records nothing is worse than no run.
* A server that goes away *mid-run* must not kill training. Every logging call is guarded: the
  first failure warns once, then calls are skipped (cheaply) for ``_OUTAGE_RETRY_S`` seconds
  before one is tried again. The stage keeps its own local record (losses.csv, checkpoints).

Everything goes through ``MlflowClient`` with an explicit run id (no fluent "active run"), so a
run can be reopened by another process or stage and a failed call can never leave global state
half-updated.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # imported lazily at run time: mlflow + torch cost seconds
    import PIL.Image
    import torch

# MLflow's HTTP defaults retry 7 times with backoff and wait 120 s per request: minutes per call
# when the server is gone. A training loop wants a fast answer; the user's own values win.
_HTTP_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
_OUTAGE_RETRY_S = 30.0  # after a connection failure, skip calls this long before trying again
_PIP_REQUIREMENTS = ["torch"]  # explicit: MLflow's inference of requirements costs ~5 s
# Env var a flow sets so stages (run by DVC, which passes env through) tag the Prefect run id.
PREFECT_FLOW_RUN_ENV = "PREFECT__FLOW_RUN_ID"

T = TypeVar("T")


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message names the URI and what to do."""


class TrackingWarning(UserWarning):
    """A logging call failed mid-run; training goes on without it."""


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else a SQLite file in the current directory (absolute URI)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if uri:
        return uri
    # Absolute: a stage run from another directory must still find the same store.
    return f"sqlite:///{(Path.cwd() / 'mlflow.db').resolve().as_posix()}"


def flatten_params(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``; pydantic models are dumped first."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if hasattr(value, "model_dump"):
            value = value.model_dump()
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, prefix=f"{name}."))
        else:
            out[name] = value
    return out


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _prefect_flow_run_id() -> str | None:
    if run_id := os.environ.get(PREFECT_FLOW_RUN_ENV):
        return run_id
    # Only ask Prefect if this process already imported it: importing it here costs ~2 s per stage.
    if "prefect" in sys.modules:
        from prefect.runtime import flow_run

        run_id = flow_run.id
        return str(run_id) if run_id else None
    return None


def default_tags() -> dict[str, str]:
    """Provenance: git commit, DVC experiment, Prefect flow run, host."""
    tags = {"host": socket.gethostname()}
    if commit := _git("rev-parse", "HEAD"):
        tags["mlflow.source.git.commit"] = commit  # the UI shows this one on the run page
        tags["git.commit"] = commit
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        tags["git.dirty"] = str(bool(dirty)).lower()
    # Set by DVC while `dvc exp run` runs a stage.
    for env, tag in (("DVC_EXP_NAME", "dvc.exp_name"), ("DVC_EXP_BASELINE_REV", "dvc.baseline_rev")):
        if value := os.environ.get(env):
            tags[tag] = value
    if flow_run_id := _prefect_flow_run_id():
        tags["prefect.flow_run_id"] = flow_run_id
    return tags


def _mlflow_modules() -> tuple[Any, Any]:
    for key, value in _HTTP_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    import mlflow
    from mlflow import MlflowClient

    return mlflow, MlflowClient


def _unreachable(exc: BaseException) -> bool:
    """True for 'cannot talk to the server', False for 'the server said no'."""
    import requests

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
            return True
        seen = seen.__cause__ or seen.__context__
    # MLflow wraps transport errors in MlflowException("API request to ... failed with exception").
    text = str(exc)
    return "failed with exception" in text or "Max retries exceeded" in text


def _errors() -> tuple[type[BaseException], ...]:
    import requests
    from mlflow.exceptions import MlflowException

    return (MlflowException, requests.RequestException, OSError)


def _check_reachable(uri: str, client: Any) -> None:
    try:
        client.search_experiments(max_results=1)
    except _errors() as exc:
        raise TrackingError(
            f"MLflow tracking store {uri!r} is not usable: {exc}\n"
            "Start the server (e.g. `mlflow server --host 127.0.0.1 --port 5000`), fix "
            "MLFLOW_TRACKING_URI, or unset it to log to a local sqlite:///mlflow.db."
        ) from exc


class Run:
    """One MLflow run; every logging call warns instead of raising when the server is gone."""

    def __init__(self, run_id: str, experiment_id: str, tracking_uri: str) -> None:
        _, client_cls = _mlflow_modules()
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.tracking_uri = tracking_uri
        self._client = client_cls(tracking_uri)
        self._down_since: float | None = None  # monotonic time of the last connection failure
        self._skipped = 0
        self._warned: set[str] = set()

    # -- guarded calls -------------------------------------------------------------------------
    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, TrackingWarning, stacklevel=4)

    def _call(self, what: str, fn: Callable[[], T]) -> T | None:
        if self._down_since is not None and time.monotonic() - self._down_since < _OUTAGE_RETRY_S:
            self._skipped += 1
            return None
        try:
            result = fn()
        except _errors() as exc:
            if not _unreachable(exc):
                self._warn_once(f"error:{what}", f"MLflow {what} failed for run {self.run_id}: {exc}")
                return None
            self._down_since = time.monotonic()
            self._skipped += 1
            self._warn_once(
                "down",
                f"MLflow tracking server {self.tracking_uri} unreachable during {what} ({exc}); "
                f"training continues, logging is skipped and retried every {_OUTAGE_RETRY_S:.0f} s.",
            )
            return None
        if self._down_since is not None:
            self._down_since = None
            self._warn_once("back", f"MLflow server {self.tracking_uri} is back; {self._skipped} logging calls were skipped.")
        return result

    # -- the API stages use --------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten_params(params)
        batch = [Param(k, str(v)) for k, v in flat.items()]
        self._call("log_params", lambda: self._client.log_batch(self.run_id, params=batch))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        self._call("log_metrics", lambda: self._client.log_batch(self.run_id, metrics=batch))

    def log_image(self, image: PIL.Image.Image, key: str, step: int) -> None:
        # key + step: the UI's image panel shows one slider per key over steps.
        self._call("log_image", lambda: self._client.log_image(self.run_id, image, key=key, step=step))

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        local = str(path)
        if Path(local).is_dir():
            self._call("log_artifacts", lambda: self._client.log_artifacts(self.run_id, local, artifact_path))
        else:
            self._call("log_artifact", lambda: self._client.log_artifact(self.run_id, local, artifact_path))

    def log_generator(self, generator: torch.nn.Module, z_dim: int, text_dim: int, name: str = "generator") -> None:
        """Log ``generator(z, text)`` as an MLflow PyTorch model (``runs:/<id>/generator``).

        Saved as pt2 (torch.export): loads with ``mlflow.pytorch.load_model`` without the t2i
        code and without unpickling. The example has batch 2 so the batch dimension stays dynamic.
        Export errors (a bug in the model) raise; a gone server only warns.
        """
        import copy

        import numpy as np
        import torch
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        mlflow, _ = _mlflow_modules()
        model = copy.deepcopy(generator).cpu().eval().float()
        gen = torch.Generator().manual_seed(0)
        z = torch.randn(2, z_dim, generator=gen)
        text = torch.randn(2, text_dim, generator=gen)
        with torch.no_grad():
            out = model(z, text)
        f32 = np.dtype("float32")
        signature = ModelSignature(
            inputs=Schema([TensorSpec(f32, (-1, z_dim), "z"), TensorSpec(f32, (-1, text_dim), "text")]),
            outputs=Schema([TensorSpec(f32, (-1, *out.shape[1:]), "image")]),
        )

        def log() -> None:
            # log_model resolves the store and experiment globally; point both at this run.
            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_experiment(experiment_id=self.experiment_id)
            mlflow.pytorch.log_model(
                model,
                name=name,
                run_id=self.run_id,
                input_example=(z.numpy(), text.numpy()),
                signature=signature,
                serialization_format="pt2",
                pip_requirements=_PIP_REQUIREMENTS,
            )
            self._client.set_tag(self.run_id, "t2i.generator_uri", f"runs:/{self.run_id}/{name}")

        self._call("log_generator", log)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(k, str(v)) for k, v in tags.items()]
        self._call("set_tags", lambda: self._client.log_batch(self.run_id, tags=batch))

    def end(self, status: str = "FINISHED") -> None:
        """Mark the run FINISHED / FAILED / KILLED (tries once more even during an outage)."""
        self._down_since = None
        self._call("end", lambda: self._client.set_terminated(self.run_id, status=status))

    def to_json(self) -> dict[str, str]:
        return {"run_id": self.run_id, "tracking_uri": self.tracking_uri, "experiment_id": self.experiment_id}

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.end("FINISHED" if exc_type is None else ("KILLED" if exc_type is KeyboardInterrupt else "FAILED"))


def start_run(experiment: str, run_name: str | None, params: Mapping[str, Any], tags: Mapping[str, Any]) -> Run:
    """New run in ``experiment`` (created if needed) with flattened params and tags.

    Raises ``TrackingError`` at once if the store cannot be reached: nothing is logged yet.
    ``default_tags()`` is merged in; explicit ``tags`` win.
    """
    _, client_cls = _mlflow_modules()
    uri = tracking_uri()
    client = client_cls(uri)
    _check_reachable(uri, client)
    try:
        exp = client.get_experiment_by_name(experiment)
        experiment_id = exp.experiment_id if exp else client.create_experiment(experiment)
        all_tags = {**default_tags(), **{k: str(v) for k, v in tags.items()}}
        info = client.create_run(experiment_id, run_name=run_name, tags=all_tags).info
    except _errors() as exc:
        raise TrackingError(f"could not create an MLflow run in {uri!r} (experiment {experiment!r}): {exc}") from exc
    run = Run(info.run_id, experiment_id, uri)
    run.log_params(params)
    return run


def resume_run(info: Mapping[str, str]) -> Run:
    """Reopen a run from ``Run.to_json()`` (e.g. models/mlflow_run.json) and mark it RUNNING."""
    _, client_cls = _mlflow_modules()
    uri = info.get("tracking_uri") or tracking_uri()
    client = client_cls(uri)
    _check_reachable(uri, client)
    try:
        client.update_run(info["run_id"], status="RUNNING")
    except _errors() as exc:
        raise TrackingError(f"cannot reopen MLflow run {info['run_id']} in {uri!r}: {exc}") from exc
    return Run(info["run_id"], str(info.get("experiment_id", "")), uri)


def load_logged_generator(uri: str) -> torch.nn.Module:
    """Generator logged by ``Run.log_generator``: call it as ``g(z, text)``.

    ``uri`` is ``runs:/<run_id>/generator``, ``models:/<name>/<version>`` or ``models:/m-...``.
    Uses ``MLFLOW_TRACKING_URI`` (or the local default) to resolve it.
    """
    mlflow, _ = _mlflow_modules()
    mlflow.set_tracking_uri(tracking_uri())
    return mlflow.pytorch.load_model(uri)


def download_artifacts(uri: str) -> str:
    """Local path of a logged artifact (``runs:/<run_id>/<path>``), fetched from the store."""
    mlflow, _ = _mlflow_modules()
    mlflow.set_tracking_uri(tracking_uri())
    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=uri)
    except _errors() as exc:
        raise TrackingError(f"cannot fetch {uri} from {tracking_uri()!r}: {exc}") from exc


def stage_env(flow_run_id: str | None, uri: str | None = None) -> dict[str, str]:
    """Environment for subprocesses (DVC stages) a flow starts: its run id and one store.

    DVC passes the environment through to stage commands. Pinning ``MLFLOW_TRACKING_URI`` to an
    absolute URI keeps every stage logging to the same store whatever its working directory.
    """
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = uri or tracking_uri()
    if flow_run_id:
        env[PREFECT_FLOW_RUN_ENV] = flow_run_id
    return env


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
    _, client_cls = _mlflow_modules()
    client = client_cls(uri)
    _check_reachable(uri, client)
    info = client.create_run(first["experiment_id"], run_name=name, tags={**default_tags(), "t2i.kind": "sweep"}).info
    parent = Run(info.run_id, first["experiment_id"], uri)
    parent.log_params(params)
    for child in children:  # runs created by the train stage, adopted after the fact
        Run(child["run_id"], child["experiment_id"], uri).set_tags({"mlflow.parentRunId": info.run_id})
    columns = sorted({k for r in rows for k in r})
    table = {c: [r.get(c) for r in rows] for c in columns}
    parent._call("log_table", lambda: client.log_table(info.run_id, data=table, artifact_file="sweep.json"))
    if best is not None:
        numeric = {f"best.{k}": float(v) for k, v in rows[best].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        parent.log_metrics(numeric)
        parent.set_tags({"best.index": best, **{f"best.{k}": v for k, v in rows[best].items() if isinstance(v, str)}})
    parent.end()
    return parent.to_json()
