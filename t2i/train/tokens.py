"""The per-token caption states training reads: the train captions', then their swaps'.

Rows follow `TrainData.pool_text`: train caption i is row i; the word-order swap embedded by the
embed stage (data/embeddings/swap/) of train caption `swap_of[j]` is row M + j. The states stay in
the memory-mapped ragged store (t2i/text/token_store.py) and are gathered per use: G's batch rows
every step, and the rows D scores once per run through G's token PCA (`reduced_table`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from t2i.text.token_store import TokenStore


@dataclass
class TrainTokens:
    store: TokenStore              # data/embeddings: every caption row's token states
    swap_store: TokenStore | None  # data/embeddings/swap: row i = the swap of caption row i
    source: np.ndarray             # (P,) int64 caption-table row of each pool row
    from_swap: np.ndarray          # (P,) bool: the row's states come from swap_store
    width: int                     # T: the longest pool caption, in tokens

    @property
    def dim(self) -> int:
        return int(self.store.tokens.shape[1])

    def __len__(self) -> int:
        return len(self.source)

    def gather(self, rows: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, T, dim) float16 states (zero past each caption) and (n, T) bool mask of pool rows."""
        rows = np.asarray(rows.cpu() if isinstance(rows, torch.Tensor) else rows, dtype=np.int64)
        out = np.zeros((len(rows), self.width, self.dim), np.float16)
        mask = np.zeros((len(rows), self.width), bool)
        swapped = self.from_swap[rows]
        for store, pick in ((self.store, ~swapped), (self.swap_store, swapped)):
            if store is None or not pick.any():
                continue
            t, m = store.gather(self.source[rows[pick]])  # (k, T_store, dim), (k, T_store)
            w = min(self.width, t.shape[1])
            out[pick, :w], mask[pick, :w] = t[:, :w], m[:, :w]
        return torch.from_numpy(out), torch.from_numpy(mask)

    @torch.no_grad()
    def fit_sample(self, rows: int, seed: int = 0) -> torch.Tensor:
        """(N, dim) float32 real token states of up to `rows` train captions (not swaps): what
        G's token PCA is fitted on."""
        train = np.flatnonzero(~self.from_swap)
        pick = np.random.default_rng(seed).choice(train, size=min(rows, len(train)), replace=False)
        t, m = self.gather(np.sort(pick))
        return t[m].float()  # (N, dim)

    @torch.no_grad()
    def reduced_table(self, reduce: torch.nn.Module | None, device: torch.device,
                      chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
        """Every pool row's states through `reduce` (G's token PCA; None: as stored, float16):
        ((P, T, k), (P, T) bool) on `device`, read in chunks so the raw table is never whole in memory."""
        parts, masks = [], []
        for start in range(0, len(self), chunk):
            t, m = self.gather(np.arange(start, min(start + chunk, len(self))))
            t = t.to(device)
            parts.append(t if reduce is None else reduce(t))
            masks.append(m.to(device))
        return torch.cat(parts), torch.cat(masks)


def open_tokens(emb_dir: Path, encoder: dict, train_rows: np.ndarray, swap_of: np.ndarray) -> TrainTokens | None:
    """The train captions' token states (and their swaps' where `swap_of` is not empty), or None
    when the encoder stored none (encoder.json "token_states": false: sentence-only training)."""
    if not encoder.get("token_states"):
        return None
    store = TokenStore(emb_dir)
    swap_store = TokenStore(emb_dir / "swap") if len(swap_of) else None
    source = np.concatenate([train_rows, train_rows[swap_of]]).astype(np.int64)
    from_swap = np.concatenate([np.zeros(len(train_rows), bool), np.ones(len(swap_of), bool)])
    lengths = np.concatenate([store.offsets[train_rows, 1],
                              swap_store.offsets[train_rows[swap_of], 1] if swap_store is not None else []])
    return TrainTokens(store, swap_store, source, from_swap, max(1, int(lengths.max(initial=1))))
