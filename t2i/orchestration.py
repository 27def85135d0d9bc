"""What the Prefect flows do, without Prefect: run DVC, apply overrides, read results.

DVC stays the only definition of the DAG: the stage order is read from ``dvc.yaml`` and every
stage runs through ``dvc repro --single-item <stage>``, so DVC alone decides what is up to date.
Overrides are written into ``params.yaml`` the way ``dvc exp run -S`` writes them; after the
stages ran, ``dvc exp run -n <name>`` finds everything up to date and records the workspace as
a DVC experiment with DVC's own rules (params, dvc.lock, metrics and plots included).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from t2i.config import SECTIONS, validate_section
from t2i.nesting import flatten

LineSink = Callable[[str], None]
_TAIL_LINES = 30
# Exit codes of a stage killed from outside (OOM killer, preemption): a rerun resumes from the
# last checkpoint. An ordinary failure (bad params, a bug, a diverged training) is deterministic
# and is never retried. Negative: killed by a signal as seen by DVC; 128+N: the stage's own
# exit code after it caught SIGTERM and checkpointed. SIGINT is a user's Ctrl-C: never retried.
RETRYABLE_EXIT_CODES = frozenset({-9, -15, 137, 143})


class StageFailed(RuntimeError):
    """A DVC stage failed; the message ends with the last lines of its output."""

    def __init__(self, stage: str, returncode: int, stage_returncode: int | None, tail: Sequence[str]) -> None:
        self.stage, self.returncode, self.stage_returncode = stage, returncode, stage_returncode
        what = f"exited with {stage_returncode}" if stage_returncode is not None else f"dvc exited with {returncode}"
        super().__init__(f"stage '{stage}' failed ({what}); last output:\n" + "\n".join(tail))

    @property
    def interrupted(self) -> bool:
        """Killed from outside (retry makes sense), as opposed to failing by itself."""
        return self.stage_returncode in RETRYABLE_EXIT_CODES


def _python_env(env: Mapping[str, str]) -> dict[str, str]:
    """Stage commands say ``python``: make it this interpreter's, and stream output unbuffered."""
    out = dict(env)
    out["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), out.get("PATH", "")])
    out.setdefault("PYTHONUNBUFFERED", "1")
    out.setdefault("TQDM_MININTERVAL", "10")  # a progress line every 10 s, not 10 per second
    out.setdefault("DVC_NO_ANALYTICS", "1")
    return out


def run_streaming(args: Sequence[str], cwd: Path, env: Mapping[str, str], sink: LineSink) -> tuple[int, list[str]]:
    """Run a command, send each output line (``\\r`` progress updates too) to ``sink``."""
    proc = subprocess.Popen(
        list(args), cwd=cwd, env=_python_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    assert proc.stdout is not None

    def emit(part: bytes) -> None:
        line = part.decode("utf-8", errors="replace").rstrip()
        if line:
            tail.append(line)
            sink(line)

    pending = b""
    try:
        # Read what is there, not whole lines: a progress bar rewrites one line with \r and
        # would otherwise arrive only when the stage prints a newline.
        while chunk := proc.stdout.read1(65536):
            *parts, pending = re.split(rb"[\r\n]", pending + chunk)
            for part in parts:
                emit(part)
        emit(pending)
    finally:
        proc.stdout.close()
        returncode = proc.wait()
    return returncode, list(tail)


def dvc(*args: str) -> list[str]:
    # The dvc of this interpreter, whatever PATH says.
    return [sys.executable, "-m", "dvc", *args]


def _path_inside(path: str, other: str) -> bool:
    a, b = Path(path).as_posix().rstrip("/"), Path(other).as_posix().rstrip("/")
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def _names(entries: Iterable[Any]) -> list[str]:
    # dvc.yaml lists entries as "path" or {"path": {options}}.
    return [next(iter(e)) if isinstance(e, dict) else str(e) for e in entries or []]


def stage_order(root: Path) -> list[str]:
    """Stages of ``dvc.yaml`` in dependency order (file order among independent stages)."""
    stages: dict[str, Any] = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    outs = {
        name: _names(s.get("outs", [])) + _names(s.get("metrics", [])) + _names(s.get("plots", []))
        for name, s in stages.items()
    }
    needs = {
        name: {o for o, paths in outs.items() if o != name for d in _names(s.get("deps", [])) for p in paths if _path_inside(d, p)}
        for name, s in stages.items()
    }
    order: list[str] = []
    while len(order) < len(stages):
        ready = [n for n in stages if n not in order and needs[n] <= set(order)]
        if not ready:
            raise ValueError(f"dvc.yaml: cycle among stages {sorted(set(stages) - set(order))}")
        order.append(ready[0])
    return order


def repro_stage(stage: str, root: Path, env: Mapping[str, str], sink: LineSink, force: bool = False) -> None:
    """``dvc repro --single-item <stage>``: DVC skips it when it is up to date."""
    args = dvc("repro", "--single-item", *(["--force"] if force else []), stage)
    returncode, tail = run_streaming(args, root, env, sink)
    if returncode != 0:
        # DVC reports the stage command's own status as "failed to run: <cmd>, exited with N".
        found = re.findall(r"exited with (-?\d+)", "\n".join(tail))
        raise StageFailed(stage, returncode, int(found[-1]) if found else None, tail)


def parse_value(text: str) -> Any:
    """``"50"`` -> 50, ``"[8, 16]"`` -> [8, 16], ``"bow"`` -> "bow" (as ``dvc exp run -S`` reads it)."""
    return yaml.safe_load(text)


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not KEY=VALUE")
        out[key.strip()] = parse_value(value)
    return out


def apply_overrides(params_path: Path, overrides: Mapping[str, Any]) -> None:
    """Write dotted-key overrides into params.yaml, keeping its comments; validate first.

    A typo or a bad value raises ``t2i.config.ParamsError`` before any stage runs.
    """
    from ruamel.yaml import YAML  # DVC's own YAML library: round-trips comments

    ryaml = YAML()
    doc = ryaml.load(params_path.read_text(encoding="utf-8"))
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = doc
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = parse_value(value) if isinstance(value, str) else value
    plain = json.loads(json.dumps(doc))  # ruamel types -> plain dict for validation
    for section in {k.split(".")[0] for k in overrides}:
        if section not in SECTIONS:
            raise ValueError(f"unknown params section in override: {section!r}; allowed: {sorted(SECTIONS)}")
        validate_section(section, plain.get(section), params_path)
    with params_path.open("w", encoding="utf-8") as fh:
        ryaml.dump(doc, fh)


def record_experiment(name: str, root: Path, env: Mapping[str, str], sink: LineSink) -> None:
    """Record the (up-to-date) workspace as DVC experiment ``name``; no stage reruns."""
    returncode, tail = run_streaming(dvc("exp", "run", "--name", name), root, env, sink)
    if returncode != 0:
        raise RuntimeError(f"dvc exp run --name {name} failed ({returncode}):\n" + "\n".join(tail))


def list_experiments(root: Path) -> list[str]:
    done = subprocess.run(dvc("exp", "list", "--name-only"), cwd=root, capture_output=True, text=True, check=True)
    return done.stdout.split()


def read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Flattened numeric leaves of eval/metrics.json (strings and nulls dropped)."""
    flat = flatten(metrics)
    return {k: float(v) for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "_no rows_"
    cols = list(columns or dict.fromkeys(k for r in rows for k in r))

    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v).replace("|", "\\|"))

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Cartesian product, in the order the keys and values are given."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def best_index(rows: Sequence[Mapping[str, Any]], metric: str, mode: str = "max") -> int | None:
    scored = [(r[metric], i) for i, r in enumerate(rows) if isinstance(r.get(metric), (int, float))]
    if not scored:
        return None
    return (max if mode == "max" else min)(scored)[1]


def mlflow_ui_link(info: Mapping[str, str]) -> str:
    """Browser link to a run's charts: the server itself for http(s) stores, else ``mlflow ui``'s
    default address (``T2I_MLFLOW_UI`` overrides it)."""
    from t2i.mlflow_model import ui_url

    uri = info.get("tracking_uri", "")
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else os.environ.get("T2I_MLFLOW_UI", "http://127.0.0.1:5000")
    return ui_url(base, info.get("experiment_id", ""), info["run_id"])


def mlflow_run_line(info: Mapping[str, str]) -> str:
    """What the pipeline flow ends with: which MLflow run it wrote and where to open it."""
    uri = info.get("tracking_uri", "")
    local = "" if uri.startswith(("http://", "https://")) else f" (local store {uri}: start `mlflow ui --backend-store-uri {uri}` first)"
    return f"MLflow run {info['run_id']}: {mlflow_ui_link(info)}{local}"


def metrics_files(root: Path) -> list[str]:
    """The metrics files ``dvc.yaml`` declares (the evaluate stage's ``eval/metrics.json``)."""
    stages: dict[str, Any] = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    return [m for s in stages.values() for m in _names(s.get("metrics", []))]


def known_metric_keys(root: Path) -> list[str] | None:
    """Numeric keys the evaluate stage writes, read from its metrics file in the workspace, else
    from the last commit; None when neither has one (nothing evaluated yet)."""
    keys: set[str] = set()
    found = False
    for name in metrics_files(root):
        text = None
        if (root / name).is_file():
            text = (root / name).read_text(encoding="utf-8")
        else:
            shown = subprocess.run(["git", "show", f"HEAD:{name}"], cwd=root, capture_output=True, text=True)
            text = shown.stdout if shown.returncode == 0 else None
        if text is not None:
            try:
                keys |= set(numeric_metrics(json.loads(text)))
                found = True
            except ValueError:
                continue  # a damaged metrics file tells nothing; the first point's result will
    return sorted(keys) if found else None


def check_metric_key(metric: str, keys: Sequence[str]) -> str:
    """``metric`` as the sweep table spells it (``test.swap``; ``test/swap`` is accepted), or a
    ValueError listing the valid keys: a typo would otherwise train every point for nothing."""
    for candidate in (metric, metric.replace("/", ".")):
        if candidate in keys:
            return candidate
    close = [k for k in keys if k.rsplit(".", 1)[-1] == metric.replace("/", ".").rsplit(".", 1)[-1]]
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ValueError(f"metric {metric!r} is not one the evaluate stage writes{hint}; valid keys: {', '.join(keys)}")
