"""Seconds of the `matcher` stage's fit in this working tree against a git ref, printed as JSON.

    python benchmarks/matcher_fit.py [--project DIR] [--steps 40] [--rounds 3] [--threads 1] [--ref HEAD]

DIR must hold data/prepared and data/embeddings from a `dvc repro` (default: this project).
Each round fits a matcher of `--steps` steps (params.yaml's `matcher` section otherwise) once
with the ref's code (checked out in a temporary git worktree) and once with this tree's, each in
a fresh process, rounds interleaved so load on a shared machine hits both alike; the fastest
round of each counts. The seconds include the fit's set-up (whitening, token PCA, candidate
tables), as the stage pays it. `final_loss` of each shows whether the two compute the same fit.
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


def child(tree: Path, project: Path, steps: int, threads: int) -> dict:
    """One fit with the code of `tree`: seconds and the last step's loss."""
    sys.path.insert(0, str(tree))
    import logging

    import torch

    from t2i.config import load_section
    from t2i.train import load_train_data
    from t2i.train.matcher import fit_matcher

    torch.set_num_threads(threads)
    losses: list[float] = []

    class LastLoss(logging.Handler):  # the fit logs "matcher step i/n loss x" on its last step
        def emit(self, record: logging.LogRecord) -> None:
            losses.append(float(record.getMessage().rsplit(" ", 1)[-1]))

    logging.getLogger("t2i.models.fit").addHandler(LastLoss())
    logging.getLogger("t2i.models.fit").setLevel(logging.INFO)
    params = load_section("matcher", project / "params.yaml").model_copy(update={"steps": steps})
    data = load_train_data(project / "data" / "prepared", project / "data" / "embeddings")
    start = time.perf_counter()
    fit_matcher(data, params, torch.device("cpu"))
    return {"seconds": round(time.perf_counter() - start, 2), "final_loss": losses[-1] if losses else None}


def run_child(tree: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(tree), "--project", str(args.project),
           "--steps", str(args.steps), "--threads", str(args.threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=tree)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--project", type=Path, default=ROOT)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ref", default="HEAD", help="the baseline's git ref (default: the last commit)")
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.project = args.project.resolve()
    if args.child is not None:
        print(json.dumps(child(args.child, args.project, args.steps, args.threads)))
        return
    for sub in ("data/prepared", "data/embeddings"):
        if not (args.project / sub).is_dir():
            raise SystemExit(f"{args.project / sub} is missing: run `dvc repro embed` in {args.project} first")
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
        "steps": args.steps, "threads": args.threads, "ref": commit, "machine": platform.processor() or platform.machine(),
        "ref_seconds": best["ref"], "tree_seconds": best["tree"],
        "speedup": round(best["ref"] / best["tree"], 3),
        "final_loss": {k: v[0]["final_loss"] for k, v in runs.items()}, "rounds": runs,
    }, indent=1))


if __name__ == "__main__":
    main()
