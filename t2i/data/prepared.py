"""The prepared format every reader produces and every later stage reads (docs/architecture.md).

``data/prepared/`` holds ``captions.parquet`` (one row per caption), ``images.npy`` (uint8
``(N, R, R, 3)``, memory-mappable) and ``manifest.json``. It is written into a temporary sibling
directory and renamed over the target at the end, so a failed or interrupted ingest never leaves
a half-written ``data/prepared`` that a later stage would silently train on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from t2i.atomic import atomic_dir

CAPTIONS_FILE = "captions.parquet"
IMAGES_FILE = "images.npy"
MANIFEST_FILE = "manifest.json"
SPLITS = ("train", "test", "unseen", "novel_wording", "probe")
REQUIRED_COLUMNS = ("image_index", "split", "caption", "class")


class PreparedError(ValueError):
    """A prepared directory (or what is about to be written to one) breaks the contract."""


@dataclass(frozen=True)
class Prepared:
    table: pd.DataFrame  # one row per caption, REQUIRED_COLUMNS (+ ground truth for synthetic)
    images: np.ndarray  # (N, R, R, 3) uint8, read-only memmap
    manifest: dict[str, Any]
    path: Path

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])

    def split(self, name: str) -> pd.DataFrame:
        """Caption rows of one split (``train``, ``test`` or ``unseen``)."""
        if name not in SPLITS:
            raise PreparedError(f"unknown split {name!r}; expected one of {SPLITS}")
        return self.table[self.table["split"] == name]


def count_splits(table: pd.DataFrame, n_images: int) -> dict[str, Any]:
    """The manifest's ``counts``: images, captions, and captions/images per split."""
    counts: dict[str, Any] = {"images": int(n_images), "captions": int(len(table))}
    for split in SPLITS:
        rows = table[table["split"] == split]
        counts[split] = {"captions": int(len(rows)), "images": int(rows["image_index"].nunique())}
    return counts


def _check(table: pd.DataFrame, images: np.ndarray) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise PreparedError(f"caption table lacks columns {missing}; has {list(table.columns)}")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise PreparedError(f"images must be uint8 (N, R, R, 3), got {images.dtype} {images.shape}")
    if images.shape[1] != images.shape[2]:
        raise PreparedError(f"images must be square, got {images.shape[1]}x{images.shape[2]}")
    index = table["image_index"].to_numpy()
    if len(index) and (index.min() < 0 or index.max() >= len(images)):
        raise PreparedError(
            f"image_index out of range [0, {len(images)}): min {index.min()}, max {index.max()}"
        )
    bad_splits = sorted(set(table["split"]) - set(SPLITS))
    if bad_splits:
        raise PreparedError(f"unknown split values {bad_splits}; expected {SPLITS}")


def write_prepared(
    out_dir: Path | str,
    table: pd.DataFrame,
    images: np.ndarray,
    manifest: dict[str, Any],
) -> Path:
    """Write the prepared format atomically and return ``out_dir``.

    ``manifest`` should carry ``source``, ``dataset`` and ``skipped``; ``resolution`` and
    ``counts`` are computed here from what is actually written, so they cannot disagree with it.
    """
    out_dir = Path(out_dir)
    _check(table, images)
    table = table.reset_index(drop=True).copy()
    table["image_index"] = table["image_index"].astype("int64")
    # Fixed key order so a human reading manifest.json sees the summary first.
    manifest = {
        "source": manifest.get("source"),
        "dataset": manifest.get("dataset"),
        "resolution": int(images.shape[1]),
        "counts": count_splits(table, len(images)),
        "skipped": list(manifest.get("skipped", [])),
        **{k: v for k, v in manifest.items() if k not in ("source", "dataset", "skipped")},
    }
    with atomic_dir(out_dir) as tmp:
        with _naming(out_dir / CAPTIONS_FILE):
            table.to_parquet(tmp / CAPTIONS_FILE, index=False)
        with _naming(out_dir / IMAGES_FILE):
            _save_npy(tmp / IMAGES_FILE, images)
        with _naming(out_dir / MANIFEST_FILE):
            (tmp / MANIFEST_FILE).write_text(
                json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )
    return out_dir


def _save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` through a plain file write: numpy's own (``tofile``) reports a full disk as an
    OSError without an errno ("N requested and M written"); a write() says ENOSPC."""
    array = np.ascontiguousarray(array)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(array))
        f.write(memoryview(array).cast("B"))


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    """An OSError without a file name (np.save, pyarrow on a full disk) gets ``path``: the
    message then names the output, not a hidden temp directory or nothing at all."""
    try:
        yield
    except OSError as exc:
        if not exc.filename:
            exc.filename = str(path)
        raise


def load_prepared(path: Path | str) -> Prepared:
    """Read ``data/prepared`` (images memory-mapped, read-only)."""
    path = Path(path)
    hint = "run the ingest stage first: `dvc repro ingest` or `python -m stages.ingest`"
    if not path.is_dir():
        raise FileNotFoundError(f"prepared directory {path} not found; {hint}")
    for name in (CAPTIONS_FILE, IMAGES_FILE, MANIFEST_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name} is missing (incomplete prepared dir); {hint}")
    table = pd.read_parquet(path / CAPTIONS_FILE)
    images = np.load(path / IMAGES_FILE, mmap_mode="r")  # (N, R, R, 3) uint8
    manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
    try:
        _check(table, images)
    except PreparedError as exc:
        raise PreparedError(f"{path}: {exc}") from None
    return Prepared(table=table, images=images, manifest=manifest, path=path)
