"""Residual attention module (Wang et al. 2017, "Residual Attention Network for Image
Classification"), sized for small GANs.

Trunk branch T(x): residual units that do the feature processing.
Soft-mask branch M(x): bottom-up (max-pool) / top-down (upsample) hourglass with a skip
connection between levels, two 1x1 convs and a sigmoid, so M(x) in (0, 1) per position/channel.
Output: (1 + M(x)) * T(x) -- "attention residual learning": the mask can only emphasise trunk
features, never zero them, so stacking modules does not degrade the signal.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

ConvFactory = Callable[..., nn.Module]


def make_conv(sn: bool) -> ConvFactory:
    """Conv2d constructor, spectral-normalised for the discriminator."""

    def conv(*args: object, **kwargs: object) -> nn.Module:
        layer = nn.Conv2d(*args, **kwargs)  # type: ignore[arg-type]
        return spectral_norm(layer) if sn else layer

    return conv


class ResidualUnit(nn.Module):
    """Pre-activation residual unit: x + conv(act(norm(conv(act(norm(x))))))."""

    def __init__(self, channels: int, norm: bool, sn: bool) -> None:
        super().__init__()
        conv = make_conv(sn)
        self.n1 = nn.BatchNorm2d(channels) if norm else nn.Identity()
        self.c1 = conv(channels, channels, 3, padding=1)
        self.n2 = nn.BatchNorm2d(channels) if norm else nn.Identity()
        self.c2 = conv(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> same
        h = self.c1(F.leaky_relu(self.n1(x), 0.2))
        h = self.c2(F.leaky_relu(self.n2(h), 0.2))
        return x + h


class SoftMask(nn.Module):
    """Hourglass: pool down `depth` levels, come back up adding each level's skip, sigmoid."""

    def __init__(self, channels: int, resolution: int, norm: bool, sn: bool) -> None:
        super().__init__()
        conv = make_conv(sn)
        # Two levels where the map is big enough (8x8 -> 4 -> 2), one at 4x4; never below 2x2.
        self.depth = max(1, min(2, resolution.bit_length() - 3))
        self.down = nn.ModuleList([ResidualUnit(channels, norm, sn) for _ in range(self.depth)])
        self.skip = nn.ModuleList([ResidualUnit(channels, norm, sn) for _ in range(self.depth - 1)])
        self.head = nn.Sequential(
            nn.BatchNorm2d(channels) if norm else nn.Identity(),
            nn.LeakyReLU(0.2),
            conv(channels, channels, 1),
            nn.BatchNorm2d(channels) if norm else nn.Identity(),
            nn.LeakyReLU(0.2),
            conv(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> mask (B, C, H, W)
        skips: list[torch.Tensor] = []
        h = x
        for i, unit in enumerate(self.down):  # bottom-up
            h = unit(F.max_pool2d(h, 2))
            if i < self.depth - 1:
                skips.append(self.skip[i](h))
        for s in reversed(skips):  # top-down, with the skip of the same scale
            h = F.interpolate(h, scale_factor=2.0, mode="nearest") + s
        h = F.interpolate(h, size=x.shape[-2:], mode="nearest")
        return torch.sigmoid(self.head(h))


class ResidualAttention(nn.Module):
    """(1 + M(x)) * T(x). `norm` adds BatchNorm (generator), `sn` spectral norm (discriminator)."""

    def __init__(self, channels: int, resolution: int, norm: bool = True, sn: bool = False) -> None:
        super().__init__()
        self.trunk = ResidualUnit(channels, norm, sn)
        self.mask = SoftMask(channels, resolution, norm, sn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> same
        return (1.0 + self.mask(x)) * self.trunk(x)
