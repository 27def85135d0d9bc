"""Training data held in memory as tensors, with a resumable, shardable sampler.

The prepared images are small (4,000 x 32x32x3 uint8 = 12 MB), so they are read once into one
uint8 tensor and batches are gathered by index: no DataLoader workers, no per-step decoding, so
loading never bottlenecks the step. Sampling order is a pure function of (seed, epoch, cursor),
so a checkpoint needs only those three integers to reproduce the next batch exactly.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from t2i.data.prepared import load_prepared

_WORD = re.compile(r"[\w']+")


def words(caption: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(caption.lower()))


def bag_of_words(caption: str) -> tuple[str, ...]:
    return tuple(sorted(words(caption)))


def swap_partners(captions: list[str]) -> np.ndarray:
    """For each caption, the index of another caption with the same bag of words but a different
    word order (e.g. "a red flower with a yellow stem" / "a yellow flower with a red stem"), or -1.

    Dataset-agnostic on purpose: such pairs are exactly what a bag-of-words encoder cannot tell
    apart, which makes them the hardest mismatched negatives for the discriminator.
    """
    groups: dict[tuple[str, ...], dict[str, list[int]]] = {}
    for i, text in enumerate(captions):
        groups.setdefault(bag_of_words(text), {}).setdefault(" ".join(words(text)), []).append(i)
    partner = np.full(len(captions), -1, dtype=np.int64)
    for orders in groups.values():
        if len(orders) < 2:
            continue
        keys = list(orders)
        for k_i, key in enumerate(keys):
            other = orders[keys[(k_i + 1) % len(keys)]]  # any differently-ordered caption
            for j, i in enumerate(orders[key]):
                partner[i] = other[j % len(other)]
    return partner


def _distinct_texts(captions: list[str], image_index: np.ndarray) -> tuple[
        list[tuple[str, ...]], dict[tuple[str, ...], int], dict[tuple[str, ...], set[int]]]:
    """Tokens of each caption, the first row of each distinct text, and the images it describes."""
    tokens = [words(c) for c in captions]
    first_row: dict[tuple[str, ...], int] = {}
    images_of: dict[tuple[str, ...], set[int]] = {}
    for i, w in enumerate(tokens):
        first_row.setdefault(w, i)
        images_of.setdefault(w, set()).add(int(image_index[i]))
    return tokens, first_row, images_of


def _csr(tokens: list[tuple[str, ...]], others: dict[tuple[str, ...], list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-caption row lists as CSR arrays: caption i's rows are ``rows[offsets[i]:offsets[i + 1]]``."""
    counts = np.array([len(others[w]) for w in tokens], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    rows = np.fromiter((r for w in tokens for r in others[w]), dtype=np.int64, count=int(offsets[-1]))
    return offsets, rows


def near_miss_partners(captions: list[str], image_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each caption, the captions that differ from it in exactly one word ("the center is
    yellow" / "the center is blue"), as CSR arrays: the rows of caption i are
    ``rows[offsets[i]:offsets[i + 1]]``. One row per distinct text (identical texts share a
    vector); captions of the same image are left out, so a paraphrase is never a negative.

    Swapped captions only ever exchange two colours, so a discriminator that ignores a third
    attribute (the centre) still rejects every swap and every random caption; a one-word miss is
    the negative that makes each slot matter. On human captions a one-word miss can be a synonym
    (centre / center): train.near_miss=false turns them off.
    """
    tokens, first_row, images_of = _distinct_texts(captions, image_index)
    by_key: dict[tuple[int, tuple[str, ...]], list[tuple[str, ...]]] = {}
    for w in first_row:
        for pos in range(len(w)):
            by_key.setdefault((pos, w[:pos] + w[pos + 1 :]), []).append(w)
    near: dict[tuple[str, ...], list[int]] = {w: [] for w in first_row}
    for group in by_key.values():
        if len(group) < 2:
            continue
        for w in group:
            near[w].extend(first_row[o] for o in group if o != w and not images_of[o] & images_of[w])
    return _csr(tokens, near)


def word_order_partners(captions: list[str], image_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each caption, every caption with the same bag of words in another order, as CSR
    arrays like ``near_miss_partners`` (one row per distinct text, the caption's own image left
    out). ``swap_partners`` keeps one of them; a caption naming three colours has up to five
    (every permutation of the roles), and G's mistakes on such captions are often not the one
    kept (docs/results/tuning.md, session 10)."""
    tokens, first_row, images_of = _distinct_texts(captions, image_index)
    bags: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for w in first_row:
        bags.setdefault(tuple(sorted(w)), []).append(w)
    others = {w: [first_row[o] for o in group if o != w and not images_of[o] & images_of[w]]
              for group in bags.values() for w in group}
    return _csr(tokens, others)


def image_captions(image_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each caption, the other captions of its image, as CSR arrays like
    ``near_miss_partners`` (in row order). Real datasets have 5-10 captions per image (CUB,
    Oxford-102), the synthetic one 4; the contrastive term can score an image against all of
    them instead of one per step (``train.contrastive_captions``)."""
    order = np.argsort(image_index, kind="stable")
    sorted_images = image_index[order]
    starts = np.searchsorted(sorted_images, image_index, side="left")
    ends = np.searchsorted(sorted_images, image_index, side="right")
    others = {i: [int(r) for r in order[starts[i] : ends[i]] if r != i] for i in range(len(image_index))}
    counts = np.array([len(others[i]) for i in range(len(image_index))], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    rows = np.fromiter((r for i in range(len(image_index)) for r in others[i]), dtype=np.int64, count=int(offsets[-1]))
    return offsets, rows


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class TrainData:
    images: torch.Tensor        # (N, R, R, 3) uint8, all images (indexed by image_index)
    image_index: torch.Tensor   # (M,) int64, image of each train caption
    text: torch.Tensor          # (M, D) float32, sentence vector of each train caption
    partner: torch.Tensor       # (M,) int64, row (in these M) of the word-order swap, or -1
    table: pd.DataFrame         # full caption table (all splits), for sample captions
    all_text: np.ndarray        # (n_captions, D) float32, every row's embedding (mmap)
    encoder: dict[str, Any]     # encoder.json
    identity: str               # digest of data + embeddings: part of the checkpoint fingerprint
    near_offsets: torch.Tensor | None = None  # (M + 1,) int64 CSR offsets of one-word-miss captions
    near_rows: torch.Tensor | None = None     # (K,) int64 rows (in these M), see near_miss_partners
    order_offsets: torch.Tensor | None = None  # (M + 1,) int64 CSR offsets of same-words-other-order captions
    order_rows: torch.Tensor | None = None     # (J,) int64 rows (in these M), see word_order_partners
    sibling_offsets: torch.Tensor | None = None  # (M + 1,) int64 CSR offsets of the same image's other captions
    sibling_rows: torch.Tensor | None = None     # (S,) int64 rows (in these M), see image_captions

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])

    @property
    def text_dim(self) -> int:
        return int(self.text.shape[1])

    def batch(self, rows: torch.Tensor, device: torch.device, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images (B, 3, R, R) float in [-1, 1], text (B, D), swap-partner rows (B,))."""
        x = self.images[self.image_index[rows]].to(device, non_blocking=True)  # (B, R, R, 3) uint8
        x = x.permute(0, 3, 1, 2)  # (B, 3, R, R) view; its strides already are channels_last
        x = x.float().div_(127.5).sub_(1.0)
        x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        return x, self.text[rows].to(device, non_blocking=True), self.partner[rows]


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
    near_offsets, near_rows = near_miss_partners(captions, image_index)
    order_offsets, order_rows = word_order_partners(captions, image_index)
    sibling_offsets, sibling_rows = image_captions(image_index)
    identity = hashlib.sha256()
    for path in (prepared.path / "captions.parquet", prepared.path / "images.npy", emb_path):
        identity.update(file_digest(path).encode())
    identity.update(json.dumps(encoder, sort_keys=True).encode())
    return TrainData(
        images=torch.from_numpy(np.array(prepared.images)),  # one read into RAM, writable
        image_index=torch.from_numpy(image_index),
        text=torch.from_numpy(np.ascontiguousarray(all_text[train_rows], dtype=np.float32)),
        partner=torch.from_numpy(swap_partners(captions)),
        table=prepared.table,
        all_text=all_text,
        encoder=encoder,
        identity=identity.hexdigest(),
        near_offsets=torch.from_numpy(near_offsets),
        near_rows=torch.from_numpy(near_rows),
        order_offsets=torch.from_numpy(order_offsets),
        order_rows=torch.from_numpy(order_rows),
        sibling_offsets=torch.from_numpy(sibling_offsets),
        sibling_rows=torch.from_numpy(sibling_rows),
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
