"""Cache the evaluation judges by a fingerprint of what they were trained on.

Experiments that differ only in training params share ``data/prepared`` and
``data/embeddings``; retraining the attribute classifier and the image encoder for each would
cost every ``dvc exp run`` the same ~30 s for the same result. The key hashes the data files and
the judge's own settings (callers hash files with ``t2i.digest.file_digest``), so a new dataset
or a code change (``JUDGE_VERSION``) retrains.
Weights go through safetensors: nothing in the cache can run code when loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from t2i.atomic import atomic_path, atomic_write

JUDGE_VERSION = 1  # bump when a judge's architecture or training changes


def cache_dir() -> Path:
    return Path(os.environ.get("T2I_CACHE_DIR", ".cache/t2i")) / "eval"


def fingerprint(*parts: Any) -> str:
    blob = json.dumps([JUDGE_VERSION, *parts], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def load(kind: str, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    weights = cache_dir() / f"{kind}-{key}.safetensors"
    meta = cache_dir() / f"{kind}-{key}.json"
    if not (weights.is_file() and meta.is_file()):
        return None
    return load_file(str(weights)), json.loads(meta.read_text(encoding="utf-8"))


def save(kind: str, key: str, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write weights then metadata, each atomically (meta last marks the entry complete)."""
    d = cache_dir()
    with atomic_path(d / f"{kind}-{key}.safetensors") as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
    atomic_write(d / f"{kind}-{key}.json", json.dumps(meta, indent=1).encode())
