"""Embed a caption table into ``embeddings.npy``, the token states and ``encoder.json``, chunk by chunk.

Memory is bounded by ``chunk_size``, not by the table: only the ``caption`` column is read, one
record batch at a time (pyarrow), each chunk is deduplicated (an identical caption is encoded
once per chunk) and its rows are written into a preallocated ``.npy`` memmap; the token states
(``t2i.text.token_store``) are streamed to disk chunk by chunk. Everything is written into a
temporary sibling directory that is renamed over ``out_dir`` at the end, so an interrupted run
never leaves half an embedding file for train to read.

Readers use :func:`load_text_features` (sentence vectors, and token states + mask for any rows).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from tqdm import tqdm

from t2i.atomic import atomic_dir
from t2i.text.base import MAX_TOKENS, SentenceEncoder
from t2i.text.token_store import TextFeatures, TokenStore, TokenWriter, preallocated_memmap

EMBEDDINGS_FILE = "embeddings.npy"
ENCODER_FILE = "encoder.json"


def encode_unique(encoder: SentenceEncoder, captions: list[str]) -> tuple[np.ndarray, int]:
    """Vectors for ``captions`` with each distinct caption encoded once: ((n, D), n_distinct)."""
    codes, uniques = pd.factorize(pd.Series(captions, dtype=object), use_na_sentinel=False)
    vectors = encoder.encode([str(u) for u in uniques])  # (n_distinct, D)
    return vectors[codes], len(uniques)


def _encode_chunk(
    encoder: SentenceEncoder, captions: list[str], tokens: TokenWriter | None, row: int, max_tokens: int
) -> tuple[np.ndarray, int]:
    """Sentence vectors of one chunk (distinct captions once); token states go to ``tokens``."""
    if tokens is None:
        return encode_unique(encoder, captions)
    codes, uniques = pd.factorize(pd.Series(captions, dtype=object), use_na_sentinel=False)
    flat = encoder.encode_tokens_flat([str(u) for u in uniques], max_tokens)
    tokens.add(row, codes, flat.tokens, flat.lengths, flat.pieces)
    return flat.sentence[codes], len(uniques)


def embed_table(
    captions_path: Path | str,
    out_dir: Path | str,
    encoder: SentenceEncoder,
    chunk_size: int = 50_000,
    progress: bool = True,
    max_tokens: int = MAX_TOKENS,
    column: str = "caption",
) -> dict[str, Any]:
    """Write ``out_dir/embeddings.npy`` (float32 (n, D), row i = caption row i), the token states
    (the first ``max_tokens`` of each caption, when the encoder has them) and encoder.json.

    ``column`` names the text column (e.g. ``swap_caption`` for the word-order swaps).
    Returns a summary: captions, distinct (summed per chunk), seconds, captions_per_s.
    """
    captions_path, out_dir = Path(captions_path), Path(out_dir)
    pf = pq.ParquetFile(captions_path)
    if column not in pf.schema_arrow.names:
        raise ValueError(f"{captions_path} has no {column!r} column: {pf.schema_arrow.names}")
    n = pf.metadata.num_rows
    start = time.perf_counter()
    distinct, row = 0, 0
    with atomic_dir(out_dir) as tmp:
        out = preallocated_memmap(tmp / EMBEDDINGS_FILE, np.float32, (n, encoder.dim))  # (n, D), filled chunk by chunk
        tokens = TokenWriter(tmp, n, encoder.dim) if encoder.token_states else None
        bar = tqdm(total=n, unit="caption", unit_scale=True, disable=not progress, desc=f"embed {encoder.name}")
        with bar:
            for batch in pf.iter_batches(batch_size=chunk_size, columns=[column]):
                # None (a missing caption) is encoded as "" rather than crashing the stage.
                captions = ["" if c is None else c for c in batch.column(0).to_pylist()]
                vectors, k = _encode_chunk(encoder, captions, tokens, row, max_tokens)  # (len(batch), D)
                out[row:row + len(captions)] = vectors
                row += len(captions)
                distinct += k
                bar.update(len(captions))
        if row != n:
            raise RuntimeError(f"read {row} captions from {captions_path}, metadata says {n}")
        out.flush()
        del out  # close the memmap before the rename
        info = encoder.info() | {"max_tokens": max_tokens if tokens else None}
        if tokens is not None:
            info |= tokens.close()
        (tmp / ENCODER_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    seconds = time.perf_counter() - start
    return {
        "captions": n,
        "distinct_per_chunk": distinct,
        "seconds": round(seconds, 3),
        "captions_per_s": round(n / seconds, 1) if seconds > 0 else None,
        "encoder": info,
    }


def load_embeddings(path: Path | str) -> tuple[np.ndarray, dict[str, Any]]:
    """``(embeddings (n, D) float32 read-only memmap, encoder.json dict)`` of ``data/embeddings``."""
    path = Path(path)
    info = json.loads((path / ENCODER_FILE).read_text(encoding="utf-8"))
    return np.load(path / EMBEDDINGS_FILE, mmap_mode="r"), info


def load_text_features(
    path: Path | str, rows: np.ndarray | list[int] | slice | None = None, tokens: bool = True, mmap: bool = True
) -> TextFeatures:
    """Sentence vectors and (optionally) token states + mask of caption ``rows`` (None: all).

    ``sentence`` (n, D) float32; ``tokens`` (n, T, D) float16 and ``mask`` (n, T) bool, T the
    longest kept caption of the table (the same for every call), or None for a sentence-only
    encoder (``encoder.json`` "token_states": false) or ``tokens=False``. ``mmap`` keeps the
    files on disk (pages read on demand); for per-batch reads build one :class:`TokenStore`.
    """
    sentence, info = load_embeddings(path)
    if not mmap:
        sentence = np.array(sentence)
    if rows is not None:
        sentence = sentence[rows]
    if not (tokens and info.get("token_states")):
        return TextFeatures(sentence, None, None, info)
    tok, mask = TokenStore(path, mmap=mmap).gather(rows)
    return TextFeatures(sentence, tok, mask, info)
