"""Who a run is: its name, its provenance tags, and the process that owns it.

Names are readable and distinct (the DVC experiment name, else UTC time and commit) because a
seeded RNG makes MLflow's random names repeat. Each run records its host, pid and the pid's start
time, so a run left RUNNING by a killed process is recognised, and closed, the next time a stage
starts; a reused pid is not mistaken for the writer.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from t2i.atomic import pid_alive

PREFECT_FLOW_RUN_ENV = "PREFECT__FLOW_RUN_ID"


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


def default_run_name() -> str:
    """The DVC experiment name under ``dvc exp run``, else ``<UTC date>-<time>-<short commit>``:
    distinct per run and sortable, unlike MLflow's random names (which a seeded RNG repeats)."""
    if name := os.environ.get("DVC_EXP_NAME", "").strip():
        return name
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d-%H%M%S")
    commit = _git("rev-parse", "--short", "HEAD")
    return f"{stamp}-{commit}" if commit else stamp


def _proc_start(pid: int) -> str:
    """The kernel's start time of ``pid`` (Linux), so a reused pid is not taken for the writer."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22: starttime, after the (comm) field


def owner_tags() -> dict[str, str]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "t2i.pid": str(pid), "t2i.pid_start": _proc_start(pid)}


def _owner_alive(tags: Mapping[str, str]) -> bool:
    pid = int(tags.get("t2i.pid", "0") or 0)
    if not pid_alive(pid):
        return False
    started = tags.get("t2i.pid_start", "")
    return not started or _proc_start(pid) in ("", started)


def close_dead_runs(client: Any, experiment_id: str) -> list[str]:
    """Mark KILLED the RUNNING runs of ``experiment_id`` whose process, on this host, is gone.

    Runs of other hosts, and runs without a ``t2i.pid`` tag, are left alone (nothing to check).
    Returns the run ids it closed. Errors are the caller's (it has just reached the store).
    """
    host = socket.gethostname().replace("'", "")
    runs = client.search_runs([experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.host = '{host}'",
                              max_results=200)
    closed = []
    for run in runs:
        tags = run.data.tags
        if "t2i.pid" not in tags or _owner_alive(tags):
            continue
        reason = f"process {tags['t2i.pid']} on {host} ended without closing the run (killed or crashed)"
        client.set_tag(run.info.run_id, "t2i.end_reason", reason)
        client.set_terminated(run.info.run_id, status="KILLED")
        print(f"MLflow: marked run {run.info.run_id} ({run.info.run_name}) KILLED: {reason}", file=sys.stderr)
        closed.append(run.info.run_id)
    return closed
