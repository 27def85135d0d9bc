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
        # No matcher: its own tests (test_matcher.py, test_caption_code.py) turn it on with a fitted one.
        model=ModelParams(z_dim=8, g_width=32, d_width=16, attention=[8, 16], caption_code=False),
        loss=LossParams(matcher_weight=0.0),
    )
    return updated(base, {**over, "model": model or {}, "loss": loss or {}, "optim": optim or {}})


def write_tokens(out: Path, captions: list[str], dim: int, seed: int) -> dict[str, Any]:
    """Ragged token states for `captions` in out/ through the embed stage's own writer: one random
    state per word, so a caption's words (and their order) are in its states."""
    from t2i.text.token_store import TokenWriter

    writer = TokenWriter(out, len(captions), dim)
    pieces = [c.split() for c in captions]
    flat = []
    for words in pieces:
        for pos, w in enumerate(words):  # contextual: the word's vector plus a trace of its position
            base = np.random.default_rng([seed, *map(ord, w)]).normal(size=dim).astype(np.float32)  # the word's own
            flat.append(base + 0.1 * pos)
    lengths = np.array([len(p) for p in pieces], np.int64)
    writer.add(0, np.arange(len(captions)), np.stack(flat), lengths, [w for p in pieces for w in p])
    return writer.close()


def make_token_dataset(root: Path, n_images: int = 48, dim: int = 32, seed: int = 0) -> tuple[Path, Path]:
    """`make_dataset` plus what the embed stage writes for a token encoder: per-token states,
    `token_states` in encoder.json, a swap_caption column and its embedded swaps (data/embeddings/swap)."""
    prepared, emb = make_dataset(root, n_images=n_images, dim=dim, seed=seed)
    table = pd.read_parquet(prepared / "captions.parquet")
    swap = []
    for caption in table["caption"]:
        words = caption.split()
        if "stem" in words:  # "a A flower with a B stem" -> "a B flower with a A stem"
            words[1], words[5] = words[5], words[1]
        swap.append(" ".join(words) if "stem" in words else "")
    table["swap_caption"] = swap
    table.to_parquet(prepared / "captions.parquet", index=False)
    info = json.loads((emb / "encoder.json").read_text())
    info.update(token_states=True, max_tokens=64, **write_tokens(emb, table["caption"].tolist(), dim, seed))
    (emb / "encoder.json").write_text(json.dumps(info))
    (emb / "swap").mkdir()
    rng = np.random.default_rng(seed + 1)
    vec = rng.normal(size=(len(table), dim)).astype(np.float32)
    np.save(emb / "swap" / "embeddings.npy", vec / np.linalg.norm(vec, axis=1, keepdims=True))
    swap_info = dict(info, **write_tokens(emb / "swap", [s or c for s, c in zip(swap, table["caption"])], dim, seed))
    (emb / "swap" / "encoder.json").write_text(json.dumps(swap_info))
    return prepared, emb
