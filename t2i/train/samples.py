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
def render_grid(generator: torch.nn.Module, samples: SampleSet, device: torch.device, pad: int = 2) -> Image.Image:
    k, n = len(samples.captions), samples.z.shape[0]
    text = samples.text.to(device).repeat_interleave(n, dim=0)  # (K*N, D)
    z = samples.z.to(device).repeat(k, 1)                       # (K*N, z_dim)
    was_training = generator.training
    generator.eval()
    images = generator(z, text).float().clamp(-1, 1)            # (K*N, 3, R, R)
    generator.train(was_training)
    arr = ((images + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    r = arr.shape[1]
    grid = np.full((k * (r + pad) + pad, n * (r + pad) + pad, 3), 255, dtype=np.uint8)
    for idx, img in enumerate(arr):
        row, col = divmod(idx, n)
        y, x = pad + row * (r + pad), pad + col * (r + pad)
        grid[y : y + r, x : x + r] = img
    return Image.fromarray(grid)
