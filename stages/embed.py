"""DVC stage `embed`: data/prepared/captions.parquet -> data/embeddings/ (embeddings.npy, token states, encoder.json).

    python -m stages.embed      (params: the `embed` section of params.yaml)

When the table has a `swap_caption` column (synthetic data), the word-order swaps are embedded
the same way into data/embeddings/swap/, row-aligned: train's swapped-caption negatives.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

from t2i.config import ParamsError, load_section
from t2i.text import EncoderError, get_encoder
from t2i.text.base import MAX_TOKENS
from t2i.text.embed_table import embed_table

PREPARED = Path("data/prepared")
OUT = Path("data/embeddings")


def main() -> int:
    try:
        p = load_section("embed")
    except ParamsError as exc:
        print(exc, file=sys.stderr)
        return 2
    captions = PREPARED / "captions.parquet"
    if not captions.is_file():
        print(f"{captions} not found: run the ingest stage first (dvc repro ingest)", file=sys.stderr)
        return 2
    try:
        encoder = get_encoder(
            p.encoder, handle=p.handle, device=p.device, threads=p.threads, batch_size=p.batch_size
        )
    except EncoderError as exc:
        print(f"embed: {exc}", file=sys.stderr)
        return 2
    max_tokens = getattr(p, "max_tokens", MAX_TOKENS)  # embed.max_tokens once params.yaml has it
    summary = embed_table(captions, OUT, encoder, chunk_size=p.chunk_size, progress=True, max_tokens=max_tokens)
    if "swap_caption" in pq.read_schema(captions).names:
        swap = embed_table(captions, OUT / "swap", encoder, chunk_size=p.chunk_size, progress=True,
                           max_tokens=max_tokens, column="swap_caption")
        summary["swap_seconds"] = swap["seconds"]
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
