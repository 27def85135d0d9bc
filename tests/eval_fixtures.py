"""Shared pieces of the eval tests: a small synthetic dataset and image sources that know the
truth (an oracle that draws what the caption says, a bag-of-words stand-in, noise).

The sentence vectors here are a stand-in for USE that keeps roles apart (one-hot per role and
value, plus a little per-caption noise), so the tests run without loading any encoder. The
oracles know the hand-written probe captions too (t2i/data/probe_captions.csv).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from t2i.config import EvaluateParams, IngestParams
from t2i.data import synthetic
from t2i.data.flowers import ATTRIBUTES, COLORS, PETAL_COUNTS, PETAL_SHAPES, Flower, draw_flower
from t2i.data.templates import parse_caption, swap_colors

RES = 32
PARAMS = EvaluateParams(max_captions=160, classifier_steps=300, diversity_captions=4,
                        diversity_samples=8, device="cpu")


def dataset(num_images: int = 1200) -> tuple[pd.DataFrame, np.ndarray]:
    ds = synthetic.read(IngestParams(num_images=num_images, resolution=RES, workers=1))
    return ds.table, ds.images


def role_vectors(captions: Sequence[str]) -> np.ndarray:
    """(n, D) unit vectors: one-hot per (role, value) the caption states, + small noise."""
    slots = [(a, str(v)) for a, values in ATTRIBUTES.items() for v in values]
    index = {s: i for i, s in enumerate(slots)}
    out = np.zeros((len(captions), len(slots) + 8), np.float32)
    for i, caption in enumerate(captions):
        parsed = parse_caption(caption)
        assert parsed is not None, caption
        for a, v in parsed[1].items():
            out[i, index[(a, str(v))]] = 1.0
        out[i, len(slots):] = 0.1 * np.random.default_rng(abs(hash(caption)) % 2**32).standard_normal(8)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _flower(stated: dict, rng: np.random.Generator) -> Flower:
    """Stated attributes as given, the others drawn at random (petal != centre, petal != stem)."""
    petal = stated.get("petal_color") or rng.choice(COLORS)
    others = [c for c in COLORS if c != petal]
    return Flower(
        petal_color=petal,
        center_color=stated.get("center_color") or rng.choice(others),
        stem_color=stated.get("stem_color") or rng.choice(others),
        petal_count=int(stated.get("petal_count") or rng.choice(PETAL_COUNTS)),
        petal_shape=stated.get("petal_shape") or rng.choice(PETAL_SHAPES),
    )


@functools.cache
def _probe_truth() -> dict[str, dict]:
    """The hand-written probe captions and their swaps -> the attributes each states."""
    from t2i.data.probe import load_probe

    out = {}
    for rec in load_probe().to_dict("records"):
        said = {a for a in rec["mentions"].split(",") if a}
        stated = {a: rec[a] for a in said}
        out[rec["caption"]] = stated
        out[rec["swap_caption"]] = swap_colors(stated)
    return out


def stated(caption: str) -> dict:
    """What a grammar caption or a probe caption states (the truth an oracle draws)."""
    parsed = parse_caption(caption)
    return parsed[1] if parsed is not None else _probe_truth()[caption]


def oracle(captions: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
    """Draws exactly what each caption says, with real nuisance variety: a perfect generator."""
    out = []
    for caption, seed in zip(captions, seeds):
        rng = np.random.default_rng(int(seed))
        out.append(draw_flower(_flower(stated(caption), rng), RES, rng))
    return np.stack(out)  # (n, R, R, 3)


def bag_of_words(captions: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
    """Knows which colours a caption names but not their roles (what one averaged vector can
    carry): petal and stem colour land either way round with probability 1/2."""
    out = []
    for caption, seed in zip(captions, seeds):
        rng = np.random.default_rng(int(seed))
        said = stated(caption)
        if rng.random() < 0.5:
            said = swap_colors(said)
        out.append(draw_flower(_flower(said, rng), RES, rng))
    return np.stack(out)


def noise(captions: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
    return np.stack([np.random.default_rng(int(s)).integers(0, 256, (RES, RES, 3), dtype=np.uint8) for s in seeds])


def one_image_per_caption(captions: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
    """Follows the caption but ignores its noise: the prototype GAN's failure."""
    return oracle(captions, [abs(hash(c)) % 2**31 for c in captions])
