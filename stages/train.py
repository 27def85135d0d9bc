"""DVC stage `train`: data/prepared + data/embeddings -> models/, checkpoints/, plots/train/.

    python -m stages.train                          # one process (CPU or one GPU)
    torchrun --nproc_per_node=N -m stages.train     # DDP; only rank 0 logs and writes outs
Resumes by itself from checkpoints/ when params and data match; SIGINT/SIGTERM checkpoint first.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext

from t2i.config import TrainParams, TrainRuntimeParams, load_section
from t2i.errors import UserError, run_main
from t2i.models.matcher import Matcher
from t2i.run_lock import run_lock
from t2i.train import NonFiniteLossError, Outputs, TrainingInterrupted, init_distributed, load_train_data, train
from t2i.train.distributed import device_type_hint, shutdown
from t2i.train.tracker import tracker_opener


MATCHER = "data/matcher"


def _run(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--no-tracking", action="store_true", help="do not log to MLflow (tests, dry runs)")
    args = ap.parse_args(argv)
    params: TrainParams = load_section("train", args.params)
    runtime: TrainRuntimeParams = load_section("train_runtime", args.params)
    ctx = init_distributed(device_type_hint(runtime.device))
    try:
        # One trainer per directory: a second would overwrite this one's checkpoints/ and models/.
        with run_lock(say=print) if ctx.is_main else nullcontext():
            data = load_train_data("data/prepared", "data/embeddings")
            opener = None if args.no_tracking else tracker_opener(params, runtime, data)
            matcher = Matcher.load(MATCHER) if params.loss.matcher_weight > 0 or params.model.caption_code else None
            result = train(params, data, Outputs(), ctx, opener, matcher=matcher, runtime=runtime)
        if ctx.is_main:
            print(f"train: step {result.step}, {result.images_per_s:.0f} images/s -> models/")
        return 0
    except TrainingInterrupted as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 128 + int(exc.signum)
    except NonFiniteLossError as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        # Data that does not fit the params (fewer training captions than batch_size, a model
        # that does not fit the embeddings) or a damaged file; --debug shows where.
        raise UserError(str(exc)) from exc
    finally:
        shutdown(ctx)


def main(argv: list[str] | None = None) -> int:
    """The stage. Params, missing inputs (the matcher stage not run), a damaged checkpoint or
    model file, a full disk, an unreachable MLflow server and a directory in use by another
    trainer are each one line on stderr and a non-zero exit (t2i.errors.run_main)."""
    return run_main(_run, "train", argv, outputs="checkpoints/, models/, plots/train/")


if __name__ == "__main__":
    sys.exit(main())
