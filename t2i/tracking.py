"""The one place that talks to MLflow.

Stages call ``start_run`` (train) or ``resume_run`` (evaluate, resumed training) and log through
the returned ``Run``. The record must tell the truth after a fault:

* An unreachable tracking server is an error at start (``TrackingError`` names the URI and what
  to do), because a run that silently records nothing is worse than no run.
* A server that goes away or freezes *mid-run* must not stall training. Logging calls are queued
  and sent by one background thread (``t2i.tracking_queue``), which retries through an outage,
  so what was logged meanwhile arrives when the server is back. ``Run.end`` waits a bounded time
  (``T2I_MLFLOW_FLUSH_S``, default 30 s) for the rest; whatever is still missing is printed and,
  when the server answers, recorded in the tag ``t2i.tracking.missing``.
* A resumed run continues the same MLflow run and skips metrics/images at steps it already has
  (the steps redone after the checkpoint), so no step appears twice.
* Every run carries its host and pid; a run left RUNNING by a process that died (kill -9, OOM,
  power) is marked KILLED by the next ``start_run``/``resume_run`` on that host.
* Each run is named so a list of runs reads: the DVC experiment name, else date-time-commit.

Everything goes through ``MlflowClient`` with an explicit run id (no fluent "active run"), so a
run can be reopened by another process or stage and a failed call can never leave global state
half-updated.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from t2i.nesting import flatten
from t2i.tracking_identity import PREFECT_FLOW_RUN_ENV, close_dead_runs, default_run_name, default_tags, owner_tags

# The experiment opens in the MLflow UI's model-training layout, not the GenAI one (see
# t2i/mlflow_model.py for how the UI chooses).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

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
_OUTAGE_RETRY_S = 30.0  # synchronous calls: after a connection failure, skip calls this long
FLUSH_ENV = "T2I_MLFLOW_FLUSH_S"  # how long Run.end waits for queued calls (seconds)
_FLUSH_DEFAULT_S = 30.0
MISSING_TAG = "t2i.tracking.missing"
# Env var a flow sets so stages (run by DVC, which passes env through) tag the Prefect run id.

T = TypeVar("T")

if TYPE_CHECKING:
    from t2i.tracking_queue import Sender


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
    return flatten(d, ".", prefix)


def mlflow_modules() -> tuple[Any, Any]:
    """(mlflow, MlflowClient), imported with the HTTP retry defaults set first; shared by tracking_*.py."""
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


def check_reachable(uri: str, client: Any) -> None:
    """Raise TrackingError naming URI when its store cannot be listed (server down, bad path)."""
    try:
        client.search_experiments(max_results=1)
    except _errors() as exc:
        raise TrackingError(
            f"MLflow tracking store {uri!r} is not usable: {exc}\n"
            "Start the server (e.g. `mlflow server --host 127.0.0.1 --port 5000`), fix "
            "MLFLOW_TRACKING_URI, or unset it to log to a local sqlite:///mlflow.db."
        ) from exc


class Run:
    """One MLflow run. Logging calls are queued and never raise or wait on the server; ``end``
    sends what is left within a bounded wait and says plainly what could not be sent."""

    def __init__(self, run_id: str, experiment_id: str, tracking_uri: str,
                 logged: Mapping[str, int] | None = None, logged_images: Mapping[str, set[int]] | None = None) -> None:
        _, client_cls = mlflow_modules()
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.tracking_uri = tracking_uri
        self._client = client_cls(tracking_uri)
        self._down_since: float | None = None  # monotonic time of the last connection failure
        self._warned: set[str] = set()
        # A resumed run: the last step already logged per metric key, and image steps per key.
        self._logged = dict(logged or {})
        self._logged_images = {k: set(v) for k, v in (logged_images or {}).items()}
        self._sender: Sender | None = None
        self.missing: str = ""  # after end(): what could not be logged, in words ("" if nothing)

    # -- guarded calls -------------------------------------------------------------------------
    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, TrackingWarning, stacklevel=4)

    def _queue(self) -> Sender:
        if self._sender is None:
            from t2i.tracking_queue import Sender

            def down(what: str, exc: BaseException) -> None:
                self._warn_once("down", f"MLflow tracking server {self.tracking_uri} unreachable during {what} ({exc}); "
                                        "training continues, logging is queued and sent when it is back.")

            def back(left: int) -> None:
                print(f"MLflow server {self.tracking_uri} is back; sending the {left + 1} queued calls", file=sys.stderr)

            def error(what: str, exc: BaseException) -> None:
                self._warn_once(f"error:{what}", f"MLflow {what} failed for run {self.run_id}: {exc}")

            self._sender = Sender(_unreachable, down, back, error)
        return self._sender

    def _submit(self, what: str, fn: Callable[[], object], step: int | None = None) -> None:
        self._queue().submit(what, fn, step)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait (at most ``timeout`` s, default ``T2I_MLFLOW_FLUSH_S``) until queued calls are sent."""
        return self._sender is None or self._sender.flush(_flush_seconds() if timeout is None else timeout)

    def _call(self, what: str, fn: Callable[[], T]) -> T | None:
        """A synchronous call (run end, model export): one bounded try, skipped during an outage."""
        if self._down_since is not None and time.monotonic() - self._down_since < _OUTAGE_RETRY_S:
            return None
        try:
            result = fn()
        except _errors() as exc:
            if not _unreachable(exc):
                self._warn_once(f"error:{what}", f"MLflow {what} failed for run {self.run_id}: {exc}")
                return None
            self._down_since = time.monotonic()
            self._warn_once(
                "down",
                f"MLflow tracking server {self.tracking_uri} unreachable during {what} ({exc}); "
                f"training continues, logging is skipped and retried every {_OUTAGE_RETRY_S:.0f} s.",
            )
            return None
        self._down_since = None
        return result

    # -- the API stages use --------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten_params(params)
        batch = [Param(k, str(v)) for k, v in flat.items()]
        self._submit("log_params", lambda: self._client.log_batch(self.run_id, params=batch))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Queue ``metrics`` at ``step``. With an explicit step, a key already logged at that step
        or later (a resumed run redoing the steps after its checkpoint) is skipped."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        fresh = {k: v for k, v in metrics.items() if step is None or step > self._logged.get(k, -1)}
        if not fresh:
            return
        if step is not None:
            self._logged.update({k: step for k in fresh})
        batch = [Metric(k, float(v), now, step or 0) for k, v in fresh.items()]
        self._submit("log_metrics", lambda: self._client.log_batch(self.run_id, metrics=batch), step)

    def log_image(self, image: PIL.Image.Image, key: str, step: int) -> None:
        seen = self._logged_images.setdefault(key, set())
        if step in seen:  # a resumed run redoing a step it already logged
            return
        seen.add(step)
        image = image.copy()  # the caller may draw into its image again before this is sent
        # key + step: the UI's image panel shows one slider per key over steps.
        self._submit("log_image", lambda: self._client.log_image(self.run_id, image, key=key, step=step), step)

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        local = str(path)
        if Path(local).is_dir():
            self._submit(f"log_artifacts {local}", lambda: self._client.log_artifacts(self.run_id, local, artifact_path))
        else:
            self._submit(f"log_artifact {local}", lambda: self._client.log_artifact(self.run_id, local, artifact_path))

    def log_generator(self, generator: torch.nn.Module, z_dim: int, text_dim: int, name: str = "generator") -> None:
        """Log ``generator(z, text)`` as an MLflow PyTorch model (``runs:/<id>/<name>``): see
        ``t2i.tracking_export``. Export errors raise; a gone server only warns."""
        from t2i.tracking_export import log_exported_generator

        log_exported_generator(self, generator, z_dim, text_dim, name)

    def log_with(self, what: str, log: Callable[[str, str], Any]) -> None:
        """A synchronous logging call made by another module (``log(run_id, tracking_uri)``, e.g.
        the pyfunc model of t2i/mlflow_model.py), under this run's rules: queued calls first, one
        bounded try, skipped while the server is down."""
        self.flush()
        self._call(what, lambda: log(self.run_id, self.tracking_uri))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(k, str(v)) for k, v in tags.items()]
        self._submit("set_tags", lambda: self._client.log_batch(self.run_id, tags=batch))

    def close(self, timeout: float | None = None) -> str:
        """Send what is queued (bounded wait), stop the sender; return what is missing, in words."""
        if self._sender is None:
            return ""
        from t2i.tracking_queue import summarize

        missed = self._sender.close(_flush_seconds() if timeout is None else timeout)
        self._sender = None
        return summarize(missed)

    def end(self, status: str = "FINISHED") -> None:
        """Send queued calls (at most ``T2I_MLFLOW_FLUSH_S`` s), then mark the run FINISHED /
        FAILED / KILLED. What could not be logged is printed and, if the server answers, tagged."""
        down = self._sender is not None and self._sender.down
        self.missing = self.close()
        if self.missing:
            print(f"MLflow run {self.run_id} at {self.tracking_uri} is missing: {self.missing}. "
                  "The local record (plots/train/losses.csv, models/, checkpoints/) is complete.", file=sys.stderr)
            if not down:  # one bounded wait on a gone server is enough: the status below
                self._down_since = None
                self._call("set_tag", lambda: self._client.set_tag(self.run_id, MISSING_TAG, self.missing[:4900]))
        self._down_since = None  # the status is tried once more even during an outage
        self._call("end", lambda: self._client.set_terminated(self.run_id, status=status))

    def to_json(self) -> dict[str, str]:
        return {"run_id": self.run_id, "tracking_uri": self.tracking_uri, "experiment_id": self.experiment_id}

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.end("FINISHED" if exc_type is None else ("KILLED" if exc_type is KeyboardInterrupt else "FAILED"))


def _flush_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get(FLUSH_ENV, _FLUSH_DEFAULT_S)))
    except ValueError:
        return _FLUSH_DEFAULT_S


def start_run(experiment: str, run_name: str | None, params: Mapping[str, Any], tags: Mapping[str, Any]) -> Run:
    """New run in ``experiment`` (created if needed) with flattened params and tags.

    Raises ``TrackingError`` at once if the store cannot be reached: nothing is logged yet.
    ``default_tags()`` is merged in; explicit ``tags`` win. ``run_name`` None: ``default_run_name()``.
    Runs of this experiment left RUNNING by a dead process on this host are marked KILLED first.
    """
    _, client_cls = mlflow_modules()
    uri = tracking_uri()
    client = client_cls(uri)
    check_reachable(uri, client)
    try:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:  # opens in the UI's model-training view, not the GenAI one
            experiment_id = client.create_experiment(experiment, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        else:
            experiment_id = exp.experiment_id
        close_dead_runs(client, experiment_id)
        all_tags = {**default_tags(), **{k: str(v) for k, v in tags.items()}, **owner_tags()}
        info = client.create_run(experiment_id, run_name=run_name or default_run_name(), tags=all_tags).info
    except _errors() as exc:
        raise TrackingError(f"could not create an MLflow run in {uri!r} (experiment {experiment!r}): {exc}") from exc
    run = Run(info.run_id, experiment_id, uri)
    run.log_params(params)
    return run


def _logged_so_far(client: Any, run_id: str) -> tuple[dict[str, int], dict[str, set[int]]]:
    """Last logged step per metric key, and logged image steps per key, of ``run_id``."""
    data = client.get_run(run_id).data
    steps = {k: max((m.step for m in client.get_metric_history(run_id, k)), default=-1) for k in data.metrics}
    images: dict[str, set[int]] = {}
    for f in client.list_artifacts(run_id, "images"):
        parts = Path(f.path).name.split("+")  # <key>+step+<step>+timestamp+<ms>+<uuid>[+compressed].<ext>
        if len(parts) >= 3 and parts[1] == "step" and parts[2].isdigit():
            images.setdefault(parts[0].replace("~", "/"), set()).add(int(parts[2]))
    return steps, images


def resume_run(info: Mapping[str, str], skip_logged_steps: bool | None = None) -> Run:
    """Reopen a run from ``Run.to_json()`` (e.g. models/mlflow_run.json) and mark it RUNNING.

    If its previous process died, the run is first marked KILLED (the reason stays in
    ``t2i.end_reason``). ``skip_logged_steps``: metrics/images at steps the run already holds
    are not logged again (see ``Run.log_metrics``) -- a resumed training redoes the steps after
    its checkpoint. None (default): skip when the run had not finished, i.e. it was interrupted;
    a FINISHED run reopened by evaluate logs everything, so a re-evaluation updates its values.
    """
    _, client_cls = mlflow_modules()
    uri = info.get("tracking_uri") or tracking_uri()
    client = client_cls(uri)
    check_reachable(uri, client)
    run_id = info["run_id"]
    try:
        experiment_id = str(info.get("experiment_id") or client.get_run(run_id).info.experiment_id)
        close_dead_runs(client, experiment_id)
        if skip_logged_steps is None:
            skip_logged_steps = client.get_run(run_id).info.status != "FINISHED"
        logged, images = _logged_so_far(client, run_id) if skip_logged_steps else ({}, {})
        client.update_run(run_id, status="RUNNING")
        for key, value in owner_tags().items():
            client.set_tag(run_id, key, value)
    except _errors() as exc:
        raise TrackingError(f"cannot reopen MLflow run {run_id} in {uri!r}: {exc}") from exc
    return Run(run_id, experiment_id, uri, logged=logged, logged_images=images)


def download_artifacts(uri: str) -> str:
    """Local path of a logged artifact (``runs:/<run_id>/<path>``), fetched from the store."""
    mlflow, _ = mlflow_modules()
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
