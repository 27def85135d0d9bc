"""Discriminator: image + sentence vector -> one realism/match score per image.

Spectral-normalised downsampling blocks (with a residual attention module where `attention`
lists the block's output resolution) down to 4x4, then the sentence enters once:
- projection (Miyato & Koyama 2018): score = psi(phi(x)) + <embed(s), phi(x)>;
- concat (DF-GAN): the sentence, tiled over the 4x4 map, is concatenated and convolved.
No BatchNorm: the loss puts real, fake and mismatched images through one forward, and the
matching-aware gradient penalty differentiates the score per image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from t2i.models.attention import ResidualAttention
from t2i.models.config import GANConfig


class DBlock(nn.Module):
    """conv3x3 -> act -> conv4x4 stride 2, plus avg-pool + 1x1 shortcut; all spectral-normed."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = spectral_norm(nn.Conv2d(c_in, c_in, 3, padding=1))
        self.conv2 = spectral_norm(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1))
        self.shortcut = spectral_norm(nn.Conv2d(c_in, c_out, 1))
        self.gamma = nn.Parameter(torch.zeros(1))  # residual branch fades in (DF-GAN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H/2, W/2)
        h = self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(x, 0.2)), 0.2))
        return self.shortcut(F.avg_pool2d(x, 2)) + self.gamma * h


def sentence_embedding(text_dim: int, width: int, layers: int) -> nn.Module:
    """Projection D's sentence embedding. One layer: a Linear (the keys of older models). More: an
    MLP, for sentence forms whose word-order swap moves the vector 2x less than others'
    (docs/results/tuning.md, session 9), which a linear map scales alike."""
    if layers == 1:
        return nn.Linear(text_dim, width)
    mods: list[nn.Module] = []
    for i in range(layers - 1):
        mods += [nn.Linear(text_dim if i == 0 else width, width), nn.LeakyReLU(0.2)]
    return nn.Sequential(*mods, nn.Linear(width, width))


class Discriminator(nn.Module):
    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.from_rgb = spectral_norm(nn.Conv2d(3, c.d_channels(c.resolution), 3, padding=1))
        self.blocks = nn.ModuleList()
        self.attn = nn.ModuleDict()
        self.resolutions: list[int] = []
        res = c.resolution
        while res > 4:
            self.blocks.append(DBlock(c.d_channels(res), c.d_channels(res // 2)))
            res //= 2
            self.resolutions.append(res)
            if res in (c.attention if c.d_attention is None else c.d_attention):
                self.attn[str(res)] = ResidualAttention(c.d_channels(res), res, norm=False, sn=True)
        c4 = c.d_channels(4)
        if c.d_conditioning == "projection":
            self.psi = spectral_norm(nn.Linear(c4, 1))
            # No spectral norm here: word-order-swapped captions differ by a small vector (USE
            # cosine 0.993), and a unit-gain embedding could barely tell them apart.
            self.embed = sentence_embedding(c.text_dim, c4, c.d_text_layers)
        else:
            self.text_proj = nn.Linear(c.text_dim, c.cond_dim)
            self.joint = nn.Sequential(
                spectral_norm(nn.Conv2d(c4 + c.cond_dim, c4, 3, padding=1)),
                nn.LeakyReLU(0.2),
                spectral_norm(nn.Conv2d(c4, 1, 4)),
            )

    def features(self, image: torch.Tensor) -> torch.Tensor:  # (B, 3, R, R) -> (B, C4, 4, 4)
        h = self.from_rgb(image)
        for block, res in zip(self.blocks, self.resolutions):
            h = block(h)
            if str(res) in self.attn:
                h = self.attn[str(res)](h)
        return F.leaky_relu(h, 0.2)

    def forward(self, image: torch.Tensor, text: torch.Tensor, image_index: torch.Tensor | None = None) -> torch.Tensor:
        # image (M, 3, R, R), text (N, text_dim) = G's text_norm(raw vector) -> score (N,).
        # image_index (N,): which image each sentence is scored against (None: the i-th, N = M),
        # so a real image paired with its caption and with a wrong one costs one feature pass.
        # The caller rescales, so the MA-GP differentiates w.r.t. the rescaled sentence.
        h = self.features(image)  # (M, C4, 4, 4)
        if self.config.d_conditioning == "projection":
            # Mean, not sum, pooling: keeps |d score / d sentence| near 1 at init, where the MA-GP's
            # |grad|^6 would otherwise start in the hundreds of thousands.
            feat = h.mean(dim=(2, 3))  # (M, C4)
            image_term = self.psi(feat).squeeze(1)  # (M,)
            if image_index is not None:  # pooled before the gather: N can be B x (3 + K)
                feat, image_term = feat[image_index], image_term[image_index]  # (N, C4), (N,)
            return image_term + (self.embed(text) * feat).sum(dim=1)
        if image_index is not None:
            h = h[image_index]  # (N, C4, 4, 4)
        s = self.text_proj(text)[:, :, None, None].expand(-1, -1, 4, 4)  # (N, cond_dim, 4, 4)
        return self.joint(torch.cat([h, s.to(h.dtype)], dim=1)).flatten()

    def rank_texts(self, image: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        """How well each of K candidate sentences matches each image: (B, K), higher = better.
        image (B, 3, R, R), texts (B, K, text_dim) normalised. Projection: the image term is the
        same for every candidate, so one feature pass and a dot product rank them."""
        b, k = texts.shape[:2]
        if self.config.d_conditioning == "projection":
            feat = self.features(image).mean(dim=(2, 3))  # (B, C4)
            return (self.embed(texts.flatten(0, 1)).view(b, k, -1) * feat[:, None]).sum(-1)
        index = torch.arange(b, device=image.device).repeat_interleave(k)  # (B*K,)
        return self(image, texts.flatten(0, 1), index).view(b, k)
