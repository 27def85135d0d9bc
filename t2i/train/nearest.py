"""Hard negatives that exist for any caption set: the nearest other-image captions in sentence space.

One-word misses and same-bag reorderings exist only where a dataset repeats its sentence frames:
on the caption grammar (176 frames) one-word misses exist for a third of the train captions and
text-mined swaps for 6%; on human captions for almost none. The nearest captions of other images
in the encoder's own sentence space exist for every caption of any dataset and are the ones a
sentence-level D confuses first. Captions with the caption's own words (the same text on another
image) and the image's own captions are left out; a neighbour can still describe the image
correctly (a paraphrase of another flower with the same colours) -- `count_false` measures how
often on data whose attributes are known.
"""

from __future__ import annotations

import numpy as np
import torch

from t2i.train.negatives import words

NEAREST_K = 8  # neighbours kept per caption
# Mined at load for every caption against every other (M^2 dot products): ~2 s for the grammar's
# 10k train captions on 2 cores, minutes for COCO's 400k. Above this many they are not mined
# (train.loss.nearest_negatives then draws the one-word misses only).
NEAREST_MAX_CAPTIONS = 50_000


def nearest_partners(text: np.ndarray, captions: list[str], image_index: np.ndarray, k: int = NEAREST_K,
                     chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """For each of the M captions, its `k` nearest captions of other images by cosine of the
    sentence vectors `text` (M, D), other texts only, as CSR arrays (offsets (M + 1,), rows)."""
    m = len(captions)
    if m < 2 or k == 0:
        return np.zeros(m + 1, np.int64), np.zeros(0, np.int64)
    x = torch.nn.functional.normalize(torch.as_tensor(np.asarray(text), dtype=torch.float32), dim=1)  # (M, D)
    ids = {w: i for i, w in enumerate(dict.fromkeys(words(c) for c in captions))}
    text_id = torch.tensor([ids[words(c)] for c in captions])  # (M,) identical texts share an id
    image = torch.as_tensor(np.asarray(image_index), dtype=torch.long)  # (M,)
    kk = min(k, m - 1)
    out = np.full((m, kk), -1, np.int64)
    for start in range(0, m, chunk):
        rows = torch.arange(start, min(start + chunk, m))
        sim = x[rows] @ x.T  # (C, M)
        same = (image[rows, None] == image[None, :]) | (text_id[rows, None] == text_id[None, :])
        sim.masked_fill_(same, float("-inf"))
        val, idx = sim.topk(kk, dim=1)  # (C, k)
        out[start:start + len(rows)] = torch.where(torch.isfinite(val), idx, -1).numpy()
    keep = out >= 0
    offsets = np.concatenate([[0], np.cumsum(keep.sum(1))]).astype(np.int64)
    return offsets, out[keep]


def union_csr(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Caption i's rows of `a` then those of `b` not already in `a`, as CSR arrays."""
    (oa, ra), (ob, rb) = a, b
    lists = []
    for i in range(len(oa) - 1):
        first = ra[oa[i]:oa[i + 1]]
        extra = rb[ob[i]:ob[i + 1]]
        lists.append(np.concatenate([first, extra[~np.isin(extra, first)]]))
    counts = np.array([len(x) for x in lists], np.int64)
    rows = np.concatenate(lists).astype(np.int64) if lists else np.zeros(0, np.int64)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), rows


def count_false(offsets: np.ndarray, rows: np.ndarray, attributes: np.ndarray) -> float:
    """Share of the CSR's negatives whose caption states the same attributes as the caption
    (`attributes` (M,) one hashable key per caption): false negatives, where they are known."""
    owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    return float((attributes[owner] == attributes[rows]).mean()) if len(rows) else 0.0
