"""Registry of dataset readers: ``ingest.dataset`` name -> module with ``read(params) -> Dataset``.

Adding a reader is one file with a ``read`` function plus one line here (and its name in
``IngestParams.dataset``). Modules are imported only when chosen, so the synthetic default never
pays for code that reads JSON annotations of a dataset it does not use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from t2i.config import IngestParams

READERS: dict[str, str] = {
    "synthetic": "t2i.data.synthetic",
    "oxford102": "t2i.data.oxford102",
    "cub": "t2i.data.cub",
    "coco": "t2i.data.coco",
    "folder": "t2i.data.folder",
}


class IngestError(RuntimeError):
    """A dataset cannot be ingested: missing files, or too many bad items."""


@dataclass
class Dataset:
    """What a reader returns; ``write_prepared`` turns it into ``data/prepared``."""

    table: pd.DataFrame  # one row per caption (image_index, split, caption, class, ...)
    images: np.ndarray  # (N, R, R, 3) uint8
    manifest: dict[str, Any] = field(default_factory=dict)  # source, dataset, skipped, ...


Reader = Callable[[IngestParams], Dataset]


def get_reader(name: str) -> Reader:
    if name not in READERS:
        raise IngestError(f"unknown dataset {name!r}; known: {', '.join(READERS)}")
    return importlib.import_module(READERS[name]).read
