"""Tiny-params copies of this project for the end-to-end tests (see t2i/project_copy.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from t2i import project_copy

REPO = Path(__file__).resolve().parents[1]

# Small enough that the whole DAG runs in about a minute on 2 cores, large enough that every
# stage does its real work (every split non-empty, a checkpoint written, metrics computed).
TINY_PARAMS = {
    "ingest": {"num_images": 96, "captions_per_image": 2, "test_fraction": 0.2, "unseen_fraction": 0.2},
    "matcher": {"steps": 5},
    "train": {"steps": 4, "batch_size": 8, "checkpoint_every": 2, "sample_every": 2, "log_every": 1},
    "evaluate": {"max_captions": 8, "noise_samples": 2, "classifier_steps": 5,
                 "diversity_captions": 2, "diversity_samples": 2, "rprecision_candidates": 4},
}


def project_env() -> dict[str, str]:
    env = project_copy.project_env()
    env.pop("MLFLOW_TRACKING_URI", None)  # each copy gets its own SQLite store
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=project_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def make_project(dest: Path, params: dict | None = None) -> Path:
    return project_copy.make_project(REPO, dest, TINY_PARAMS if params is None else params)
