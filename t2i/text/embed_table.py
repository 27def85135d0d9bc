"""Embed a caption table into ``embeddings.npy`` + ``encoder.json``, chunk by chunk.

Memory is bounded by ``chunk_size``, not by the table: only the ``caption`` column is read, one
record batch at a time (pyarrow), each chunk is deduplicated (an identical caption is encoded
once per chunk) and its rows are written into a preallocated ``.npy`` memmap. Everything is
written into a temporary sibling directory that is renamed over ``out_dir`` at the end, so an
interrupted run never leaves half an embedding file for train to read.
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
from t2i.text.base import SentenceEncoder

EMBEDDINGS_FILE = "embeddings.npy"
ENCODER_FILE = "encoder.json"


def encode_unique(encoder: SentenceEncoder, captions: list[str]) -> tuple[np.ndarray, int]:
    """Vectors for ``captions`` with each distinct caption encoded once: ((n, D), n_distinct)."""
    codes, uniques = pd.factorize(pd.Series(captions, dtype=object), use_na_sentinel=False)
    vectors = encoder.encode([str(u) for u in uniques])  # (n_distinct, D)
    return vectors[codes], len(uniques)


def embed_table(
    captions_path: Path | str,
    out_dir: Path | str,
    encoder: SentenceEncoder,
    chunk_size: int = 50_000,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``out_dir/embeddings.npy`` (float32 (n, D), row i = caption row i) and encoder.json.

    Returns a summary: captions, distinct (summed per chunk), seconds, captions_per_s.
    """
    captions_path, out_dir = Path(captions_path), Path(out_dir)
    pf = pq.ParquetFile(captions_path)
    if "caption" not in pf.schema_arrow.names:
        raise ValueError(f"{captions_path} has no 'caption' column: {pf.schema_arrow.names}")
    n = pf.metadata.num_rows
    start = time.perf_counter()
    distinct, row = 0, 0
    with atomic_dir(out_dir) as tmp:
        out = np.lib.format.open_memmap(
            tmp / EMBEDDINGS_FILE, mode="w+", dtype=np.float32, shape=(n, encoder.dim)
        )  # (n, D), filled chunk by chunk
        bar = tqdm(total=n, unit="caption", unit_scale=True, disable=not progress, desc=f"embed {encoder.name}")
        with bar:
            for batch in pf.iter_batches(batch_size=chunk_size, columns=["caption"]):
                # None (a missing caption) is encoded as "" rather than crashing the stage.
                captions = ["" if c is None else c for c in batch.column(0).to_pylist()]
                vectors, k = encode_unique(encoder, captions)  # (len(batch), D)
                out[row:row + len(captions)] = vectors
                row += len(captions)
                distinct += k
                bar.update(len(captions))
        if row != n:
            raise RuntimeError(f"read {row} captions from {captions_path}, metadata says {n}")
        out.flush()
        del out  # close the memmap before the rename
        (tmp / ENCODER_FILE).write_text(json.dumps(encoder.info(), indent=2) + "\n", encoding="utf-8")
    seconds = time.perf_counter() - start
    return {
        "captions": n,
        "distinct_per_chunk": distinct,
        "seconds": round(seconds, 3),
        "captions_per_s": round(n / seconds, 1) if seconds > 0 else None,
        "encoder": encoder.info(),
    }


def load_embeddings(path: Path | str) -> tuple[np.ndarray, dict[str, Any]]:
    """``(embeddings (n, D) float32 read-only memmap, encoder.json dict)`` of ``data/embeddings``."""
    path = Path(path)
    info = json.loads((path / ENCODER_FILE).read_text(encoding="utf-8"))
    return np.load(path / EMBEDDINGS_FILE, mmap_mode="r"), info
