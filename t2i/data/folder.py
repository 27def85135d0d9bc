"""Bring your own data: a folder of images plus a captions file (``ingest.captions_file``).

    <root>/<captions_file>   CSV with a header, or JSONL (".jsonl"), one caption per row:
                             image (path relative to root), caption; optional split, class
    <root>/<any images>

An image may have several rows (several captions). Without a ``split`` column, images are split
into train/test by ``ingest.test_fraction`` with ``ingest.seed``.

Only files inside the root are read: a row naming ``../x.png``, an absolute path, or a symlink
that resolves outside the root is skipped and listed in the manifest with the reason (a captions
file from elsewhere must not pull arbitrary files into the training set). Images under the root
that no row names are listed in the manifest too ("no caption row"), without failing the stage.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from t2i.config import IngestParams
from t2i.data.assemble import Item, assemble, require
from t2i.data.readers import Dataset, IngestError
from t2i.data.textio import Skip, clean_caption, skip

IMAGE_KEYS = ("image", "image_path", "file", "path", "filename")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
CAPTION_KEYS = ("caption", "text")


def _rows(path: Path) -> list[dict[str, str]]:
    # Invalid bytes survive as surrogates and are rejected per caption by clean_caption.
    text = path.read_bytes().decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise IngestError(f"{path}:{number}: not valid JSON: {exc}") from None
        return rows
    return list(csv.DictReader(io.StringIO(text, newline="")))


def _key(row: dict[str, str], keys: tuple[str, ...], path: Path) -> str:
    for key in keys:
        if key in row:
            return key
    raise IngestError(f"{path}: needs a column named one of {keys}; has {sorted(row)}")


def _inside(root_real: Path, rel: str) -> Path | None:
    """The real path of ``root/rel`` if it lies inside the root (symlinks resolved), else None."""
    real = (root_real / rel).resolve()  # an absolute ``rel`` replaces the root: caught below
    return real if real.is_relative_to(root_real) else None


def _uncaptioned(root_real: Path, named: set[Path], named_rel: set[str], captions_file: str) -> list[Skip]:
    """Images under the root (not following directory symlinks) that no caption row names."""
    found: list[Skip] = []
    for folder, dirs, files in os.walk(root_real):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            rel = path.relative_to(root_real).as_posix()
            if path.suffix.lower() in IMAGE_SUFFIXES and rel not in named_rel and path.resolve() not in named:
                found.append(skip(rel, f"no caption row in {captions_file}"))
    return found


def read(params: IngestParams) -> Dataset:
    root = require(params.dataset_root(), "the dataset folder", "set ingest.root")
    hint = "set ingest.captions_file to a CSV (image,caption) or JSONL file inside ingest.root"
    path = require(root / params.captions_file, f"the captions file {params.captions_file!r}", hint)
    rows = _rows(path)
    if not rows:
        raise IngestError(f"{path} has no caption rows")
    image_key, caption_key = _key(rows[0], IMAGE_KEYS, path), _key(rows[0], CAPTION_KEYS, path)
    root_real = root.resolve()
    items: dict[str, Item] = {}
    outside: dict[str, Skip] = {}
    for number, row in enumerate(rows, start=2 if path.suffix.lower() == ".csv" else 1):
        rel = str(row.get(image_key) or "").strip()
        if not rel:
            raise IngestError(f"{path}: row {number} names no image")
        real = _inside(root_real, rel)
        if real is None:
            outside.setdefault(rel, skip(rel, f"outside ingest.root (resolves to {(root_real / rel).resolve()}); not read"))
            continue
        item = items.setdefault(rel, Item(path=real, name=rel, captions=[],
                                          split=str(row.get("split") or ""), cls=str(row.get("class") or "")))
        item.captions_considered += 1
        caption, bad = clean_caption(row.get(caption_key), f"{params.captions_file}:{number}")
        if bad:
            item.caption_skips.append(bad)
        else:
            item.captions.append(caption)
    missing: list[Skip] = [skip(it.name, "file not found") for it in items.values() if not it.path.is_file()]
    present = [it for it in items.values() if it.path.is_file()]
    bad_splits = sorted({it.split for it in present} - {"", "train", "test"})
    if bad_splits:
        raise IngestError(f"{path}: split values must be train or test, got {bad_splits}")
    # An exact test count (at least one image), as for the synthetic data.
    n_test = max(1, round(params.test_fraction * len(present)))
    test = np.zeros(len(present), bool)
    test[np.random.default_rng([params.seed, 3]).permutation(len(present))[:n_test]] = True
    for item, is_test in zip(present, test):
        item.split = item.split or ("test" if is_test else "train")
    ds = assemble(present, params, root, extra_skips=list(outside.values()) + missing)
    # Listed, not counted as bad: a folder may well hold images the captions file leaves out.
    named_rel = {os.path.normpath(r).replace(os.sep, "/") for r in [*items, *outside]}
    ds.manifest["skipped"] += _uncaptioned(root_real, {it.path for it in items.values()}, named_rel, params.captions_file)
    return ds
