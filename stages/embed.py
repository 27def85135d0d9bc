"""DVC stage `embed`: data/prepared/captions.parquet -> data/embeddings/ (embeddings.npy, token states, encoder.json).

    python -m stages.embed      (params: the `embed` section of params.yaml)

When the table has a `swap_caption` column (synthetic data), the word-order swaps are embedded
the same way into data/embeddings/swap/, row-aligned: train's swapped-caption negatives.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

from t2i.config import load_section
from t2i.errors import UserError, run_main
from t2i.text import get_encoder
from t2i.text.base import MAX_TOKENS
from t2i.text.embed_table import embed_table

PREPARED = Path("data/prepared")
OUT = Path("data/embeddings")


def _run(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    # Params, encoder, input and disk-full failures are one line each (t2i.errors.run_main).
    p = load_section("embed", args.params)
    captions = PREPARED / "captions.parquet"
    if not captions.is_file():
        raise UserError(f"{captions} not found: run the ingest stage first (dvc repro ingest)")
    encoder = get_encoder(p.encoder, handle=p.handle, device=p.device, threads=p.threads, batch_size=p.batch_size)
    max_tokens = getattr(p, "max_tokens", MAX_TOKENS)  # embed.max_tokens once params.yaml has it
    summary = embed_table(captions, OUT, encoder, chunk_size=p.chunk_size, progress=True, max_tokens=max_tokens)
    if "swap_caption" in pq.read_schema(captions).names:
        swap = embed_table(captions, OUT / "swap", encoder, chunk_size=p.chunk_size, progress=True,
                           max_tokens=max_tokens, column="swap_caption")
        summary["swap_seconds"] = swap["seconds"]
    print(json.dumps(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    """The stage; a failure the user can fix is one line on stderr and a non-zero exit."""
    return run_main(_run, "embed", argv, outputs="data/embeddings/")


if __name__ == "__main__":
    sys.exit(main())
