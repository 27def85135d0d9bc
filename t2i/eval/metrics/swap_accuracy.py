"""swap_accuracy: the word-order test the project's thesis rests on.

For "a red flower with a yellow stem" / "a yellow flower with a red stem" (the same words, petal
and stem colours exchanged: the row's ``swap_caption``) a pair counts only if *both* images are
right on *both* roles. A bag-of-words model gets the same vector for both captions, so the same
image distribution: with q = P(image shows petal A, stem B) it scores at most q(1-q) <= 0.25.

Splits: test, unseen, novel_wording (also per ``novelty``) and the hand-written probe set,
whose swaps are written by hand.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from t2i.eval.context import SCORED_SPLITS, EvalContext
from t2i.eval.registry import MetricResult, register
from t2i.eval.sampling import novelty_key, split_seeds, swap_pairs

SPLITS = SCORED_SPLITS


def pair_results(ctx: EvalContext, split: str, pairs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(ok_a, ok_b): (n,) bools, each image of the pair right on both roles."""
    clf = ctx.classifier()
    n = len(pairs)
    seeds = split_seeds(ctx.params.seed, f"{split}/swap", 2 * n)
    pa = clf.predict(ctx.source(pairs["caption_a"].tolist(), seeds[:n].tolist()))
    pb = clf.predict(ctx.source(pairs["caption_b"].tolist(), seeds[n:].tolist()))
    petal, stem = pairs["a_petal"].to_numpy(), pairs["a_stem"].to_numpy()
    ok_a = (pa["petal_color"] == petal) & (pa["stem_color"] == stem)  # (n,)
    ok_b = (pb["petal_color"] == stem) & (pb["stem_color"] == petal)
    return ok_a, ok_b


@register("swap_accuracy")
def swap_accuracy(ctx: EvalContext) -> MetricResult:
    name = "swap_accuracy"
    if not ctx.has_attributes or "swap_caption" not in ctx.table.columns:
        return MetricResult.skip(name, "needs synthetic captions with colour roles and their word-order swaps "
                                       "(the swap_caption column: re-run `dvc repro ingest`)")
    result = MetricResult(
        name=name,
        what="fraction of swapped caption pairs (the same words, petal and stem colours exchanged) "
             "where both generated images show the right petal and stem colour",
    )
    for split in SPLITS:
        pairs = swap_pairs(ctx.rows(split), limit=max(1, ctx.params.max_captions // 2))
        if pairs.empty:
            continue
        ok_a, ok_b = pair_results(ctx, split, pairs)
        result.values[f"{split}/swap"] = float(np.mean(ok_a & ok_b))
        # Per image: right on both roles. For bow, swap <= q(1-q) while this can stay high.
        result.values[f"{split}/swap_single"] = float(np.mean(np.concatenate([ok_a, ok_b])))
        result.samples[f"{split} pairs"] = len(pairs)
        if split == "novel_wording":
            novelty = pairs["novelty"].to_numpy(dtype=object)
            for kind in sorted({k for k in novelty if k}):
                pick = novelty == kind
                result.values[f"{split}/novelty/{novelty_key(kind)}/swap"] = float(np.mean((ok_a & ok_b)[pick]))
    if not result.values:
        result.note = "no caption pairs with distinct petal and stem colours"
    return result
