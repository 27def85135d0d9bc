"""r_precision: does the generated image retrieve its own caption? (AttnGAN protocol)

For each generated test image, its caption and ``rprecision_candidates - 1`` random other test
captions are ranked by cosine similarity between the image encoder's embedding and the frozen
sentence vectors; the score is the fraction where the true caption ranks first (R = 1). Random
captions with the very same text as the true one are excluded. The same score on the real test
images of those captions is the ceiling under this judge; chance is 1 / candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from t2i.eval.context import EvalContext
from t2i.eval.image_encoder import normalize_rows
from t2i.eval.registry import MetricResult, register


@dataclass(frozen=True)
class Retrieval:
    """One R-precision task: for image i, rank caption row ``true_rows[i]`` against
    ``candidates - 1`` rows of ``pool`` with another caption text."""
    true_rows: np.ndarray  # (n,) rows of ``vectors``
    captions: np.ndarray   # (n_captions,) caption text per row
    vectors: np.ndarray    # (n_captions, D) sentence vectors
    pool: np.ndarray       # rows to draw negatives from
    candidates: int
    seed: int


def r_precision(image_emb: np.ndarray, task: Retrieval) -> float:
    """image_emb (n, D) unit vectors -> fraction whose own caption scores highest."""
    rng = np.random.default_rng(task.seed)
    vecs = normalize_rows(task.vectors.astype(np.float32))
    captions, pool = task.captions, task.pool
    hits = 0
    for i, t in enumerate(task.true_rows):
        negatives = pool[captions[pool] != captions[t]]
        neg = rng.choice(negatives, size=min(task.candidates - 1, len(negatives)), replace=False)
        sims = vecs[np.concatenate([[t], neg])] @ image_emb[i]  # (candidates,)
        hits += int(sims[0] > sims[1:].max())
    return hits / len(task.true_rows)


@register("r_precision")
def r_precision_metric(ctx: EvalContext) -> MetricResult:
    name = "r_precision"
    rows = ctx.rows("test")
    pool = np.flatnonzero((ctx.table["split"] == "test").to_numpy())
    captions = ctx.table["caption"].to_numpy()
    if len(set(captions[pool])) < 2:
        return MetricResult.skip(name, "fewer than 2 distinct test captions")
    k = ctx.params.rprecision_candidates
    true_rows = ctx.table.index.get_indexer(rows.index)
    enc = ctx.encoder()
    task = Retrieval(true_rows, captions, ctx.text_vectors, pool, k, ctx.params.seed)
    fake = r_precision(enc.embed(ctx.generated("test")), task)
    real = r_precision(enc.embed(ctx.images[rows["image_index"].to_numpy()]), task)
    note = None
    if len(set(captions[pool])) < k:
        note = f"only {len(set(captions[pool]))} distinct test captions for {k} candidates"
    return MetricResult(
        name=name,
        what=f"fraction of generated test images whose caption ranks first among {k} "
             f"(1 true + {k - 1} random test captions) by image-encoder/sentence-vector cosine; "
             "r_precision_real = real test images (ceiling)",
        values={"r_precision": fake, "r_precision_real": real, "r_precision_chance": 1.0 / k},
        samples={"generated": len(rows), "real": len(rows), "candidates": k},
        note=note,
    )
