"""DVC stage `matcher`: data/prepared + data/embeddings -> data/matcher/ (matcher.safetensors, matcher.json).

    python -m stages.matcher    (params: the `matcher` section of params.yaml)

Fits the frozen image-caption scorer that G's loss uses when train.loss.matcher_weight > 0
(t2i/models/matcher.py). Real train images with their sentence vectors, and their token states where
the embed stage stored them (words scored against regions); no labels.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from t2i.config import load_section
from t2i.errors import UserError, run_main
from t2i.train import load_train_data
from t2i.train.matcher import fit_matcher_into

OUT = Path("data/matcher")


def _run(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = load_section("matcher")
    try:
        data = load_train_data("data/prepared", "data/embeddings")
    except ValueError as exc:  # data that does not fit (missing files: run_main)
        raise UserError(str(exc)) from exc
    print(json.dumps(fit_matcher_into(data, p, OUT)))
    return 0


def main(argv: list[str] | None = None) -> int:
    """The stage; a failure the user can fix is one line on stderr and a non-zero exit."""
    return run_main(_run, "matcher", argv, outputs="data/matcher/")


if __name__ == "__main__":
    sys.exit(main())
