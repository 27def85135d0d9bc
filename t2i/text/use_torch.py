"""Torch forward pass of the bundled USE: the package's weights and tokenizer, for CUDA.

The same network as ``use_numpy`` (see ``use_weights`` for the maths), written plainly: on a GPU
the per-token GEMMs are cheap, so there is no distinct-piece trick here, and the flat batch (all
tokens of a batch in one matrix, a sentinel zero row for window slots outside a sentence) keeps it
to a handful of large kernels. Runs on any torch device; the tests run it on CPU against the
package (cosine >= 0.999).
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import numpy as np
import torch

from t2i.text.use_numpy import window_index
from t2i.text.use_weights import CNN_DIM, MAX_LEFT, NUM_CHUNKS, ORDERS, UseWeights


def _layernorm(x: torch.Tensor, g: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    # Biased variance, eps inside the sqrt: the package's formula (== F.layer_norm).
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), g, b, eps)


class TorchUseForward:
    """``forward(list of piece-id lists) -> (n, 512)`` float32 numpy, L2-normalised."""

    def __init__(self, w: UseWeights, device: str | torch.device = "cuda") -> None:
        self.device = torch.device(device)
        self.eps = w.eps
        t: dict[str, Any] = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in w.tensors().items()}
        # The uint8 table stays uint8 on the device (65 MB); rows are dequantised per batch.
        self.t = {k: v.to(self.device) for k, v in t.items()}

    @torch.inference_mode()
    def forward(self, group: list[list[int]]) -> np.ndarray:
        return self._run(group, tokens=False)[0]

    @torch.inference_mode()
    def forward_tokens(self, group: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Sentence vectors (B, 512) and token states u_t = LN(f_t) @ cnn_W + cnn_b (n_tok, 512)."""
        return self._run(group, tokens=True)

    def _run(self, group: list[list[int]], tokens: bool) -> tuple[np.ndarray, np.ndarray | None]:
        t, dev = self.t, self.device
        lens_np = np.fromiter(map(len, group), dtype=np.int64, count=len(group))
        n_tok = int(lens_np.sum())
        starts_np = np.zeros(len(group), dtype=np.int64)
        np.cumsum(lens_np[:-1], out=starts_np[1:])
        flat = torch.from_numpy(
            np.fromiter(chain.from_iterable(group), dtype=np.int64, count=n_tok)
        ).to(dev)
        idx = torch.from_numpy(window_index(starts_np, lens_np, n_tok)).to(dev)  # (n_tok, 5)
        lens = torch.from_numpy(lens_np).to(dev)
        sent = torch.repeat_interleave(torch.arange(len(group), device=dev), lens)  # (n_tok,)

        chunk = flat % NUM_CHUNKS
        e = t["table"][flat].float() * t["scale"][chunk, None] + t["lo"][chunk, None]  # (n_tok, 512)
        x = _layernorm(e @ t["proj_W"] + t["proj_b"], t["ln_g_all"], t["ln_b_all"], self.eps)
        zero = torch.zeros(1, CNN_DIM, device=dev)
        branches = []
        for i, (n, left) in enumerate(ORDERS):
            cols = idx[:, MAX_LEFT - left:MAX_LEFT - left + n]  # (n_tok, n), n_tok = zero row
            xb = x[:, i * CNN_DIM:(i + 1) * CNN_DIM]  # (n_tok, 256)
            win = torch.cat([xb, zero])[cols].reshape(n_tok, n * CNN_DIM)
            h = torch.relu(win @ t[f"w1_{i}"] + t[f"b1_{i}"]) + xb
            win = torch.cat([h, zero])[cols].reshape(n_tok, n * CNN_DIM)
            branches.append(torch.relu(win @ t[f"w2_{i}"] + t[f"b2_{i}"]) + h)
        feats = _layernorm(torch.cat([e, *branches], dim=1), t["ln_g"], t["ln_b"], self.eps)
        flens = lens.float()[:, None]
        u = None
        if tokens:  # project every token, then pool: the token states are the output too
            u = feats @ t["cnn_W"] + t["cnn_b"]  # (n_tok, 512)
            s = torch.zeros(len(group), u.shape[1], device=dev).index_add_(0, sent, u) / flens.sqrt()
        else:  # the sum commutes with the projection: project sentences, not tokens
            sums = torch.zeros(len(group), feats.shape[1], device=dev).index_add_(0, sent, feats)
            s = (sums @ t["cnn_W"] + flens * t["cnn_b"]) / flens.sqrt()  # (B, 512)
        return self.head(s).cpu().numpy(), None if u is None else u.float().cpu().numpy()

    @torch.inference_mode()
    def pool(self, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The network's pooling of token states: (n, T, 512), (n, T) bool -> (n, 512) unit rows."""
        m = torch.from_numpy(np.asarray(mask, dtype=np.float32)).to(self.device)  # (n, T)
        u = torch.from_numpy(np.asarray(tokens, dtype=np.float32)).to(self.device)  # (n, T, 512)
        s = torch.einsum("ntd,nt->nd", u, m) / m.sum(1, keepdim=True).clamp_min(1).sqrt()
        return self.head(s).cpu().numpy()

    @torch.inference_mode()
    def head(self, s: torch.Tensor) -> torch.Tensor:
        """(B, 512) pooled sums -> (B, 512) unit sentence vectors (float32, on the device)."""
        t = self.t
        y1 = torch.relu(s @ t["p1"] + torch.relu(s @ t["d0"]) @ t["d1"])  # (B, 320)
        z = torch.tanh(y1 @ t["p3"] + torch.relu(y1 @ t["d2"]) @ t["d3"])  # (B, 512)
        return (z / z.pow(2).sum(1, keepdim=True).clamp_min(self.eps).sqrt()).float()
