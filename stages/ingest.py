"""DVC stage ``ingest``: read the dataset named by ``ingest.dataset`` into ``data/prepared/``.

    python -m stages.ingest [--params params.yaml] [--out data/prepared]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from t2i.config import load_section
from t2i.data.prepared import write_prepared
from t2i.data.readers import get_reader
from t2i.errors import run_main


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="data/prepared")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    # Params, input and disk-full failures are one line each (t2i.errors.run_main).
    params = load_section("ingest", args.params)
    dataset = get_reader(params.dataset)(params)
    out = write_prepared(Path(args.out), dataset.table, dataset.images, dataset.manifest)
    counts = dataset.table["split"].value_counts().to_dict()
    per_split = ", ".join(f"{s} {counts.get(s, 0)}" for s in ("train", "test", "unseen", "novel_wording"))
    print(
        f"ingest: {params.dataset} -> {out}: {len(dataset.images)} images at "
        f"{params.resolution} px, {len(dataset.table)} captions ({per_split}), "
        f"{len(dataset.manifest.get('skipped', []))} skipped, {time.perf_counter() - start:.1f}s"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """The stage; a failure the user can fix is one line on stderr and a non-zero exit."""
    return run_main(_run, "ingest", argv, outputs="data/prepared/")


if __name__ == "__main__":
    sys.exit(main())
