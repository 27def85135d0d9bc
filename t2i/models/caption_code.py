"""The matcher's caption code: a sentence vector plus learned-query pooling of the caption's words.

Why: a pooled USE sentence vector keeps little of which colour belongs to which part (a caption
and its word-order swap have cosine 0.989), while the contextual token states under it keep it: a
classifier with one attention query per attribute over the tokens reads both colours of unseen
wordings about 0.86 of the time, against 0.63 from the sentence vector
(`benchmarks/text_ceiling.py`). `TokenPool` is that reader without the labels: a few learned
queries attend over the tokens and their pooled values join the sentence projection in one code.
The matcher learns it on real image-caption pairs against each caption's one-word misses and
word-order swap (t2i/train/matcher.py), so what it pools is what tells matching images apart.

`CaptionCode` is that text side as a module of its own: the generator and discriminator read
captions through a frozen copy of the matcher's (AttnGAN's pretrained DAMSM text encoder), so the
binding the matcher learned is in their condition from the first step instead of being learned
again through the adversarial game.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from t2i.models.text_norm import TextNorm
from t2i.models.token_pca import TokenPCA
from t2i.models.word_match import masked_softmax

CODE_DIM = 256      # the matcher's joint image-text space
POOL_QUERIES = 4    # learned queries over the tokens (3 colour roles + one free)
POOL_WIDTH = 64     # key/value width of each query
TOKEN_PCA = 64      # token states reduced to this many PCA dims before pooling and word scores


class TokenPool(nn.Module):
    """(N, T, k) token states, (N, T) mask -> (N, out_dim): each learned query takes a softmax-
    weighted mean of the tokens' values; the Q means, concatenated, go through one linear map.
    Padded tokens get weight 0; a caption with no token pools to the bias."""

    def __init__(self, token_dim: int, out_dim: int, queries: int = POOL_QUERIES, width: int = POOL_WIDTH) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(token_dim)
        self.key = nn.Linear(token_dim, width)
        self.value = nn.Linear(token_dim, width)
        self.queries = nn.Parameter(torch.randn(queries, width) / math.sqrt(width))  # (Q, W)
        self.out = nn.Linear(queries * width, out_dim)

    def attention(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled (N, Q, W), weights (N, Q, T))."""
        x = self.norm(tokens.float())  # (N, T, k)
        k, v = self.key(x), self.value(x)  # (N, T, W)
        logits = torch.einsum("qw,ntw->nqt", self.queries, k) / math.sqrt(k.shape[-1])  # (N, Q, T)
        weights = masked_softmax(logits, mask[:, None, :].bool(), dim=-1)  # (N, Q, T)
        return torch.bmm(weights, v), weights  # (N, Q, W)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooled, _ = self.attention(tokens, mask)
        return self.out(pooled.flatten(1))  # (N, out_dim)


class CaptionCode(nn.Module):
    """Raw sentence vector (N, D), raw token states (N, T, token_dim), mask (N, T) -> code (N, CODE_DIM).

    The sentence is whitened on the training captions and projected; the tokens are reduced by a
    PCA fitted on the training tokens and pooled by `TokenPool`; the code is the sum. Without
    tokens (token_dim 0) the code is the sentence projection alone."""

    def __init__(self, text_dim: int, token_dim: int = 0) -> None:
        super().__init__()
        self.text_dim, self.token_dim = text_dim, token_dim
        self.text_norm = TextNorm(text_dim, "whiten")
        self.text_proj = nn.Linear(text_dim, CODE_DIM)
        if token_dim:
            self.token_norm = TokenPCA(token_dim, min(TOKEN_PCA, token_dim))
            self.pool = TokenPool(self.token_norm.k, CODE_DIM)

    @property
    def uses_tokens(self) -> bool:
        return self.token_dim > 0

    def from_reduced(self, text: torch.Tensor, reduced: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor:
        """The code from raw sentences and tokens already through `token_norm` ((N, T, k))."""
        code = self.text_proj(self.text_norm(text.float()))  # (N, CODE_DIM)
        if self.uses_tokens and reduced is not None:
            if mask is None:
                mask = torch.ones(reduced.shape[:2], dtype=torch.bool, device=reduced.device)
            code = code + self.pool(reduced, mask)
        return code

    def forward(self, text: torch.Tensor, tokens: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        reduced = self.token_norm(tokens) if self.uses_tokens and tokens is not None else None
        return self.from_reduced(text, reduced, mask)
