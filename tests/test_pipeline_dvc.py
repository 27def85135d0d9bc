"""The whole DAG for real: `dvc repro`, a no-op second repro, `dvc exp run -S`, typos, remotes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline_repo import make_project, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_project(tmp_path_factory.mktemp("project"))
    run(["dvc", "repro"], root)
    return root


def test_repro_writes_every_contract(project: Path) -> None:
    table = pd.read_parquet(project / "data/prepared/captions.parquet")
    images = np.load(project / "data/prepared/images.npy", mmap_mode="r")
    embeddings = np.load(project / "data/embeddings/embeddings.npy")
    assert images.dtype == np.uint8 and images.shape[1:] == (32, 32, 3)
    assert len(embeddings) == len(table) and embeddings.dtype == np.float32
    assert set(table["split"]) == {"train", "test", "unseen", "novel_wording"}
    assert (project / "models/generator.safetensors").stat().st_size > 0
    run_info = json.loads((project / "models/mlflow_run.json").read_text(encoding="utf-8"))
    assert run_info["run_id"]
    metrics = json.loads((project / "eval/metrics.json").read_text(encoding="utf-8"))
    assert "test" in metrics and "unseen" in metrics
    shown = run(["dvc", "metrics", "show", "--json"], project).stdout
    assert "eval/metrics.json" in shown


def test_second_repro_is_a_noop(project: Path) -> None:
    out = run(["dvc", "repro"], project).stdout
    assert "Data and pipelines are up to date" in out, out
    status = run(["dvc", "status"], project).stdout
    assert "up to date" in status, status


def test_exp_run_with_size_override(project: Path) -> None:
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "pipeline outputs", "--allow-empty"], project)
    run(["dvc", "exp", "run", "-S", "ingest.num_images=80", "-n", "smaller"], project)
    table = pd.read_parquet(project / "data/prepared/captions.parquet")
    assert table["image_index"].max() < 80
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    assert "smaller" in json.dumps(shown)


def test_typo_key_fails_naming_it(project: Path) -> None:
    proc = run(["dvc", "exp", "run", "-S", "ingest.num_imags=80"], project, check=False)
    assert proc.returncode != 0
    assert "num_imags" in proc.stdout + proc.stderr


def test_remote_round_trip(project: Path, tmp_path: Path) -> None:
    """Outputs pushed to a directory remote come back byte-identical in a fresh clone."""
    remote = tmp_path / "remote"
    run(["git", "checkout", "-q", "--", "."], project)
    run(["dvc", "checkout", "--force"], project)
    run(["dvc", "remote", "add", "-d", "shared", str(remote)], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "remote", "--allow-empty"], project)
    run(["dvc", "push"], project)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    run(["dvc", "pull"], clone)
    for rel in ["data/prepared/images.npy", "data/embeddings/embeddings.npy", "models/generator.safetensors"]:
        assert (clone / rel).read_bytes() == (project / rel).read_bytes(), rel
    assert "up to date" in run(["dvc", "status"], clone).stdout


def test_params_mistake_keeps_every_output(project: Path) -> None:
    """A bad train value is reported before DVC removes the model, the plots or the checkpoints."""
    # The earlier tests' `dvc exp run` can leave the experiment's checkpoints/ (a persist, uncached
    # out) in the workspace, which makes `train` stale on its own; settle that first.
    run(["dvc", "repro"], project)
    params_path = project / "params.yaml"
    good = params_path.read_text(encoding="utf-8")
    kept = ["models/generator.safetensors", "plots/train/losses.csv", "eval/metrics.json"]
    before = {rel: (project / rel).read_bytes() for rel in kept}
    try:
        params_path.write_text(good.replace("steps: 4", "steps: abc", 1), encoding="utf-8")
        proc = run(["dvc", "repro"], project, check=False)
        assert proc.returncode != 0
        out = proc.stdout + proc.stderr
        assert "train.steps" in out and "Traceback" not in out, out
        for rel, data in before.items():
            assert (project / rel).read_bytes() == data, f"{rel} was removed or changed"
    finally:
        params_path.write_text(good, encoding="utf-8")
    rerun = run(["dvc", "repro"], project).stdout  # only the check itself reruns
    assert "Running stage 'train'" not in rerun and "Running stage 'ingest'" not in rerun, rerun
    assert (project / kept[0]).read_bytes() == before[kept[0]]
