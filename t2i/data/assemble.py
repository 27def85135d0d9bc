"""Shared tail of every real-dataset reader: subset, decode, drop bad items, check, tabulate.

A reader only lists its images with their captions, split and class (``Item``); this module
turns that list into a ``Dataset``: ``ingest.max_images`` picks a seeded subset, images decode in
parallel, unreadable images and images left without any caption are skipped with their reason,
and more than ``ingest.max_bad_fraction`` bad images or bad captions fails the stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from t2i.config import IngestParams
from t2i.data.imageio import Box, iter_images
from t2i.data.readers import Dataset, IngestError
from t2i.data.textio import Skip, skip


@dataclass
class Item:
    path: Path  # where to read the image
    name: str  # how the image appears in manifest.json: relative to the dataset root
    captions: list[str]
    split: str  # train | test
    cls: str = ""
    box: Box | None = None
    caption_skips: list[Skip] = field(default_factory=list)  # this image's bad captions
    captions_considered: int = 0  # usable + bad captions: denominator of the bad fraction


def require(path: Path, what: str, hint: str = "") -> Path:
    """``path`` if it exists, else an error naming what was expected where."""
    if not path.exists():
        raise IngestError(f"expected {what} at {path}, not found" + (f"; {hint}" if hint else ""))
    return path


def subset(items: list[Item], params: IngestParams) -> list[Item]:
    """At most ``max_images`` items, a seeded random choice kept in the reader's order."""
    if params.max_images is None or params.max_images >= len(items):
        return items
    keep = np.random.default_rng([params.seed, 4]).choice(len(items), params.max_images, replace=False)
    return [items[i] for i in sorted(keep)]


def _check_fraction(kind: str, bad: list[Skip], total: int, limit: float) -> None:
    if total and len(bad) / total > limit:
        examples = "; ".join(f"{s['item']}: {s['reason']}" for s in bad[:5])
        raise IngestError(
            f"{len(bad)} of {total} {kind} are bad ({len(bad) / total:.1%} > "
            f"ingest.max_bad_fraction {limit:.1%}); e.g. {examples}"
        )


def assemble(items: list[Item], params: IngestParams, root: Path, extra_skips: list[Skip] | None = None) -> Dataset:
    """Decode ``items`` and build the caption table, images and manifest of a real dataset.

    ``extra_skips`` are problems found before items existed (e.g. a caption row naming a file
    that is not there); they count as bad images.
    """
    items = subset(items, params)
    if not items:
        raise IngestError(f"no images found in {root} for dataset {params.dataset!r}")
    boxes = [it.box for it in items] if any(it.box for it in items) else None
    r = params.resolution
    images = np.empty((len(items), r, r, 3), np.uint8)  # (N, R, R, 3), good images packed first
    bad_images: list[Skip] = list(extra_skips or [])
    bad_captions: list[Skip] = [s for it in items for s in it.caption_skips]
    uncaptioned: list[Skip] = []
    rows: list[dict[str, object]] = []
    n_good = 0
    for item, result in zip(items, iter_images([it.path for it in items], r, params.workers, boxes)):
        if isinstance(result, str):
            bad_images.append(skip(item.name, result))
        elif not item.captions:
            uncaptioned.append(skip(item.name, "no usable caption"))
        else:
            rows += [{"image_index": n_good, "split": item.split, "caption": c, "class": item.cls}
                     for c in item.captions]
            images[n_good] = result
            n_good += 1
    n_images = len(items) + len(extra_skips or [])
    _check_fraction("images", bad_images, n_images, params.max_bad_fraction)
    _check_fraction("captions", bad_captions, sum(it.captions_considered for it in items),
                    params.max_bad_fraction)
    if not n_good:
        raise IngestError(f"no usable image with a caption in {root}")
    table = pd.DataFrame(rows, columns=["image_index", "split", "caption", "class"])
    manifest = {
        "source": str(root),
        "dataset": params.dataset,
        "skipped": bad_images + uncaptioned + bad_captions,
    }
    return Dataset(table=table, images=images[:n_good], manifest=manifest)  # a view, no copy
