"""One tuning run without DVC: train with overrides on an existing project's data, evaluate, print JSON.

    python benchmarks/tune_train.py NAME '{"train": {"steps": 1200, "optim": {"lr_g": 0.0005}}}' \
        [--project DIR] [--out DIR] [--matcher DIR]
    python benchmarks/tune_train.py W2 '{"train": {"model": {"text_norm": "scale"}}, "model": {"noise_in_blocks": false}}'

DIR must hold data/prepared and data/embeddings from a `dvc repro` (the default: this project).
"train" / "train_runtime" / "evaluate" override params.yaml sections (groups key by key);
"model" overrides GANConfig fields that params.yaml does not expose. Two runs with `"train_runtime": {"threads": 1}` side by side use 2 cores better than
one 2-thread run: that is how docs/results/tuning.md was made. The last line on stdout is the
result JSON (figures from eval/metrics.json). Faster than benchmarks/order_experiment.py (no
ingest/embed, no MLflow), so its numbers are for comparing settings, not for the Results table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from t2i.config import load_section, updated  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("overrides", help='JSON: {"train": {...}, "evaluate": {...}, "model": {...}}')
    ap.add_argument("--project", type=Path, default=ROOT, help="where data/prepared and data/embeddings are")
    ap.add_argument("--matcher", type=Path, default=None,
                    help="matcher directory for train.loss.matcher_weight > 0 or train.model.caption_code (default: PROJECT/data/matcher)")
    ap.add_argument("--no-eval", action="store_true", help="train only (evaluate OUT/NAME/models later)")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "t2i-tune", help="runs go to OUT/NAME")
    args = ap.parse_args()
    over = json.loads(args.overrides)
    unknown = set(over) - {"train", "train_runtime", "evaluate", "model"}
    if unknown:
        raise SystemExit(f"overrides: unknown sections {sorted(unknown)} (train, train_runtime, evaluate, model)")
    torch.set_flush_denormal(True)
    os.environ.setdefault("T2I_CACHE_DIR", str(args.project / ".cache" / "t2i"))

    import t2i.train.loop as loop
    from t2i.eval.pipeline import evaluate
    from t2i.models.matcher import Matcher
    from t2i.train import Outputs, load_train_data

    base_config = loop.model_config
    loop.model_config = lambda params, data: dataclasses.replace(base_config(params, data), **over.get("model", {}))

    prepared, embeddings = args.project / "data" / "prepared", args.project / "data" / "embeddings"
    out = args.out / args.name
    out.mkdir(parents=True, exist_ok=True)
    train_params = updated(load_section("train", ROOT / "params.yaml"), {"sample_every": 10**9, **over.get("train", {})})
    runtime = updated(load_section("train_runtime", ROOT / "params.yaml"), over.get("train_runtime", {}))
    eval_params = updated(load_section("evaluate", ROOT / "params.yaml"), over.get("evaluate", {}))
    data = load_train_data(prepared, embeddings)

    t0 = time.perf_counter()
    needs_matcher = train_params.loss.matcher_weight > 0 or train_params.model.caption_code
    matcher = Matcher.load(args.matcher or args.project / "data" / "matcher") if needs_matcher else None
    outputs = Outputs(models=out / "models", checkpoints=out / "checkpoints", losses_csv=out / "losses.csv",
                      sample_dir=out / "samples")
    result = loop.train(train_params, data, outputs, matcher=matcher, runtime=runtime)
    train_s = time.perf_counter() - t0
    if args.no_eval:
        print(json.dumps({"name": args.name, "overrides": over, "train_seconds": round(train_s),
                          "images_per_s": round(result.images_per_s, 1), "steps": result.step}))
        return
    t0 = time.perf_counter()
    evaluate(eval_params, prepared, embeddings, out / "models", out / "eval", track=False)
    eval_s = time.perf_counter() - t0
    metrics = json.loads((out / "eval" / "metrics.json").read_text(encoding="utf-8"))
    print(json.dumps({
        "name": args.name, "overrides": over, "train_seconds": round(train_s), "eval_seconds": round(eval_s), "images_per_s": round(result.images_per_s, 1),
        **{split: metrics.get(split) for split in ("test", "unseen", "novel_wording", "probe", "diversity")},
    }))


if __name__ == "__main__":
    main()
