"""What metrics draw images from, which captions they ask for, and with which seeds.

Metrics never touch a generator directly: they ask an ``ImageSource`` for images of captions
with given seeds. The stage passes ``GenerationPipeline.generate_with_seeds`` (t2i/pipeline.py);
tests pass real images (an oracle), noise, or a bag-of-words stand-in, which is how each metric
is shown to be able to fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import pandas as pd


class ImageSource(Protocol):
    def __call__(self, captions: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        """uint8 (n, R, R, 3), image i drawn for captions[i] with noise seed seeds[i]."""
        ...


SWAP_COLUMNS = ["caption_a", "caption_b", "a_petal", "a_stem", "novelty"]


def swap_pairs(rows: pd.DataFrame, limit: int) -> pd.DataFrame:
    """Caption pairs that differ only by exchanging the petal and stem colours.

    One pair per row (up to ``limit``, in row order): ``caption_a`` is the row's own caption,
    ``caption_b`` its ``swap_caption`` (the grammar renders it from the caption's own record; the
    probe set's are written by hand), so both hold the same words in another order. Columns
    ``a_petal``/``a_stem`` hold the truth for caption a (caption b's is the reverse); ``novelty``
    is the row's (empty where the table has none). Empty without a ``swap_caption`` column.
    """
    if not {"swap_caption", "petal_color", "stem_color"} <= set(rows.columns):
        return pd.DataFrame(columns=SWAP_COLUMNS)
    novelty = rows["novelty"] if "novelty" in rows.columns else pd.Series("", index=rows.index)
    out = []
    for caption, swapped, petal, stem, nov in zip(rows["caption"], rows["swap_caption"], rows["petal_color"],
                                                  rows["stem_color"], novelty.fillna("")):
        if petal is None or stem is None or pd.isna(petal) or pd.isna(stem) or petal == stem:
            continue  # nothing to swap
        if not isinstance(swapped, str) or not swapped.strip() or swapped == caption:
            continue
        out.append({"caption_a": caption, "caption_b": swapped, "a_petal": str(petal), "a_stem": str(stem),
                    "novelty": str(nov)})
        if len(out) >= limit:
            break
    return pd.DataFrame(out, columns=SWAP_COLUMNS)


def split_seeds(seed: int, split: str, n: int) -> np.ndarray:
    """Per-image noise seeds for one split's evaluation captions, fixed by ``evaluate.seed``."""
    salt = sum(map(ord, split))
    return np.random.default_rng([seed, salt]).integers(0, 2**31 - 1, n)


def novelty_key(novelty: str) -> str:
    """A ``novelty`` value as a metric-name part: "frame+words" -> "frame_words" (MLflow metric
    names allow no "+")."""
    return novelty.replace("+", "_")
