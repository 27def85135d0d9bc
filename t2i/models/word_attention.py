"""Word attention for the generator: image regions read the caption's token states (AttnGAN's idea).

AttnGAN (Xu et al. 2018) lets every region of a feature map pick the words that concern it and
adds a word-context map to the features. Here it sits inside the residual design: a region's
query is a 1x1 conv of its features, the words are the encoder's per-token states projected to
the map's channels (LayerNorm'd, so USE states and `bow` vectors arrive at one scale), and the
context returns through a 1x1 conv times a gate that starts at zero -- a fresh model computes
exactly what the sentence-only one does, and the words fade in as the gate learns.

Cost: (H*W) x T dot products per image, linear in the map's area (no region-region attention):
at 16x16 with T ~ 16 tokens it is a few per cent of the block's convolutions.

The words are a set: permuting a caption's tokens (with their mask) leaves the output unchanged,
so word order reaches the image only through contextual token states (see word_match.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from t2i.models.word_match import masked_softmax


def token_projection(token_dim: int, width: int) -> nn.Module:
    """Per-token states (..., T, token_dim) -> word features (..., T, width), LayerNorm'd."""
    return nn.Sequential(nn.Linear(token_dim, width), nn.LayerNorm(width))


def check_tokens(tokens: torch.Tensor, mask: torch.Tensor | None, token_dim: int) -> torch.Tensor:
    """The mask to use ((B, T) bool), after checking shapes; None = every token is real."""
    if tokens.dim() != 3 or tokens.shape[-1] != token_dim:
        raise ValueError(f"tokens must be (B, T, token_dim={token_dim}), got {tuple(tokens.shape)}: "
                         "GANConfig.token_dim must match the encoder's token states")
    if mask is None:
        return torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    if mask.shape != tokens.shape[:2]:
        raise ValueError(f"token_mask must be (B, T) = {tuple(tokens.shape[:2])}, got {tuple(mask.shape)}")
    return mask.bool()


def pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 conv applied as a matmul to (B, L, C_in) rows -> (B, L, C_out): the same weights and
    result as the conv, on the attention's row layout without a round trip through NCHW. Speed:
    no measurable change at the default loss (benchmarks/train_step.py --words: 0.42x -> 0.43x of
    sentence-only), where the word-region score of ~10^4 captions a step is the cost."""
    return F.linear(x, conv.weight.flatten(1), conv.bias)


class WordAttention(nn.Module):
    """h + gate * out(context): context[:, :, y, x] = sum_t softmax_t(q(h)_yx . w_t / sqrt(C)) w_t."""

    def __init__(self, channels: int, token_dim: int) -> None:
        super().__init__()
        self.token_dim = token_dim
        self.words = token_projection(token_dim, channels)
        self.query = nn.Conv2d(channels, channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        # Zero at init: the module is the identity until training opens it (SAGAN's gamma).
        self.gate = nn.Parameter(torch.zeros(1))

    def attention(self, h: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """(context (B, C, H, W), weights (B, H*W, T)); padded tokens get weight 0, and a caption
        with no real token gets zero context."""
        b, c, hh, ww = h.shape
        mask = check_tokens(tokens, mask, self.token_dim)
        w = self.words(tokens.to(self.words[0].weight.dtype))  # (B, T, C)
        q = pointwise(self.query, h.permute(0, 2, 3, 1).reshape(b, hh * ww, c))  # (B, HW, C)
        logits = torch.bmm(q, w.transpose(1, 2).to(q.dtype)) / math.sqrt(c)  # (B, HW, T)
        weights = masked_softmax(logits, mask[:, None, :], dim=-1)  # (B, HW, T), fp32
        context = torch.bmm(weights.to(w.dtype), w)  # (B, HW, C)
        return context.transpose(1, 2).reshape(b, c, hh, ww), weights

    def forward(self, h: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # h (B, C, H, W), tokens (B, T, token_dim) any float dtype, mask (B, T) bool -> (B, C, H, W)
        context, _ = self.attention(h, tokens, mask)  # (B, C, H, W)
        b, c, hh, ww = h.shape
        out = pointwise(self.out, context.to(h.dtype).permute(0, 2, 3, 1).reshape(b, hh * ww, c))  # (B, HW, C)
        return h + self.gate.to(h.dtype) * out.view(b, hh, ww, c).permute(0, 3, 1, 2)
