"""Helpers (no tests): a tiny prepared dir + embeddings, and small TrainParams."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from t2i.config import LossParams, MatcherParams, ModelParams, TrainParams, TrainRuntimeParams, updated
from t2i.train import Outputs, load_train_data

COLOURS = ["red", "blue", "yellow", "white"]

# Every training test runs on one thread: quick on a shared machine, and a run's losses are the
# same from one run to the next (a resumed run is compared with a straight one bit for bit).
torch.set_num_threads(1)


def make_dataset(root: Path, n_images: int = 48, resolution: int = 32, dim: int = 32, seed: int = 0) -> tuple[Path, Path]:
    """data/prepared + data/embeddings under root: random images, random unit caption vectors,
    captions with word-order-swapped pairs."""
    rng = np.random.default_rng(seed)
    prepared, emb = root / "data" / "prepared", root / "data" / "embeddings"
    prepared.mkdir(parents=True)
    emb.mkdir(parents=True)
    rows = []
    for i in range(n_images):
        a, b = rng.choice(len(COLOURS), 2, replace=False)
        split = "test" if i % 8 == 7 else "train"
        for caption in (f"a {COLOURS[a]} flower with a {COLOURS[b]} stem", f"a flower with {COLOURS[a]} petals"):
            rows.append({"image_index": i, "split": split, "caption": caption, "class": COLOURS[a]})
    table = pd.DataFrame(rows)
    table.to_parquet(prepared / "captions.parquet", index=False)
    np.save(prepared / "images.npy", rng.integers(0, 256, (n_images, resolution, resolution, 3), dtype=np.uint8))
    (prepared / "manifest.json").write_text(json.dumps({"source": "test", "dataset": "test", "skipped": []}))
    vec = rng.normal(size=(len(table), dim)).astype(np.float32)
    np.save(emb / "embeddings.npy", vec / np.linalg.norm(vec, axis=1, keepdims=True))
    (emb / "encoder.json").write_text(json.dumps({"name": "random", "version": "0", "dim": dim, "handle": None}))
    return prepared, emb


def outputs_in(root: Path) -> Outputs:
    """The train stage's outputs under root (models/, checkpoints/, plots/losses.csv)."""
    return Outputs(root / "models", root / "checkpoints", root / "plots" / "losses.csv", root / "plots" / "samples")


def save_small_matcher(root: Path) -> Path:
    """root/data/matcher from a 2-step fit on the dataset under root: what the train stage loads
    when train.loss.matcher_weight > 0 (the default)."""
    from t2i.train.matcher import fit_matcher  # here, not at the top: the loop's tests need no matcher

    data = load_train_data(root / "data" / "prepared", root / "data" / "embeddings")
    fit_matcher(data, MatcherParams(steps=2, seed=0, batch_size=8), torch.device("cpu")).save(root / "data" / "matcher")
    return root / "data" / "matcher"


ONE_THREAD = TrainRuntimeParams(device="cpu", threads=1)


def small_params(model: dict[str, Any] | None = None, loss: dict[str, Any] | None = None,
                 optim: dict[str, Any] | None = None, **over: Any) -> TrainParams:
    """Tiny TrainParams; ``model`` / ``loss`` / ``optim`` change keys of those groups."""
    base = TrainParams(
        steps=6, batch_size=8, checkpoint_every=2, sample_every=3, log_every=1, precision="fp32", channels_last=True,
        model=ModelParams(z_dim=8, g_width=32, d_width=16, attention=[8, 16]),
        loss=LossParams(matcher_weight=0.0),  # the matcher's own tests (test_matcher.py) turn it on with a fitted one
    )
    return updated(base, {**over, "model": model or {}, "loss": loss or {}, "optim": optim or {}})
