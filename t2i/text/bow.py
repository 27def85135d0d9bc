"""``bow``: the word-order-blind baseline, the mean of per-word vectors of the same USE.

Each word is encoded alone by the ``use`` encoder and a caption's vector is the L2-normalised
mean of its words' vectors. "a red flower with a yellow stem" and "a yellow flower with a red
stem" hold the same words, so they get exactly the same vector: whatever a generator conditioned
on ``bow`` does, it cannot tell the two apart. That isolates the one thing USE adds.

Words are runs of letters/digits (``\\w+``, any script) plus each other non-space character on its
own (punctuation, emoji), case kept. Awkward input: ``""`` (no words) gets the ``use`` vector of
the empty string; a 5,000-word caption is a mean over 5,000 cached word vectors; emoji are words
of their own (mostly UNK pieces, see ``use``); a script written without spaces (Chinese,
Japanese) makes a whole run of characters one "word", encoded as a unit.
"""

from __future__ import annotations

import re

import numpy as np

from t2i.text.base import MAX_TOKENS, FlatTokens, SentenceEncoder, l2_normalise
from t2i.text.use import UseEncoder

WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    return WORD.findall(text)


class BowEncoder(SentenceEncoder):
    name = "bow"
    token_states = True  # its tokens are the per-word vectors it averages

    def __init__(
        self, device: str = "auto", threads: int = 1, batch_size: int = 512, max_words: int = 100_000
    ) -> None:
        self.use = UseEncoder(device=device, threads=threads, batch_size=batch_size)
        self.dim = self.use.dim
        self.version = f"mean-of-words/{self.use.version}"
        # word -> row of a (max_words, dim) table: bounded memory (100k words = 200 MB at most,
        # grown on demand); cleared when full, which only costs re-encoding words.
        self.max_words = max_words
        self._row: dict[str, int] = {}
        self._table = np.empty((0, self.dim), dtype=np.float32)

    def _rows(self, batch_words: list[list[str]]) -> None:
        new = list(dict.fromkeys(w for ws in batch_words for w in ws if w not in self._row))
        if len(self._row) + len(new) > self.max_words:
            self._row.clear()
            new = list(dict.fromkeys(w for ws in batch_words for w in ws))
        if not new:
            return
        start = len(self._row)
        need = start + len(new)
        if need > len(self._table):
            rows = min(max(need, 2 * len(self._table)), max(need, self.max_words))
            grown = np.empty((rows, self.dim), np.float32)
            grown[:start] = self._table[:start]
            self._table = grown
        self._table[start:need] = self.use.encode(new)  # (len(new), dim)
        self._row.update((w, start + i) for i, w in enumerate(new))

    def encode(self, texts: list[str]) -> np.ndarray:
        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)  # (n, dim)
        step = 4096  # words of this many captions are looked up at once
        for s in range(0, len(texts), step):
            part = [words(t) for t in texts[s:s + step]]
            self._rows(part)
            for j, ws in enumerate(part):
                if ws:
                    # Sorted rows: float sums depend on order, and swapped captions must give
                    # bit-identical vectors, not ones equal up to rounding.
                    out[s + j] = self._table[sorted(self._row[w] for w in ws)].mean(axis=0)
                else:  # no words at all: the sentence vector of "" (a fixed unit vector)
                    out[s + j] = self.use.encode([""])[0]
        return l2_normalise(out)

    def encode_tokens_flat(self, texts: list[str], max_tokens: int = MAX_TOKENS) -> FlatTokens:
        """The per-word vectors (one token per word, no context) of the first ``max_tokens`` words.

        A caption without words gets one token, the vector of "" that ``encode`` gives it.
        """
        texts = list(texts)
        sentence = self.encode(texts)  # (n, D)
        lengths = np.empty(len(texts), dtype=np.int64)
        parts: list[np.ndarray] = []
        pieces: list[str] = []
        for i, t in enumerate(texts):
            ws = words(t)[:max_tokens]
            if ws:
                self._rows([ws])
                parts.append(self._table[[self._row[w] for w in ws]].copy())  # (k, D)
            else:
                ws = [""]
                parts.append(self.use.encode([""]))
            pieces.extend(ws)
            lengths[i] = len(ws)
        tokens = np.concatenate(parts) if parts else np.empty((0, self.dim), np.float32)
        return FlatTokens(sentence, tokens, lengths, pieces)

    def pool_tokens(self, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The mean of the word vectors, L2-normalised: (n, T, D), (n, T) -> (n, D)."""
        m = mask.astype(np.float32)
        s = np.einsum("ntd,nt->nd", tokens.astype(np.float32), m) / np.maximum(m.sum(1), 1.0)[:, None]
        return l2_normalise(s.astype(np.float32))
