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


def swap_pairs(rows: pd.DataFrame, limit: int) -> pd.DataFrame:
    """Caption pairs that differ only by exchanging the petal and stem colours.

    One pair per row (up to ``limit``): ``caption_a`` is the row's own caption, ``caption_b`` the
    same template with the two colours swapped. Columns ``a_petal``/``a_stem`` hold the truth for
    caption a (caption b's is the reverse). Needs the synthetic ground truth; empty otherwise.
    """
    cols = ["caption_a", "caption_b", "a_petal", "a_stem"]
    if not {"template", "petal_color", "stem_color"} <= set(rows.columns):
        return pd.DataFrame(columns=cols)
    from t2i.data.templates import render_caption, swap_colors

    out = []
    for rec in rows.to_dict("records"):
        if rec["petal_color"] == rec["stem_color"]:
            continue  # nothing to swap
        swapped = render_caption(int(rec["template"]), swap_colors(rec))
        if swapped == rec["caption"]:
            continue
        out.append({"caption_a": rec["caption"], "caption_b": swapped,
                    "a_petal": rec["petal_color"], "a_stem": rec["stem_color"]})
        if len(out) >= limit:
            break
    return pd.DataFrame(out, columns=cols)


def split_seeds(seed: int, split: str, n: int) -> np.ndarray:
    """Per-image noise seeds for one split's evaluation captions, fixed by ``evaluate.seed``."""
    salt = sum(map(ord, split))
    return np.random.default_rng([seed, salt]).integers(0, 2**31 - 1, n)
