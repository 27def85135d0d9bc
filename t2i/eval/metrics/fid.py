"""fid: torchmetrics' Fréchet Inception Distance, standard Inception weights from a local file.

Generated test images vs real test images, at the prepared resolution (torchmetrics resizes to
299 px). Skipped with a note when ``evaluate.inception_weights`` is not set: never a download.
Low-resolution synthetic flowers are far from ImageNet, so compare this only with itself;
published anchors are at 256 px on Oxford-102 / CUB.
"""

from __future__ import annotations

from t2i.eval.context import EvalContext
from t2i.eval.inception import SKIP_NOTE, nchw, weights_path
from t2i.eval.registry import MetricResult, register
from t2i.models.trunk import batches


@register("fid")
def fid(ctx: EvalContext) -> MetricResult:
    path = weights_path(ctx.params.inception_weights)
    if path is None:
        return MetricResult.skip("fid", SKIP_NOTE)
    from torchmetrics.image.fid import FrechetInceptionDistance

    # feature_extractor_weights_path: torch-fidelity torch.loads this file instead of downloading.
    metric = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(path)).to(ctx.device)
    fake, real = ctx.generated("test"), ctx.real_images("test")
    for images, is_real in ((real, True), (fake, False)):
        for s in batches(len(images), 64):
            metric.update(nchw(images[s], ctx.device), real=is_real)
    return MetricResult(
        name="fid",
        what=f"FID (torchmetrics, Inception weights {path.name}) of generated vs real test images "
             f"at {ctx.images.shape[1]} px",
        values={"fid": float(metric.compute())},
        samples={"generated": len(fake), "real test": len(real)},
    )
