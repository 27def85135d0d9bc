"""DVC stage `evaluate`: models/ + data/ -> eval/ (metrics.json, plots/, samples.png, report.html).

    python -m stages.evaluate                 (params: the `evaluate` section of params.yaml)
    python -m stages.evaluate --no-tracking   (do not log to the model's MLflow run)
Every metric is in t2i/eval/metrics/; this script only wires paths and prints the summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from t2i.config import load_section
from t2i.errors import UserError, run_main


def _run(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    ap.add_argument("--embeddings", type=Path, default=Path("data/embeddings"))
    ap.add_argument("--models", type=Path, default=Path("models"))
    ap.add_argument("--out", type=Path, default=Path("eval"))
    ap.add_argument("--losses", type=Path, default=Path("plots/train/losses.csv"),
                    help="the train stage's per-step losses, charted in the report")
    ap.add_argument("--no-tracking", action="store_true", help="do not log to MLflow (tests, dry runs)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="evaluate: %(message)s")
    params = load_section("evaluate", args.params)  # a params error is one line (run_main)
    torch.set_flush_denormal(True)  # small convnets on x86 CPUs slow down 2-10x on denormals

    from t2i.eval.pipeline import evaluate

    try:
        flat = evaluate(params, args.prepared, args.embeddings, args.models, args.out,
                        track=not args.no_tracking, losses_csv=args.losses)
    except ValueError as exc:  # a model that does not fit the data (missing files: run_main)
        raise UserError(str(exc)) from exc
    print(json.dumps(json.loads((args.out / "metrics.json").read_text(encoding="utf-8")), indent=1))
    print(f"evaluate: {len(flat)} figures -> {args.out}/metrics.json, {args.out}/report.html")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The stage; a failure the user can fix is one line on stderr and a non-zero exit."""
    return run_main(_run, "evaluate", argv, outputs="eval/")


if __name__ == "__main__":
    sys.exit(main())
