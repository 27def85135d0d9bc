"""diversity: does the generator use its noise, or draw one image per caption?

For each of ``diversity_captions`` test captions, ``diversity_samples`` images from different
noise vectors; their mean pairwise distance in the project's image-feature space (the image
encoder's trunk) is divided by the same for real images that share the caption's mentioned
attributes (or its class, on datasets without attributes). Identical images score 0; a generator
as varied as the data scores 1. The ratio is not bounded above: a generator that ignores what the
caption fixes (the `bow` encoder, which cannot tell which colour belongs to which part) varies
those attributes too and scores above 1, so read it beside attr_all, not alone.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from t2i.eval.classifier import attributes_in, mentions
from t2i.eval.context import EvalContext
from t2i.eval.registry import MetricResult, register
from t2i.eval.sampling import split_seeds


def mean_pairwise(features: np.ndarray) -> float:
    """Mean Euclidean distance over all i < j pairs of (n, F) features."""
    f = features.astype(np.float64)
    sq = (f * f).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * f @ f.T, 0.0)
    iu = np.triu_indices(len(f), k=1)
    return float(np.sqrt(d2[iu]).mean())


def matching_images(table: pd.DataFrame, row: pd.Series, said: set[str]) -> np.ndarray:
    """Image indices that fit the caption: same mentioned attributes, else the same class."""
    attrs = [a for a in attributes_in(table) if a in said]
    mask = np.ones(len(table), bool)
    if attrs:
        for a in attrs:
            mask &= (table[a] == row[a]).to_numpy()
    else:
        mask &= (table["class"] == row["class"]).to_numpy()
    return np.unique(table.loc[mask, "image_index"].to_numpy())


@register("diversity")
def diversity(ctx: EvalContext) -> MetricResult:
    name = "diversity"
    rows = ctx.rows("test").drop_duplicates("caption").head(ctx.params.diversity_captions)
    s = ctx.params.diversity_samples
    enc = ctx.encoder()
    rng = np.random.default_rng([ctx.params.seed, 7])
    gen_d, real_d = [], []
    said = mentions(rows)
    for k, (_, row) in enumerate(rows.iterrows()):
        real = matching_images(ctx.table, row, said[k])
        if len(real) < 2:
            continue  # no real spread to compare with
        real = rng.choice(real, size=min(s, len(real)), replace=False)
        seeds = split_seeds(ctx.params.seed, f"diversity/{k}", s)
        fake = ctx.source([row["caption"]] * s, seeds.tolist())  # (s, R, R, 3)
        gen_d.append(mean_pairwise(enc.features(fake)))
        real_d.append(mean_pairwise(enc.features(ctx.images[np.sort(real)])))
    if not gen_d:
        return MetricResult.skip(name, "no test caption has >= 2 real images to compare with")
    real_mean = float(np.mean(real_d))
    return MetricResult(
        name=name,
        what="mean pairwise image-feature distance of one caption's samples over different noise, "
             "divided by that of real images with the same mentioned attributes (0 = ignores noise, 1 = real)",
        values={"diversity": float(np.mean(gen_d)) / max(real_mean, 1e-12)},
        samples={"captions": len(gen_d), "samples per caption": s},
        extra={"generated_distance": float(np.mean(gen_d)), "real_distance": real_mean},
    )
