"""Fixed-noise, fixed-caption sample grids, drawn from the EMA generator.

Rows are captions, columns noise vectors; the same noise in every row, so a row-to-row change
is the text's doing and a column-to-column change the noise's. Captions come in word-order
swapped pairs (same bag of words, different roles) from the test/unseen splits where the table
has them, so the grid shows at a glance whether the model follows word order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from PIL import Image

from t2i.grids import caption_grid
from t2i.pipeline import to_uint8
from t2i.train.negatives import swap_partners


@dataclass(frozen=True)
class SampleSet:
    captions: list[str]
    text: torch.Tensor   # (K, D)
    z: torch.Tensor      # (N, z_dim): the same N noise vectors for every caption


def pick_captions(table: pd.DataFrame, all_text: np.ndarray, n: int = 8) -> tuple[list[str], np.ndarray]:
    """Up to n//2 swapped pairs (held-out splits first), topped up with test captions."""
    captions = table["caption"].astype(str).tolist()
    split = table["split"].astype(str).to_numpy()
    partner = swap_partners(captions)
    order = [i for s in ("unseen", "test", "train") for i in np.flatnonzero(split == s)]
    rows: list[int] = []
    seen: set[int] = set()
    for i in order:
        j = int(partner[i])
        if len(rows) + 2 > n:
            break
        if j >= 0 and i not in seen and j not in seen and captions[i] != captions[j]:
            rows += [int(i), j]
            seen |= {int(i), j}
    for i in order:  # no (or too few) swapped pairs in this dataset
        if len(rows) >= n:
            break
        if i not in seen and captions[i] not in {captions[r] for r in rows}:
            rows.append(int(i))
            seen.add(int(i))
    return [captions[r] for r in rows], np.asarray(all_text[rows], dtype=np.float32)


def make_sample_set(table: pd.DataFrame, all_text: np.ndarray, z_dim: int, seed: int, n_captions: int = 8, n_noise: int = 8) -> SampleSet:
    captions, text = pick_captions(table, all_text, n_captions)
    z = torch.randn(n_noise, z_dim, generator=torch.Generator().manual_seed(seed + 12345))
    return SampleSet(captions=captions, text=torch.from_numpy(text), z=z)


@torch.no_grad()
def render_grid(generator: torch.nn.Module, samples: SampleSet, device: torch.device) -> Image.Image:
    """One row per sample caption (its text on the left), one column per fixed noise vector."""
    k, n = len(samples.captions), samples.z.shape[0]
    text = samples.text.to(device).repeat_interleave(n, dim=0)  # (K*N, D)
    z = samples.z.to(device).repeat(k, 1)                       # (K*N, z_dim)
    was_training = generator.training
    generator.eval()
    images = to_uint8(generator(z, text))                       # (K*N, R, R, 3)
    generator.train(was_training)
    return caption_grid(images.reshape(k, n, *images.shape[1:]), samples.captions)
