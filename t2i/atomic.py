"""Atomic directory outputs: a half-written artifact never replaces a good one.

A stage writes its whole output directory into a hidden sibling (same filesystem, so the final
rename is atomic), then swaps it in. Until the swap the previous result stays in place; if the
writer fails, the temp dir is removed and the previous result is left untouched.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_dir(out_dir: Path | str) -> Iterator[Path]:
    """Yield an empty temp dir; on success it replaces ``out_dir``, on failure it vanishes."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{tag}"
    old = out_dir.parent / f".{out_dir.name}.old-{tag}"
    tmp.mkdir()
    try:
        yield tmp
        if out_dir.exists():
            out_dir.rename(old)  # rename, not delete: the old result survives until the swap
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out_dir.exists():
            old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
