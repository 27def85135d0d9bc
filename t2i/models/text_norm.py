"""Sentence-vector preprocessing shared by G and D: what the networks see of a caption.

Captions of one dataset are alike: their unit USE vectors share a mean of norm ~0.75, random
pairs have cosine ~0.57 and a caption and its word-order swap ~0.988. Two modes:

- scale: the unit direction times sqrt(D) (per-element unit variance). Keeps the shared mean,
  so what tells "red petals, yellow stem" from the swap is ~1% of the input.
- whiten: subtract the training captions' mean and apply regularised PCA whitening
  W = V diag((lambda + eps)^-1/2) V^T, eps a fraction of the largest eigenvalue, then rescale
  to a mean squared norm of D. Measured on the synthetic flowers at eps = 0.01: random pairs go
  to cosine ~0.00 and swapped pairs to ~0.81 -- the role difference becomes a fifth of the
  input instead of a hundredth. A smaller eps (`train.whiten_eps`, 0.001) damps less of the weak
  directions where the copula captions keep their roles (tuning log 2026-12-02, 1baf2c6). Fitted once
  on the training captions (`fit`); the statistics are buffers, so they travel with the
  weights and generation applies the same map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from t2i.models.config import WHITEN_EPS  # directions below it are damped, not blown up


class TextNorm(nn.Module):
    def __init__(self, dim: int, mode: str, eps: float = WHITEN_EPS) -> None:
        super().__init__()
        if mode not in ("scale", "whiten"):
            raise ValueError(f"text_norm must be scale|whiten, got {mode!r}")
        if not 0.0 < eps <= 1.0:
            raise ValueError(f"whitening eps must be in (0, 1] (a fraction of the largest eigenvalue), got {eps}")
        self.mode, self.dim, self.eps = mode, dim, eps  # eps only matters to `fit`
        if mode == "whiten":
            self.register_buffer("mean", torch.zeros(dim))   # (D,)
            self.register_buffer("whiten", torch.eye(dim))   # (D, D), symmetric

    @torch.no_grad()
    def fit(self, text: torch.Tensor) -> None:
        """Statistics of (N, D) training sentence vectors (no-op for `scale`)."""
        if self.mode != "whiten":
            return
        x = F.normalize(text.double(), dim=1)  # (N, D)
        mean = x.mean(0)
        cov = torch.cov((x - mean).T)  # (D, D)
        vals, vecs = torch.linalg.eigh(cov)
        vals = vals.clamp(min=0.0)
        damped = vals + self.eps * vals.max()
        kept = (vals / damped).sum()  # variance left after whitening, summed over directions
        gain = (self.dim / kept.clamp(min=1e-12)).sqrt()  # mean |out|^2 = D
        w = vecs @ torch.diag(gain / damped.sqrt()) @ vecs.T
        self.mean.copy_(mean.float())
        self.whiten.copy_(w.float())

    def forward(self, text: torch.Tensor) -> torch.Tensor:  # (B, D) raw -> (B, D) normalised
        # In fp32 even under autocast: the swap difference must not drown in bf16 rounding.
        with torch.autocast(text.device.type, enabled=False):
            x = F.normalize(text.float(), dim=1)
            if self.mode == "scale":
                return x * self.dim**0.5
            return (x - self.mean) @ self.whiten
