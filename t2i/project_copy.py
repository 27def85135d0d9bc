"""A throwaway copy of this project (own git repo, own DVC workspace) with params overridden.

Used by the end-to-end tests and by benchmarks/order_experiment.py: each copy runs the real
`dvc repro` without touching the user's workspace. A shared DVC cache lets copies reuse each
other's stage results (DVC's run cache), so ingest and embed run once across copies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from t2i.nesting import nest as dotted_to_nested  # {"train.seed": 1} -> {"train": {"seed": 1}}; the name benchmarks use

SKIP_PREFIXES = ("data/prepared", "data/embeddings", "models/", "checkpoints/", "eval/", "plots/")


def project_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for DVC in a copy: `python` is this interpreter, telemetry off."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("DVC_EXP_NAME", None)
    env.update({"DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true"})
    env.setdefault("GIT_AUTHOR_NAME", "t2i")
    env.setdefault("GIT_COMMITTER_NAME", "t2i")
    env.setdefault("GIT_AUTHOR_EMAIL", "t2i@localhost")
    env.setdefault("GIT_COMMITTER_EMAIL", "t2i@localhost")
    env.update(extra or {})
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, check: bool = True,
        timeout: float | None = None, capture: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env or project_env(), text=True, timeout=timeout,
                          capture_output=capture)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}) in {cwd}:\n"
                           f"{proc.stdout or ''}\n{proc.stderr or ''}")
    return proc


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def make_project(source: Path, dest: Path, params: dict[str, Any] | None = None,
                 cache_dir: Path | None = None) -> Path:
    """Copy the source files git tracks (or would track) into dest, override params, commit."""
    listed = run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], source).stdout
    for rel in filter(None, listed.split("\0")):
        src = source / rel
        if rel.startswith(SKIP_PREFIXES) or not src.is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    base = yaml.safe_load((source / "params.yaml").read_text(encoding="utf-8"))
    (dest / "params.yaml").write_text(yaml.safe_dump(merge(base, params or {}), sort_keys=False),
                                      encoding="utf-8")
    run(["git", "init", "-q", "-b", "main"], dest)
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        run(["dvc", "cache", "dir", str(cache_dir)], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "t2i project copy"], dest)
    return dest
