"""DVC stage ``ingest``: read the dataset named by ``ingest.dataset`` into ``data/prepared/``.

    python -m stages.ingest [--params params.yaml] [--out data/prepared]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from t2i.config import ParamsError, load_section
from t2i.data.prepared import PreparedError, write_prepared
from t2i.data.readers import IngestError, get_reader


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="data/prepared")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        params = load_section("ingest", args.params)
        dataset = get_reader(params.dataset)(params)
        out = write_prepared(Path(args.out), dataset.table, dataset.images, dataset.manifest)
    except (ParamsError, IngestError, PreparedError, FileNotFoundError) as exc:
        print(f"ingest failed: {exc}", file=sys.stderr)
        return 1
    counts = dataset.table["split"].value_counts().to_dict()
    per_split = ", ".join(f"{s} {counts.get(s, 0)}" for s in ("train", "test", "unseen", "novel_wording"))
    print(
        f"ingest: {params.dataset} -> {out}: {len(dataset.images)} images at "
        f"{params.resolution} px, {len(dataset.table)} captions ({per_split}), "
        f"{len(dataset.manifest.get('skipped', []))} skipped, {time.perf_counter() - start:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
