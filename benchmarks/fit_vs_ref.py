"""Seconds of the `matcher` stage's fit, or of N GAN training steps, in this working tree against a git ref, printed as JSON.

    python benchmarks/fit_vs_ref.py [--stage matcher|train] [--project DIR] [--matcher DIR] [--steps 40] [--rounds 3] [--threads 1] [--ref HEAD]

DIR must hold data/prepared and data/embeddings from a `dvc repro` (default: this project), and
data/matcher for `--stage train`. Each round runs the stage once with the ref's code (checked out
in a temporary git worktree) and once with this tree's, each in a fresh process, rounds
interleaved so load on a shared machine hits both alike; the fastest round of each counts.
- matcher: a fit of `--steps` steps (params.yaml's `matcher` section otherwise); the seconds
  include the fit's set-up (whitening, token PCA, candidate tables), as the stage pays it.
- train: `--steps` steps of params.yaml's `train` section (its precision, so bf16 on an AVX-512
  BF16 CPU) with DIR/data/matcher, from fresh weights; the seconds include the loop's set-up
  (caption tables), not the data loading.
`final_loss` of each shows whether the two compute the same thing (the last logged loss).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(tree: Path, project: Path, stage: str, steps: int, threads: int, matcher_dir: Path) -> dict:
    """One fit or training run with the code of `tree`: seconds and the last logged loss."""
    sys.path.insert(0, str(tree))
    import logging

    import torch

    from t2i.train import load_train_data

    torch.set_num_threads(threads)
    data = load_train_data(project / "data" / "prepared", project / "data" / "embeddings")
    if stage == "train":
        return train_child(project, data, steps, threads, matcher_dir)
    from t2i.config import load_section
    from t2i.train.matcher import fit_matcher

    losses: list[float] = []

    class LastLoss(logging.Handler):  # the fit logs "matcher step i/n loss x" on its last step
        def emit(self, record: logging.LogRecord) -> None:
            losses.append(float(record.getMessage().rsplit(" ", 1)[-1]))

    logging.getLogger("t2i.models.fit").addHandler(LastLoss())
    logging.getLogger("t2i.models.fit").setLevel(logging.INFO)
    params = load_section("matcher", project / "params.yaml").model_copy(update={"steps": steps})
    start = time.perf_counter()
    fit_matcher(data, params, torch.device("cpu"))
    return {"seconds": round(time.perf_counter() - start, 2), "final_loss": losses[-1] if losses else None}


def train_child(project: Path, data, steps: int, threads: int, matcher_dir: Path) -> dict:  # noqa: ANN001 (the tree's TrainData)
    """`steps` GAN steps with params.yaml's `train` section and the project's matcher, into a temp dir."""
    from t2i.config import load_section, updated
    from t2i.models.matcher import Matcher
    from t2i.train import train
    from t2i.train.loop import Outputs

    params = updated(load_section("train", project / "params.yaml"),
                     {"steps": steps, "log_every": steps, "checkpoint_every": steps, "sample_every": steps * 10})
    runtime = load_section("train_runtime", project / "params.yaml").model_copy(update={"threads": threads})
    matcher = Matcher.load(matcher_dir)
    with tempfile.TemporaryDirectory(prefix="t2i-train-") as tmp:
        out = Path(tmp)
        outputs = Outputs(out / "models", out / "checkpoints", out / "losses.csv", out / "samples")
        start = time.perf_counter()
        result = train(params, data, outputs, matcher=matcher, runtime=runtime)
        seconds = time.perf_counter() - start
    last = result.history[-1]
    return {"seconds": round(seconds, 2), "final_loss": {"loss_d": last["loss_d"], "loss_g": last["loss_g"]}}


def run_child(tree: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(tree), "--project", str(args.project),
           "--stage", args.stage, "--matcher", str(args.matcher), "--steps", str(args.steps), "--threads", str(args.threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=tree)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=("matcher", "train"), default="matcher")
    ap.add_argument("--matcher", type=Path, default=None, help="train: the matcher directory (default: PROJECT/data/matcher)")
    ap.add_argument("--project", type=Path, default=ROOT)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ref", default="HEAD", help="the baseline's git ref (default: the last commit)")
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.project = args.project.resolve()
    args.matcher = (args.matcher or args.project / "data" / "matcher").resolve()
    if args.child is not None:
        print(json.dumps(child(args.child, args.project, args.stage, args.steps, args.threads, args.matcher)))
        return
    for sub in ("data/prepared", "data/embeddings"):
        if not (args.project / sub).is_dir():
            raise SystemExit(f"{args.project / sub} is missing: run `dvc repro embed` in {args.project} first")
    if args.stage == "train" and not args.matcher.is_dir():
        raise SystemExit(f"{args.matcher} is missing: run `dvc repro matcher` in {args.project} first (or pass --matcher)")
    commit = subprocess.run(["git", "rev-parse", "--short", args.ref], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="t2i-ref-") as tmp:
        ref_tree = Path(tmp) / "ref"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(ref_tree), args.ref], cwd=ROOT, check=True)
        try:
            runs: dict[str, list[dict]] = {"ref": [], "tree": []}
            for _ in range(args.rounds):
                runs["ref"].append(run_child(ref_tree, args))
                runs["tree"].append(run_child(ROOT, args))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(ref_tree)], cwd=ROOT, check=False)
    best = {k: min(r["seconds"] for r in v) for k, v in runs.items()}
    print(json.dumps({
        "stage": args.stage, "steps": args.steps, "threads": args.threads, "ref": commit, "machine": platform.processor() or platform.machine(),
        "ref_seconds": best["ref"], "tree_seconds": best["tree"],
        "speedup": round(best["ref"] / best["tree"], 3),
        "final_loss": {k: v[0]["final_loss"] for k, v in runs.items()}, "rounds": runs,
    }, indent=1))


if __name__ == "__main__":
    main()
