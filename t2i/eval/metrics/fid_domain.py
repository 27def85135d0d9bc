"""fid_domain: Fréchet distance between generated and real test images in the project's own
image-feature space (the image encoder's trunk).

It is *not* FID: the features come from a small network trained on this dataset, not from
ImageNet Inception, so the figure is comparable only within this project. Beside it, the same
distance between real train and real test images of the same count: the floor a perfect
generator would reach (sampling noise alone).
"""

from __future__ import annotations

import numpy as np
import torch

from t2i.eval.context import EvalContext
from t2i.eval.registry import MetricResult, register


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) for (n, F) feature sets.

    Tr((S_a S_b)^1/2) is the sum of square roots of the eigenvalues of S_a^1/2 S_b S_a^1/2, a
    symmetric PSD matrix: eigh in float64 is stable where a general sqrtm is not.
    """
    x = torch.from_numpy(a.astype(np.float64))
    y = torch.from_numpy(b.astype(np.float64))
    mu_x, mu_y = x.mean(0), y.mean(0)
    s_x, s_y = torch.cov(x.T), torch.cov(y.T)  # (F, F)
    w, v = torch.linalg.eigh(s_x)
    root_x = (v * w.clamp_min(0).sqrt()) @ v.T
    m = root_x @ s_y @ root_x
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    return float((mu_x - mu_y).square().sum() + s_x.trace() + s_y.trace() - 2 * tr_sqrt)


@register("fid_domain")
def fid_domain(ctx: EvalContext) -> MetricResult:
    enc = ctx.encoder()
    fake = enc.features(ctx.generated("test"))  # (n, 256)
    real_test = enc.features(ctx.real_images("test"))
    train = ctx.real_images("train")
    pick = np.random.default_rng([ctx.params.seed, 11]).choice(len(train), min(len(fake), len(train)), replace=False)
    real_train = enc.features(train[np.sort(pick)])
    return MetricResult(
        name="fid_domain",
        what="Fréchet distance of generated vs real test images in the project's image-feature space "
             "(NOT Inception FID); fid_domain_floor = real train vs real test, same count",
        values={"fid_domain": frechet_distance(fake, real_test),
                "fid_domain_floor": frechet_distance(real_train, real_test)},
        samples={"generated": len(fake), "real test": len(real_test), "real train": len(real_train)},
    )
