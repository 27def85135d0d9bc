"""Bring your own data: a folder of images plus a captions file (``ingest.captions_file``).

    <root>/<captions_file>   CSV with a header, or JSONL (".jsonl"), one caption per row:
                             image (path relative to root), caption; optional split, class
    <root>/<any images>

An image may have several rows (several captions). Without a ``split`` column, images are split
into train/test by ``ingest.test_fraction`` with ``ingest.seed``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from t2i.config import IngestParams
from t2i.data.assemble import Item, assemble, require
from t2i.data.readers import Dataset, IngestError
from t2i.data.textio import Skip, clean_caption, skip

IMAGE_KEYS = ("image", "image_path", "file", "path", "filename")
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


def read(params: IngestParams) -> Dataset:
    root = require(params.dataset_root(), "the dataset folder", "set ingest.root")
    hint = "set ingest.captions_file to a CSV (image,caption) or JSONL file inside ingest.root"
    path = require(root / params.captions_file, f"the captions file {params.captions_file!r}", hint)
    rows = _rows(path)
    if not rows:
        raise IngestError(f"{path} has no caption rows")
    image_key, caption_key = _key(rows[0], IMAGE_KEYS, path), _key(rows[0], CAPTION_KEYS, path)
    items: dict[str, Item] = {}
    for number, row in enumerate(rows, start=2 if path.suffix.lower() == ".csv" else 1):
        rel = str(row.get(image_key) or "").strip()
        if not rel:
            raise IngestError(f"{path}: row {number} names no image")
        item = items.setdefault(rel, Item(path=root / rel, name=rel, captions=[],
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
    return assemble(present, params, root, extra_skips=missing)
