"""The small CNN that reads images for the judges and the matcher, and moving images into it.

The evaluation judges (attribute classifier, contrastive image encoder, t2i/eval/) and the
matcher (t2i/models/matcher.py) each train their own copy: conv blocks down to a 4x4 map,
flattened (not averaged) so that *where* a colour sits survives - stem vs petal colour is a
question of position. It works at ``min(R, 64)`` pixels: colours and petal counts are readable
there, and it keeps evaluation at 128/256 px as cheap as at 32. ``augment`` is the mild
jitter all of them train with; ``t2i.models.fit.fit`` is their shared training loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WORK_RES_MAX = 64
FEATURE_DIM = 256
WIDTH = 16  # 32 read colours no better and cost 3x the CPU time (measured)


def to_work_resolution(x: torch.Tensor) -> torch.Tensor:
    """float (B, 3, R, R) -> (B, 3, r, r), r = min(R, 64): what the trunk reads."""
    if x.shape[-1] > WORK_RES_MAX:
        x = F.interpolate(x, size=(WORK_RES_MAX, WORK_RES_MAX), mode="bilinear", antialias=True,
                          align_corners=False)
    return x


def to_input(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (B, R, R, 3) -> float (B, 3, r, r) in [-1, 1], r = min(R, 64)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return to_work_resolution(x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0))  # (B, 3, R, R) first


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mild noise and a +-1 px shift, so a judge trained on clean renders still reads the
    slightly blurry, noisy images a GAN draws instead of keying on exact pixels."""
    b = x.shape[0]
    dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
    x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    noise = torch.randn(x.shape, generator=gen).to(x.device) * 0.05
    scale = (torch.rand(b, 1, 1, 1, generator=gen).to(x.device) * 0.2 + 0.9)  # contrast jitter
    return (x * scale + noise).clamp_(-1.0, 1.0)


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Trunk(nn.Module):
    """(B, 3, r, r) -> (B, FEATURE_DIM) features."""

    def __init__(self, width: int = WIDTH) -> None:
        super().__init__()
        w = width
        self.convs = nn.Sequential(
            _block(3, w, 1),
            _block(w, 2 * w, 2),
            _block(2 * w, 2 * w, 1),
            _block(2 * w, 4 * w, 2),
            _block(4 * w, 4 * w, 1),
        )
        self.pool = nn.AdaptiveAvgPool2d(4)  # (B, 4w, 4, 4) whatever r is
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * 16, FEATURE_DIM), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.convs(x)))  # (B, FEATURE_DIM)


def batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


@torch.no_grad()
def apply(fn: Callable[[torch.Tensor], torch.Tensor], images: np.ndarray, device: torch.device,
          batch_size: int = 256) -> np.ndarray:
    """Run ``fn`` on uint8 (N, R, R, 3) images in batches; returns float32 (N, ...) numpy."""
    outs = [fn(to_input(images[s], device)).float().cpu() for s in batches(len(images), batch_size)]
    if not outs:
        raise ValueError("no images to evaluate")
    return torch.cat(outs).numpy()
