"""The one interface every sentence encoder implements (docs/architecture.md, embed section)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np


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

    @abstractmethod
    def encode(self, texts: list[str]) -> np.ndarray:
        """(n,) captions -> (n, dim) float32, L2-normalised."""

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "dim": self.dim, "handle": self.handle}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.info()})"


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, in place; an all-zero row stays zero instead of NaN."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def batches(texts: list[str], size: int) -> list[list[str]]:
    return [texts[i:i + size] for i in range(0, len(texts), size)]
