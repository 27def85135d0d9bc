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
    code = (
        "import json, sys, time, torch; sys.path.insert(0, %r)\n"
        "from t2i.config import load_section\nfrom t2i.device import pick_device\n"
        "from t2i.train import load_train_data\nfrom t2i.train.matcher import fit_matcher\n"
        "p = load_section('matcher').model_copy(update=json.loads(sys.argv[1]))\n"
        "data = load_train_data('data/prepared', 'data/embeddings')\n"
        "t0 = time.perf_counter(); m = fit_matcher(data, p, pick_device(p.device)); m.save(sys.argv[2])\n"
        "print(json.dumps({'seconds': round(time.perf_counter() - t0, 1)}))\n" % str(ROOT))
    done = subprocess.run([sys.executable, "-c", code, json.dumps(over), str(out / name)], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    row = {"overrides": over, **json.loads(done.stdout.strip().splitlines()[-1])}
    ceiling = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "text_ceiling.py"), "--matcher", str(out / name),
                              "--threads", str(threads)],
                             cwd=ROOT, capture_output=True, text=True, check=True)
    code_mlp = json.loads(ceiling.stdout)["matcher_code_mlp"]
    row["code_both"] = {split: v["both"] for split, v in code_mlp.items()}
    print(json.dumps({name: row}), file=sys.stderr, flush=True)  # each as it lands
    return row


def main() -> None:
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
