"""Build a throwaway copy of this project (own git repo, own DVC) with tiny params.

Shared by the end-to-end tests: a real `dvc repro` of the real stages, only smaller.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

# Small enough that the whole DAG runs in about a minute on 2 cores, large enough that every
# stage does its real work (every split non-empty, a checkpoint written, metrics computed).
TINY_PARAMS = {
    "ingest": {"num_images": 96, "captions_per_image": 2, "test_fraction": 0.2, "unseen_fraction": 0.2},
    "train": {"steps": 4, "batch_size": 8, "checkpoint_every": 2, "sample_every": 2, "log_every": 1},
    "evaluate": {"max_captions": 8, "noise_samples": 2, "classifier_steps": 5,
                 "diversity_captions": 2, "diversity_samples": 2, "rprecision_candidates": 4},
}


def project_env(home: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MLFLOW_TRACKING_URI", None)  # each copy gets its own SQLite store
    env.pop("DVC_EXP_NAME", None)
    env["DVC_NO_ANALYTICS"] = "1"
    env["DO_NOT_TRACK"] = "true"
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "t2i-tests"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "tests@t2i.invalid"
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=project_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def make_project(dest: Path, params: dict | None = None) -> Path:
    """Copy the project's source (what git tracks or would track) into dest and commit it."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    skip = ("data/prepared", "data/embeddings", "models/", "checkpoints/", "eval/", "plots/")
    for rel in filter(None, listed):
        src = REPO / rel
        if rel.startswith(skip) or not src.is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    base = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    (dest / "params.yaml").write_text(
        yaml.safe_dump(merge(base, params if params is not None else TINY_PARAMS), sort_keys=False),
        encoding="utf-8",
    )
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "test project"], dest)
    return dest
