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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from t2i.data.prepared import load_prepared
from t2i.digest import file_digest
from t2i.train.negatives import CSR, CaptionRelations
from t2i.train.nearest import NEAREST_K, NEAREST_MAX_CAPTIONS, count_false, nearest_partners, union_csr
from t2i.train.tokens import TrainTokens, open_tokens

SWAP_DIR = "swap"  # data/embeddings/swap: the embed stage's row-aligned swap captions


@dataclass
class Batch:
    """One step's real pairs, on the training device."""
    rows: torch.Tensor    # (B,) train-caption rows (CPU), what the negatives are drawn for
    images: torch.Tensor  # (B, 3, R, R) float in [-1, 1]
    text: torch.Tensor    # (B, D) sentence vectors
    tokens: torch.Tensor | None = None      # (B, T, token_dim) float32 raw token states (None: sentence-only)
    token_mask: torch.Tensor | None = None  # (B, T) bool


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
    # Every caption a negative can name: the M train captions, then the embedded word-order swaps
    # of some of them (relations.partner points there). None: the train captions only.
    pool_text_: torch.Tensor | None = None  # (M + S, D) float32
    tokens: TrainTokens | None = None       # per-token states of the pool rows (None: sentence-only)

    @property
    def pool_text(self) -> torch.Tensor:
        return self.text if self.pool_text_ is None else self.pool_text_

    @property
    def token_dim(self) -> int:
        return 0 if self.tokens is None else self.tokens.dim

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
        out = Batch(rows=rows, images=x, text=self.text[rows].to(device, non_blocking=True))
        if self.tokens is not None:
            tok, mask = self.tokens.gather(rows)  # (B, T, token_dim) float16, (B, T)
            out.tokens, out.token_mask = tok.to(device).float(), mask.to(device)
        return out


def load_train_data(prepared_dir: str | Path, embeddings_dir: str | Path, tokens: bool = True,
                    verbose: bool = True) -> TrainData:
    """The train split, its sentence vectors, the embedded swaps (where data/embeddings/swap has
    them), the token states (`tokens`, where the encoder stored them) and the mined relations."""
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
    table = prepared.table
    train_rows = np.flatnonzero(table["split"].to_numpy() == "train")
    if len(train_rows) == 0:
        raise ValueError(f"{prepared.path}: no captions with split == 'train'")
    captions = table["caption"].astype(str).to_numpy()[train_rows].tolist()
    image_index = table["image_index"].to_numpy()[train_rows].astype(np.int64)
    text = np.ascontiguousarray(all_text[train_rows], dtype=np.float32)  # (M, D)
    swap_of, swap_text, swap_files = _embedded_swaps(table, train_rows, emb_dir)
    relations = _relations(captions, image_index, text, swap_of)
    token_states = open_tokens(emb_dir, encoder, train_rows, swap_of) if tokens else None
    identity = hashlib.sha256()
    files = [prepared.path / "captions.parquet", prepared.path / "images.npy", emb_path, *swap_files]
    if token_states is not None:
        files += [emb_dir / "tokens.npy", emb_dir / "token_offsets.npy"]
    for path in files:
        identity.update(file_digest(path).encode())
    identity.update(json.dumps(encoder, sort_keys=True).encode())
    if verbose:
        print(describe_negatives(relations, len(captions), attributes=_attribute_keys(table, train_rows)))
    return TrainData(
        images=torch.from_numpy(np.array(prepared.images)),  # one read into RAM, writable
        image_index=torch.from_numpy(image_index),
        text=torch.from_numpy(text),
        relations=relations,
        table=table,
        all_text=all_text,
        encoder=encoder,
        identity=identity.hexdigest(),
        pool_text_=torch.from_numpy(np.concatenate([text, swap_text])) if len(swap_of) else None,
        tokens=token_states,
    )


def _embedded_swaps(table: pd.DataFrame, train_rows: np.ndarray, emb_dir: Path
                    ) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """Train captions with an embedded word-order swap: (their train indices (S,), the swaps'
    vectors (S, D), the files read). Empty where the table or data/embeddings/swap has none."""
    path = emb_dir / SWAP_DIR / "embeddings.npy"
    if "swap_caption" not in table.columns or not path.is_file():
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32), []
    swap = np.load(path, mmap_mode="r")  # (n_captions, D)
    if len(swap) != len(table):
        raise ValueError(f"{path} has {len(swap)} rows for {len(table)} captions: re-run the embed stage")
    caption = table["caption"].astype(str).to_numpy()[train_rows]
    swapped = table["swap_caption"].fillna("").astype(str).to_numpy()[train_rows]
    swap_of = np.flatnonzero((swapped != "") & (swapped != caption)).astype(np.int64)
    return swap_of, np.ascontiguousarray(swap[train_rows[swap_of]], dtype=np.float32), [path]


def _relations(captions: list[str], image_index: np.ndarray, text: np.ndarray, swap_of: np.ndarray
               ) -> CaptionRelations:
    """Mined relations; an embedded swap (pool row M + j) replaces the text-mined partner."""
    rel = CaptionRelations.mine(captions, image_index)
    partner = rel.partner.clone()
    partner[torch.from_numpy(swap_of)] = len(captions) + torch.arange(len(swap_of))
    if len(captions) > NEAREST_MAX_CAPTIONS:
        return replace(rel, partner=partner)
    near = (rel.near.offsets.numpy(), rel.near.rows.numpy())
    union = union_csr(near, nearest_partners(text, captions, image_index, NEAREST_K))
    return replace(rel, partner=partner, near_or_nearest=CSR.of(union))


def _attribute_keys(table: pd.DataFrame, train_rows: np.ndarray) -> np.ndarray | None:
    """One key per train caption naming the attributes it states (synthetic tables), else None."""
    cols = [c for c in ("petal_color", "center_color", "stem_color") if c in table.columns]
    if not cols or "mentions" not in table.columns:
        return None
    sub = table.iloc[train_rows]
    mentions = sub["mentions"].astype(str).str.split(",")
    keys = [tuple((c, row[c]) for c in cols if c in m) for m, (_, row) in zip(mentions, sub[cols].iterrows())]
    out = np.empty(len(keys), dtype=object)
    out[:] = keys
    return out


def describe_negatives(rel: CaptionRelations, m: int, attributes: np.ndarray | None = None) -> str:
    """One line per kind of hard negative: how many per train caption, and for how many captions."""
    lines = [f"train negatives over {m} captions (mean per caption, share of captions with one):"]
    partner = rel.partner.numpy()
    kinds = {"swap (embedded)": (partner >= m).astype(np.int64), "swap (text-mined)": ((partner >= 0) & (partner < m)).astype(np.int64),
             "one-word misses": rel.near.count(torch.arange(m)).numpy(),
             "same words, other order": rel.orders.count(torch.arange(m)).numpy()}
    if len(rel.near_or_nearest.rows):
        kinds["misses + nearest in sentence space"] = rel.near_or_nearest.count(torch.arange(m)).numpy()
    for name, counts in kinds.items():
        lines.append(f"  {name:36s} {counts.mean():7.2f} per caption, {100 * (counts > 0).mean():5.1f}% of captions")
    if attributes is not None and len(rel.near_or_nearest.rows):
        o, r = rel.near_or_nearest.offsets.numpy(), rel.near_or_nearest.rows.numpy()
        lines.append(f"  false negatives (same stated attributes) among misses + nearest: {100 * count_false(o, r, attributes):.1f}%")
    return "\n".join(lines)


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
