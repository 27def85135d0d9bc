"""The one interface every sentence encoder implements (docs/architecture.md, embed section)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, NamedTuple

import numpy as np

MAX_TOKENS = 64  # token states kept per caption (embed.max_tokens); the sentence vector sees all


class TokenStates(NamedTuple):
    """What ``encode_tokens`` returns: the sentence vectors and the word features under them."""

    sentence: np.ndarray  # (n, D) float32, unit rows: the same vectors ``encode`` gives
    tokens: np.ndarray  # (n, T, D) float32, zero where ``mask`` is False
    mask: np.ndarray  # (n, T) bool, True on a caption's own tokens
    pieces: list[list[str]]  # the token strings of each caption, len(pieces[i]) == mask[i].sum()


class FlatTokens(NamedTuple):
    """The ragged form the embed stage stores: caption i owns rows offsets[i]:offsets[i+1]."""

    sentence: np.ndarray  # (n, D) float32
    tokens: np.ndarray  # (N, D) float32, N = sum of kept lengths
    lengths: np.ndarray  # (n,) int64, each <= max_tokens
    pieces: list[str]  # (N,) token strings


class EncoderError(RuntimeError):
    """An encoder cannot be built or run: the message says what to do about it."""


class SentenceEncoder(ABC):
    """Turns captions into sentence vectors.

    ``encode(texts)`` returns float32 ``(len(texts), dim)`` with unit-L2 rows, row i for
    ``texts[i]``. ``info()`` is what ``encoder.json`` records, and ``encoder_from_info(info)``
    rebuilds an equivalent encoder from it (evaluate and ``t2i generate`` do this).
    """

    name: str
    dim: int
    version: str
    handle: str | None = None
    token_states: bool = False  # whether encode_tokens works (False: sentence-only)

    @abstractmethod
    def encode(self, texts: list[str]) -> np.ndarray:
        """(n,) captions -> (n, dim) float32, L2-normalised."""

    def encode_tokens_flat(self, texts: list[str], max_tokens: int = MAX_TOKENS) -> FlatTokens:
        """Sentence vectors plus the first ``max_tokens`` token states of each caption, ragged."""
        raise EncoderError(f"encoder {self.name!r} is sentence-only: it exposes no token states")

    def encode_tokens(self, texts: list[str], max_tokens: int = MAX_TOKENS) -> TokenStates:
        """(n,) captions -> sentence (n, D), tokens (n, T, D), mask (n, T), pieces; T = longest kept.

        The one way to get word features, for the embed stage and for one caption at inference.
        """
        flat = self.encode_tokens_flat(list(texts), max_tokens)
        tokens, mask = pad_tokens(flat.tokens, flat.lengths)
        starts = np.concatenate([[0], np.cumsum(flat.lengths)])
        pieces = [flat.pieces[a:b] for a, b in zip(starts[:-1], starts[1:])]
        return TokenStates(flat.sentence, tokens, mask, pieces)

    def pool_tokens(self, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The encoder's own pooling of (n, T, D) token states -> (n, D) sentence vectors."""
        raise EncoderError(f"encoder {self.name!r} is sentence-only: it exposes no token states")

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "dim": self.dim, "handle": self.handle,
                "token_states": self.token_states}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.info()})"


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, in place; an all-zero row stays zero instead of NaN."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def batches(texts: list[str], size: int) -> list[list[str]]:
    return [texts[i:i + size] for i in range(0, len(texts), size)]


def pad_tokens(flat: np.ndarray, lengths: np.ndarray, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ragged (N, D) rows, (n,) lengths -> padded (n, T, D) (zeros past each length), mask (n, T)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    width = int(lengths.max(initial=0)) if width is None else width
    mask = np.arange(width)[None, :] < lengths[:, None]  # (n, T)
    out = np.zeros((len(lengths), width, flat.shape[1]), dtype=flat.dtype)  # (n, T, D)
    out[mask] = flat[: int(lengths.sum())]
    return out, mask
