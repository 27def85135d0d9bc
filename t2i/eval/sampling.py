"""Turning captions into images: the model-backed image source, and swapped caption pairs.

Metrics never touch a generator directly: they ask an ``ImageSource`` for images of captions
with given seeds. The stage passes a ``ModelSource``; tests pass real images (an oracle), noise,
or a bag-of-words stand-in, which is how each metric is shown to be able to fail.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch

from t2i.eval.nets import batches


class ImageSource(Protocol):
    def __call__(self, captions: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        """uint8 (n, R, R, 3), image i drawn for captions[i] with noise seed seeds[i]."""
        ...


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, R, R) in [-1, 1] -> uint8 (B, R, R, 3)."""
    x = ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def noise(seeds: Sequence[int], z_dim: int) -> torch.Tensor:
    """(n, z_dim) standard normal, row i a function of seeds[i] alone: the same caption and seed
    give the same image whatever else is in the batch."""
    return torch.from_numpy(np.stack([
        np.random.default_rng(int(s)).standard_normal(z_dim).astype(np.float32) for s in seeds
    ]))


class TextLookup:
    """Caption -> sentence vector: rows of embeddings.npy for captions the embed stage saw, the
    model's own encoder (built lazily, only if needed) for new ones such as swapped captions."""

    def __init__(self, captions: Sequence[str], vectors: np.ndarray,
                 make_encoder: Callable[[], Any] | None = None) -> None:
        self.vectors = vectors
        self.row = {c: i for i, c in enumerate(captions)}
        self._make_encoder = make_encoder
        self._encoder: Any = None

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __call__(self, captions: Sequence[str]) -> np.ndarray:
        out = np.empty((len(captions), self.dim), np.float32)  # (n, D)
        missing = [i for i, c in enumerate(captions) if c not in self.row]
        for i, c in enumerate(captions):
            if c in self.row:
                out[i] = self.vectors[self.row[c]]
        if missing:
            if self._make_encoder is None:
                raise KeyError(f"{len(missing)} captions have no stored vector, e.g. {captions[missing[0]]!r}")
            if self._encoder is None:
                self._encoder = self._make_encoder()
            out[missing] = self._encoder.encode([captions[i] for i in missing])
        return out


class ModelSource:
    """A generator behind the ``ImageSource`` interface."""

    def __init__(self, generator: torch.nn.Module, z_dim: int, text: Callable[[Sequence[str]], np.ndarray],
                 device: torch.device, batch_size: int = 256) -> None:
        self.generator, self.z_dim, self.text = generator.eval(), z_dim, text
        self.device, self.batch_size = device, batch_size

    @torch.no_grad()
    def __call__(self, captions: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        if len(captions) != len(seeds):
            raise ValueError(f"{len(captions)} captions but {len(seeds)} seeds")
        vectors = torch.from_numpy(self.text(list(captions)))  # (n, D)
        z = noise(seeds, self.z_dim)  # (n, z_dim)
        out = [to_uint8(self.generator(z[s].to(self.device), vectors[s].to(self.device)))
               for s in batches(len(captions), self.batch_size)]
        return np.concatenate(out)  # (n, R, R, 3)


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
