"""``python -m stages.ingest`` as DVC runs it, and the prepared format's atomic write and load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from t2i.data.prepared import PreparedError, load_prepared, write_prepared

REPO = Path(__file__).resolve().parents[1]


def run_stage(cwd: Path, ingest: dict[str, object]) -> subprocess.CompletedProcess[str]:
    (cwd / "params.yaml").write_text(yaml.safe_dump({"ingest": ingest}), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "stages.ingest"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def folder_dataset(root: Path, good: int, corrupt: int) -> list[str]:
    """``good`` JPEGs with two captions each plus ``corrupt`` broken files; returns the broken names."""
    rows = []
    for i in range(good):
        name = f"img/{i:03d}.jpg"
        (root / "img").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), (i * 4 % 256, 80, 160)).save(root / name)
        rows += [(name, f"photo {i}"), (name, f"another caption of photo {i}")]
    broken = []
    for j in range(corrupt):
        name = f"img/broken_{j}.jpg"
        kind = j % 3
        if kind == 0:  # truncated JPEG
            Image.new("RGB", (64, 64), (200, 10, 10)).save(root / name)
            (root / name).write_bytes((root / name).read_bytes()[:300])
        elif kind == 1:  # not an image at all
            (root / name).write_text("hello", encoding="utf-8")
        else:  # empty file
            (root / name).write_bytes(b"")
        rows.append((name, f"broken {j}"))
        broken.append(name)
    pd.DataFrame(rows, columns=["image", "caption"]).to_csv(root / "captions.csv", index=False)
    return broken


def test_folder_with_three_corrupt_images_lists_exactly_those(tmp_path: Path) -> None:
    broken = folder_dataset(tmp_path / "mine", good=60, corrupt=3)
    result = run_stage(tmp_path, {"dataset": "folder", "root": "mine", "workers": 2})
    assert result.returncode == 0, result.stderr
    assert "60 images" in result.stdout and "3 skipped" in result.stdout
    prepared = load_prepared(tmp_path / "data" / "prepared")
    assert sorted(s["item"] for s in prepared.manifest["skipped"]) == broken
    assert all(s["reason"].startswith("unreadable image") for s in prepared.manifest["skipped"])
    assert prepared.images.shape == (60, 32, 32, 3)
    assert len(prepared.table) == 120 and prepared.manifest["counts"]["images"] == 60
    assert prepared.manifest["source"] == "mine"  # as configured: no machine-specific path
    # Rows point at their own pixels: photo i was drawn with red = 4 i.
    row = prepared.table.loc[prepared.table["caption"] == "photo 37"].iloc[0]
    assert abs(int(prepared.images[row["image_index"]][..., 0].mean()) - 148) <= 3


def test_over_bad_fraction_fails_with_summary(tmp_path: Path) -> None:
    folder_dataset(tmp_path / "mine", good=60, corrupt=4)
    result = run_stage(tmp_path, {"dataset": "folder", "root": "mine", "workers": 1})
    assert result.returncode == 2
    assert "4 of 64 images are bad" in result.stderr
    assert not (tmp_path / "data" / "prepared").exists()


def test_missing_dataset_fails_naming_the_path(tmp_path: Path) -> None:
    result = run_stage(tmp_path, {"dataset": "oxford102"})
    assert result.returncode == 2
    assert "data/raw/oxford102" in result.stderr and "Traceback" not in result.stderr


def test_synthetic_stage_writes_the_contract(tmp_path: Path) -> None:
    result = run_stage(tmp_path, {"num_images": 64, "captions_per_image": 3, "resolution": 64})
    assert result.returncode == 0, result.stderr
    prepared = load_prepared(tmp_path / "data" / "prepared")
    assert prepared.images.shape == (64, 64, 64, 3) and isinstance(prepared.images, np.memmap)
    assert prepared.table["image_index"].dtype == np.int64
    counts = prepared.manifest["counts"]
    assert counts["captions"] == 192 == sum(counts[s]["captions"] for s in ("train", "test", "unseen", "novel_wording"))
    assert prepared.manifest["resolution"] == 64 and prepared.manifest["skipped"] == []
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["prepared"]  # no temp dirs left


def _table(n: int) -> pd.DataFrame:
    return pd.DataFrame({"image_index": range(n), "split": ["train"] * n,
                         "caption": [f"é {i}" for i in range(n)], "class": ["x"] * n})


def test_failed_write_keeps_the_previous_result(tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    images = np.zeros((3, 8, 8, 3), np.uint8)  # (N, R, R, 3)
    write_prepared(out, _table(3), images, {"source": "a", "dataset": "folder"})
    unwritable = _table(3).assign(extra=[object(), 1, "x"])  # pyarrow cannot store this column
    with pytest.raises(Exception, match="extra|object|Conversion"):
        write_prepared(out, unwritable, images + 1, {"source": "b", "dataset": "folder"})
    again = load_prepared(out)
    assert again.manifest["source"] == "a" and int(again.images.max()) == 0
    assert again.table["caption"].tolist() == ["é 0", "é 1", "é 2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]


def test_write_rejects_broken_contract(tmp_path: Path) -> None:
    with pytest.raises(PreparedError, match="image_index out of range"):
        write_prepared(tmp_path / "p", _table(4), np.zeros((3, 8, 8, 3), np.uint8), {})
    with pytest.raises(PreparedError, match="uint8"):
        write_prepared(tmp_path / "p", _table(3), np.zeros((3, 8, 8, 3), np.float32), {})
    assert not (tmp_path / "p").exists()


def test_load_names_the_missing_file(tmp_path: Path) -> None:
    out = write_prepared(tmp_path / "prepared", _table(2), np.zeros((2, 8, 8, 3), np.uint8), {})
    (out / "images.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"images\.npy is missing"):
        load_prepared(out)
    with pytest.raises(FileNotFoundError, match="prepared directory .* not found"):
        load_prepared(tmp_path / "nothing")
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"]["train"] == {"captions": 2, "images": 2}
