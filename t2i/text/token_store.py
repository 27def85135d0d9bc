"""The word features of ``data/embeddings/``: ragged float16 token states, written and read.

Layout (row i of the caption table owns token rows ``offsets[i, 0] : offsets[i, 0] + offsets[i, 1]``;
identical captions of one chunk are encoded once and share their range):

* ``tokens.npy``        (N, D) float16, every kept token state, memory-mappable
* ``token_offsets.npy`` (n, 2) int64, (start, length) per caption row
* ``token_pieces.npy``  (N,) int32, index of each token's string in ``token_vocab.json``
* ``token_vocab.json``  the distinct token strings (SentencePiece pieces for ``use``, words for ``bow``)

Ragged, not padded: a few long captions would otherwise set the padding of every row. The total
N is unknown until the last chunk is encoded, so ``tokens.npy`` is written as a stream behind a
fixed-size header that is filled in at the end (a valid .npy: ``np.load(mmap_mode="r")`` reads it).
:func:`load_text_features` / :class:`TokenStore` are the one way to read them back.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from t2i.text.base import pad_tokens

TOKENS_FILE = "tokens.npy"
OFFSETS_FILE = "token_offsets.npy"
PIECES_FILE = "token_pieces.npy"
VOCAB_FILE = "token_vocab.json"
_HEADER = 128  # bytes: magic + version + length + the dict, space-padded (a multiple of 64)


def preallocated_memmap(path: Path, dtype: type | np.dtype, shape: tuple[int, ...]) -> np.memmap:
    """A writable ``.npy`` memmap whose every byte is allocated on disk before it is mapped.

    ``open_memmap`` alone makes a sparse file: on a full disk the first write to an unbacked page
    kills the process with SIGBUS, no message. Allocating up front turns that into an ``OSError``
    (ENOSPC) here, which the stage reports naming the file.
    """
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    size = out.offset + out.nbytes
    del out  # written: header and length; nothing mapped is touched before the allocation
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, size)
        except OSError as exc:
            exc.filename = str(path)
            raise
    return np.lib.format.open_memmap(path, mode="r+")


class StreamNpy:
    """Append rows of fixed width to a .npy file whose length is known only at ``close``."""

    def __init__(self, path: Path, dtype: Any, width: int | None) -> None:
        self.dtype, self.width, self.rows = np.dtype(dtype), width, 0
        self.f: BinaryIO = open(path, "wb")
        self.f.write(b"\0" * _HEADER)

    def append(self, a: np.ndarray) -> None:
        a = np.ascontiguousarray(a, dtype=self.dtype)
        if a.shape[1:] != (() if self.width is None else (self.width,)):
            raise ValueError(f"rows of shape {a.shape[1:]} for a stream of width {self.width}")
        self.f.write(a.tobytes())
        self.rows += len(a)

    def close(self) -> None:
        shape = (self.rows,) if self.width is None else (self.rows, self.width)
        desc = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
        body = repr(desc).encode("latin1")
        pad = _HEADER - 10 - len(body) - 1
        if pad < 0:
            raise ValueError(f"npy header {body!r} does not fit {_HEADER} bytes")
        self.f.seek(0)
        self.f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", _HEADER - 10) + body + b" " * pad + b"\n")
        self.f.close()


class TokenWriter:
    """Streams one chunk of (distinct) captions' token states after another into ``out_dir``."""

    def __init__(self, out_dir: Path, n_rows: int, dim: int) -> None:
        self.out_dir = out_dir
        self.tokens = StreamNpy(out_dir / TOKENS_FILE, np.float16, dim)
        self.pieces = StreamNpy(out_dir / PIECES_FILE, np.int32, None)
        self.offsets = preallocated_memmap(out_dir / OFFSETS_FILE, np.int64, (n_rows, 2))  # ENOSPC, not SIGBUS
        self.vocab: dict[str, int] = {}
        self.width = 0

    def add(self, row: int, codes: np.ndarray, tokens: np.ndarray, lengths: np.ndarray, pieces: list[str]) -> None:
        """Rows ``row : row + len(codes)``; row j holds distinct caption ``codes[j]``'s tokens."""
        starts = self.tokens.rows + np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.offsets[row:row + len(codes), 0] = starts[codes]
        self.offsets[row:row + len(codes), 1] = lengths[codes]
        self.tokens.append(tokens)
        vocab = self.vocab
        self.pieces.append(np.fromiter((vocab.setdefault(p, len(vocab)) for p in pieces), np.int32, len(pieces)))
        self.width = max(self.width, int(lengths.max(initial=0)))

    def close(self) -> dict[str, Any]:
        """Finish the files; returns what encoder.json records about them."""
        self.tokens.close()
        self.pieces.close()
        self.offsets.flush()
        del self.offsets
        words = sorted(self.vocab, key=self.vocab.__getitem__)
        (self.out_dir / VOCAB_FILE).write_text(json.dumps(words, ensure_ascii=False) + "\n", encoding="utf-8")
        return {"token_width": self.width, "token_rows": self.tokens.rows, "token_dtype": "float16"}


class TokenStore:
    """Read side: ``gather(rows)`` -> padded (B, T, D) float16 token states and (B, T) bool mask.

    T is ``width``, the longest kept caption of the whole table, so every batch has one shape.
    """

    def __init__(self, path: Path | str, mmap: bool = True) -> None:
        path = Path(path)
        for name in (TOKENS_FILE, OFFSETS_FILE):
            if not (path / name).is_file():
                raise FileNotFoundError(f"{path / name} not found: re-run the embed stage (dvc repro embed)")
        mode = "r" if mmap else None
        self.path = path
        self.tokens = np.load(path / TOKENS_FILE, mmap_mode=mode)  # (N, D) float16
        self.offsets = np.load(path / OFFSETS_FILE)  # (n, 2) int64: small, always in memory
        self.width = int(self.offsets[:, 1].max(initial=0))
        self._pieces: np.ndarray | None = None
        self._vocab: list[str] | None = None

    def __len__(self) -> int:
        return len(self.offsets)

    def gather(self, rows: np.ndarray | list[int] | slice | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(B, T, D) float16 (zeros past each caption) and (B, T) bool for caption rows ``rows``."""
        off = self.offsets if rows is None else self.offsets[rows]
        mask = np.arange(self.width)[None, :] < off[:, 1:2]  # (B, T)
        idx = np.where(mask, off[:, :1] + np.arange(self.width)[None, :], 0)  # (B, T)
        flat_idx = idx[mask]
        out = np.zeros((len(off), self.width, self.tokens.shape[1]), np.float16)
        if len(flat_idx):
            order = np.argsort(flat_idx, kind="stable")  # memmap reads in file order
            rows_read = np.empty((len(flat_idx), self.tokens.shape[1]), np.float16)
            rows_read[order] = self.tokens[flat_idx[order]]
            out[mask] = rows_read
        return out, mask

    def pieces(self, row: int) -> list[str]:
        """The token strings of caption row ``row``."""
        if self._pieces is None:
            self._pieces = np.load(self.path / PIECES_FILE, mmap_mode="r")
            self._vocab = json.loads((self.path / VOCAB_FILE).read_text(encoding="utf-8"))
        start, length = (int(v) for v in self.offsets[row])
        return [self._vocab[int(i)] for i in self._pieces[start:start + length]]


@dataclass
class TextFeatures:
    """What a consumer of ``data/embeddings`` reads: see :func:`load_text_features`."""

    sentence: np.ndarray  # (n, D) float32 sentence vectors (a read-only memmap when mmap)
    tokens: np.ndarray | None  # (n, T, D) float16 token states, zero past each caption; None: sentence-only
    mask: np.ndarray | None  # (n, T) bool, True on a caption's tokens; None: sentence-only
    info: dict[str, Any]  # encoder.json


def pad_flat(flat: np.ndarray, lengths: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Ragged token rows -> (n, width, D), (n, width): the inference-time counterpart of gather."""
    return pad_tokens(flat, lengths, width)
