"""Per-token states reduced to a few principal directions before the word modules read them.

The discriminator scores ~10^4 captions per training step, each with ~16 token states of 512
dims; projecting those was most of the cost of word matching (0.43x the sentence-only speed,
benchmarks/word_attention_cost.py). The token states of one caption family span few directions,
so a PCA fitted once on the training captions' tokens keeps what the words say in `token_pca`
dims: the step projects its token table through it once (only for the rows it draws from) and D
reads the reduced states, as it reads the sentence after G's `text_norm`. The statistics are
buffers of the generator, so generation applies the same map to a new caption's tokens.
"""

from __future__ import annotations

import torch
from torch import nn


class TokenPCA(nn.Module):
    """(..., T, dim) token states -> (..., T, k): centred on the training tokens' mean, projected
    on their top-k principal directions, scaled to unit mean variance per output dim."""

    def __init__(self, dim: int, k: int) -> None:
        super().__init__()
        if not 0 < k <= dim:
            raise ValueError(f"token_pca must be in 1..token_dim={dim}, got {k}")
        self.dim, self.k = dim, k
        self.register_buffer("mean", torch.zeros(dim))  # (dim,)
        self.register_buffer("basis", torch.eye(dim)[:, :k].clone())  # (dim, k)

    @torch.no_grad()
    def fit(self, tokens: torch.Tensor) -> None:
        """Statistics of (N, dim) real token states (padding excluded by the caller)."""
        if tokens.dim() != 2 or tokens.shape[1] != self.dim or len(tokens) < 2:
            raise ValueError(f"TokenPCA.fit needs (N >= 2, {self.dim}) token states, got {tuple(tokens.shape)}")
        x = tokens.double()
        mean = x.mean(0)
        vals, vecs = torch.linalg.eigh(torch.cov((x - mean).T))  # ascending
        top_vals, top = vals.flip(0)[: self.k].clamp(min=0.0), vecs.flip(1)[:, : self.k]  # (k,), (dim, k)
        scale = top_vals.mean().clamp(min=1e-12).rsqrt()  # one scale: keeps the directions' ratios
        self.mean.copy_(mean.float())
        self.basis.copy_((top * scale).float())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (..., T, dim) any float -> (..., T, k) fp32
        with torch.autocast(tokens.device.type, enabled=False):
            return (tokens.float() - self.mean) @ self.basis
