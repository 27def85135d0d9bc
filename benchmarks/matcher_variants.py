"""Fit the `matcher` stage's matcher under several settings and print what each code can carry.

    python benchmarks/matcher_variants.py '{"base": {}, "steps3000": {"steps": 3000}}' [--out DIR] [--jobs N]

Each variant is the `matcher` section of params.yaml with its overrides, fitted on this
project's data/prepared and data/embeddings (run ingest and embed first) into OUT/NAME, then
read by `benchmarks/text_ceiling.py --matcher OUT/NAME` (an MLP on the frozen caption code,
"both petal and stem right" per split). Variants run N at a time, each in its own process. Prints
one JSON object: per variant, the overrides, the fit's seconds, and the code
MLP's "both" per split.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fit(name: str, over: dict, out: Path, threads: int) -> dict:
    """One variant in a subprocess: fit, save, then the ceiling; returns its row."""
    done = subprocess.run([sys.executable, __file__, "--fit-one", json.dumps(over), str(out / name)], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    row = {"overrides": over, **json.loads(done.stdout.strip().splitlines()[-1])}
    ceiling = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "text_ceiling.py"), "--matcher", str(out / name),
                              "--threads", str(threads)],
                             cwd=ROOT, capture_output=True, text=True, check=True)
    code_mlp = json.loads(ceiling.stdout)["matcher_code_mlp"]
    row["code_both"] = {split: v["both"] for split, v in code_mlp.items()}
    print(json.dumps({name: row}), file=sys.stderr, flush=True)  # each as it lands
    return row


def fit_one(overrides: dict, out: Path) -> None:
    """In the child process: the matcher stage's own fit, with OVERRIDES on the `matcher` section."""
    sys.path.insert(0, str(ROOT))
    from t2i.config import load_section
    from t2i.train import load_train_data
    from t2i.train.matcher import fit_matcher_into

    params = load_section("matcher").model_copy(update=overrides)
    print(json.dumps(fit_matcher_into(load_train_data("data/prepared", "data/embeddings"), params, out)))


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--fit-one":
        return fit_one(json.loads(sys.argv[2]), Path(sys.argv[3]))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", help='JSON: {"name": {matcher overrides}, ...}')
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "t2i-matchers")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of each ceiling run")
    args = ap.parse_args()
    variants = json.loads(args.variants)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = dict(zip(variants, pool.map(lambda kv: fit(kv[0], kv[1], args.out, args.threads), variants.items())))
    print(json.dumps({"variants": rows, "seconds": round(time.perf_counter() - start, 1)}, indent=1))


if __name__ == "__main__":
    main()
