"""The one file digest: sha256 of a file's bytes, read in chunks (identity of data and models)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_digest(path: Path | str, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
