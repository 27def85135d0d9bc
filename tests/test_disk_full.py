"""A full disk is one line naming the file, never a traceback or a signal; the previous output stays.

Each stage runs as a real process with its project directory on a small tmpfs that is filled up
(mounting needs root; the tests skip, saying so, where the machine does not allow it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs at tmp_path/disk, unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` up to ``leave`` free bytes."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    with open(disk / "filler", "wb") as f:
        os.posix_fallocate(f.fileno(), 0, max(0, free - leave))


def run(module: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("T2I_DEBUG", None)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def one_line_error(proc: subprocess.CompletedProcess, what: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"{what}: error:")]
    assert len(lines) == 1, proc.stderr
    assert "no space left" in lines[0]
    return lines[0]


def test_ingest_on_a_full_disk_names_the_file(small_disk: Path) -> None:
    params = {"ingest": {"num_images": 400, "captions_per_image": 2, "resolution": 64, "workers": 1}}
    (small_disk / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    fill(small_disk, 1 << 20)  # 1 MiB free: images.npy needs 4.9 MB
    line = one_line_error(run("stages.ingest", small_disk), "ingest")
    assert "data/prepared/" in line
    assert sorted(p.name for p in (small_disk / "data").iterdir()) == []  # no half output, no temp dir


def test_embed_on_a_full_disk_is_an_error_not_sigbus(small_disk: Path) -> None:
    from test_embed_stage import write_table

    write_table(small_disk / "data" / "prepared", [f"a flower number {i}" for i in range(3000)])
    (small_disk / "params.yaml").write_text(yaml.safe_dump({"embed": {"encoder": "bow", "device": "cpu"}}))
    fill(small_disk, 1 << 20)  # embeddings.npy needs 6 MB (3000 x 512 float32)
    proc = run("stages.embed", small_disk)
    assert proc.returncode != -7, "killed by SIGBUS"
    line = one_line_error(proc, "embed")
    assert "embeddings.npy" in line
    assert sorted(p.name for p in (small_disk / "data").iterdir()) == ["prepared"]


def test_train_on_a_full_disk_keeps_the_previous_model(small_disk: Path) -> None:
    from test_train_fixtures import make_dataset

    make_dataset(small_disk, n_images=16)
    train = dict(steps=4, batch_size=8, checkpoint_every=2, sample_every=1000, log_every=1, precision="fp32",
                 model=dict(z_dim=8, g_width=32, d_width=16, attention=[8], caption_code=False), loss=dict(matcher_weight=0.0))
    (small_disk / "params.yaml").write_text(yaml.safe_dump({"train": train, "train_runtime": {"threads": 1}}))
    fill(small_disk, 64 << 10)  # room for the lock file, not for a checkpoint
    proc = run("stages.train", small_disk, "--no-tracking")
    one_line_error(proc, "train")
    assert not (small_disk / "models").exists()
