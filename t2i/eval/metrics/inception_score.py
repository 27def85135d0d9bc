"""inception_score: torchmetrics' IS of generated test images, local Inception weights only.

torchmetrics' InceptionScore builds its own Inception *without* a weights path (it would
download), so we hand it a network built from the local file instead.
"""

from __future__ import annotations

from t2i.eval.context import EvalContext
from t2i.eval.inception import SKIP_NOTE, inception, nchw, weights_path
from t2i.eval.registry import MetricResult, register
from t2i.models.trunk import batches


@register("inception_score")
def inception_score(ctx: EvalContext) -> MetricResult:
    path = weights_path(ctx.params.inception_weights)
    if path is None:
        return MetricResult.skip("inception_score", SKIP_NOTE)
    from torchmetrics.image.inception import InceptionScore

    metric = InceptionScore(feature=inception(path, "logits_unbiased", ctx.device), splits=10).to(ctx.device)
    fake = ctx.generated("test")
    for s in batches(len(fake), 64):
        metric.update(nchw(fake[s], ctx.device))
    mean, std = metric.compute()
    return MetricResult(
        name="inception_score",
        what=f"Inception Score (torchmetrics, 10 splits, weights {path.name}) of generated test images",
        values={"inception_score": float(mean), "inception_score_std": float(std)},
        samples={"generated": len(fake)},
    )
