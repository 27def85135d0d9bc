"""DVC stage ``check_params``: validate every section of params.yaml before any stage runs.

    python -m stages.check_params [--params params.yaml] [--out data/params_checked]

DVC removes a stage's outputs before it runs the stage's command, so a stage that rejected its
own params would already have lost its previous result (a typo in ``train:`` would cost the
trained model). This stage depends on params.yaml as a file, so it reruns whenever params.yaml
changes, and every other stage depends on its output, so a params mistake anywhere stops the
pipeline before any output is touched. Its output is a constant marker: unchanged content means
no downstream stage reruns because of it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from t2i.atomic import atomic_write
from t2i.config import ParamsError, load_all

MARKER = b"params.yaml: every section valid\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="data/params_checked")
    args = parser.parse_args(argv)
    try:
        load_all(args.params)
    except ParamsError as exc:
        print(f"params check failed (no stage ran, every output is kept): {exc}", file=sys.stderr)
        return 2
    atomic_write(Path(args.out), MARKER)
    return 0


if __name__ == "__main__":
    sys.exit(main())
