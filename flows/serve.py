"""Serve the t2i deployments from this checkout (needs a Prefect server, not the ephemeral API).

    prefect server start --host 127.0.0.1                      # another terminal
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python flows/serve.py                                      # registers and runs the deployments
    prefect deployment run 't2i-pipeline/on-demand' -p overrides='{"train.steps": 500}'

Deployments: `t2i-pipeline/nightly` (cron, DVC reruns what changed: new data in data/raw, code,
params), `t2i-pipeline/on-demand` (parameters: overrides, exp_name, force) and `t2i-sweep/sweep`.
`limit=1`: this process runs one flow at a time, since all share one DVC workspace (DVC locks it).
For other machines use a work pool instead: see prefect.yaml.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

from prefect import serve

from flows.pipeline import pipeline
from flows.sweep import sweep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cron", default="0 2 * * *", help="nightly schedule (cron, UTC)")
    args = ap.parse_args()
    os.chdir(ROOT)  # flows default to project_dir="."
    nightly = pipeline.to_deployment(
        name="nightly", cron=args.cron, tags=["t2i", "nightly"],
        description="Nightly retrain: `dvc repro` through Prefect; DVC reruns only what changed.",
    )
    on_demand = pipeline.to_deployment(
        name="on-demand", tags=["t2i"],
        description="Run the pipeline; `overrides` (dotted params) make a DVC experiment.",
    )
    sweep_dep = sweep.to_deployment(name="sweep", tags=["t2i"], description="Grid search, one DVC experiment per point.")
    serve(nightly, on_demand, sweep_dep, limit=1)


if __name__ == "__main__":
    main()
