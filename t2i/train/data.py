"""Training data held in memory as tensors, with a resumable, shardable sampler.

The prepared images are small (4,000 x 32x32x3 uint8 = 12 MB), so they are read once into one
uint8 tensor and batches are gathered by index: no DataLoader workers, no per-step decoding, so
loading never bottlenecks the step. Sampling order is a pure function of (seed, epoch, cursor),
so a checkpoint needs only those three integers to reproduce the next batch exactly. Which
captions relate to which (swaps, one-word misses) is mined once, in negatives.py.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from t2i.data.prepared import load_prepared
from t2i.digest import file_digest
from t2i.train.negatives import CaptionRelations


@dataclass
class Batch:
    """One step's real pairs, on the training device. Per-token caption states would join as
    more fields here (and in `TrainData`, gathered by the same rows)."""
    rows: torch.Tensor    # (B,) train-caption rows (CPU), what the negatives are drawn for
    images: torch.Tensor  # (B, 3, R, R) float in [-1, 1]
    text: torch.Tensor    # (B, D) sentence vectors


@dataclass
class TrainData:
    images: torch.Tensor        # (N, R, R, 3) uint8, all images (indexed by image_index)
    image_index: torch.Tensor   # (M,) int64, image of each train caption
    text: torch.Tensor          # (M, D) float32, sentence vector of each train caption
    relations: CaptionRelations  # swaps, one-word misses, other orders, same-image captions
    table: pd.DataFrame         # full caption table (all splits), for sample captions
    all_text: np.ndarray        # (n_captions, D) float32, every row's embedding (mmap)
    encoder: dict[str, Any]     # encoder.json
    identity: str               # digest of data + embeddings: part of the checkpoint fingerprint

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])

    @property
    def text_dim(self) -> int:
        return int(self.text.shape[1])

    def batch(self, rows: torch.Tensor, device: torch.device, channels_last: bool) -> Batch:
        x = self.images[self.image_index[rows]].to(device, non_blocking=True)  # (B, R, R, 3) uint8
        x = x.permute(0, 3, 1, 2)  # (B, 3, R, R) view; its strides already are channels_last
        x = x.float().div_(127.5).sub_(1.0)
        x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        return Batch(rows=rows, images=x, text=self.text[rows].to(device, non_blocking=True))


def load_train_data(prepared_dir: str | Path, embeddings_dir: str | Path) -> TrainData:
    prepared = load_prepared(prepared_dir)
    emb_dir = Path(embeddings_dir)
    emb_path = emb_dir / "embeddings.npy"
    if not emb_path.is_file():
        raise FileNotFoundError(f"{emb_path} missing: run the embed stage first (`dvc repro embed`)")
    all_text = np.load(emb_path, mmap_mode="r")  # (n_captions, D) float32
    if len(all_text) != len(prepared.table):
        raise ValueError(
            f"{emb_path} has {len(all_text)} rows but {prepared.path}/captions.parquet has "
            f"{len(prepared.table)}: re-run the embed stage"
        )
    encoder_path = emb_dir / "encoder.json"
    encoder = json.loads(encoder_path.read_text(encoding="utf-8")) if encoder_path.is_file() else {}
    train_rows = np.flatnonzero(prepared.table["split"].to_numpy() == "train")
    if len(train_rows) == 0:
        raise ValueError(f"{prepared.path}: no captions with split == 'train'")
    captions = prepared.table["caption"].astype(str).to_numpy()[train_rows].tolist()
    image_index = prepared.table["image_index"].to_numpy()[train_rows].astype(np.int64)
    identity = hashlib.sha256()
    for path in (prepared.path / "captions.parquet", prepared.path / "images.npy", emb_path):
        identity.update(file_digest(path).encode())
    identity.update(json.dumps(encoder, sort_keys=True).encode())
    return TrainData(
        images=torch.from_numpy(np.array(prepared.images)),  # one read into RAM, writable
        image_index=torch.from_numpy(image_index),
        text=torch.from_numpy(np.ascontiguousarray(all_text[train_rows], dtype=np.float32)),
        relations=CaptionRelations.mine(captions, image_index),
        table=prepared.table,
        all_text=all_text,
        encoder=encoder,
        identity=identity.hexdigest(),
    )


class ShardedSampler:
    """Epoch-wise random permutation of the train rows, rank r taking positions r, r+W, ...

    Equivalent to torch's DistributedSampler (drop_last) but with an explicit, resumable
    cursor: the permutation of epoch e is drawn from seed + e, so (epoch, cursor) is the state.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        if n < batch_size * world:
            raise ValueError(f"{n} training captions < batch_size {batch_size} x {world} processes")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch, self.cursor = 0, 0
        self._perm: torch.Tensor | None = None

    def _permutation(self) -> torch.Tensor:
        if self._perm is None:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            full = torch.randperm(self.n, generator=g)
            per_rank = self.n // self.world
            self._perm = full[self.rank : per_rank * self.world : self.world]  # (n // W,)
        return self._perm

    def next(self) -> torch.Tensor:
        perm = self._permutation()
        if self.cursor + self.batch_size > len(perm):
            self.epoch, self.cursor, self._perm = self.epoch + 1, 0, None
            perm = self._permutation()
        rows = perm[self.cursor : self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return rows

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.cursor, self._perm = int(state["epoch"]), int(state["cursor"]), None
