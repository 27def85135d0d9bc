"""An image encoder trained contrastively against the *frozen* sentence vectors.

It serves two metrics on any dataset, ground truth or not: R-precision (does the image retrieve
its own caption among 99 others?) and, through its trunk, the project's image-feature space
used by ``diversity`` and ``fid_domain``. Trained on real train images only; its R-precision on
real test images is the ceiling a generator can reach under this judge.
"""

from __future__ import annotations

import logging
from dataclasses import astuple, dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from t2i.eval import cache
from t2i.models.fit import FitSettings, fit
from t2i.models.trunk import FEATURE_DIM, Trunk, apply, augment, to_input

log = logging.getLogger(__name__)
TEMPERATURE = 0.05  # fixed: a learnt one wanders in 600 steps and buys nothing here


class _Net(nn.Module):
    def __init__(self, text_dim: int) -> None:
        super().__init__()
        self.trunk = Trunk()
        self.proj = nn.Linear(FEATURE_DIM, text_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.trunk(x)), dim=1)  # (B, D), unit length


@dataclass
class ImageEncoder:
    net: _Net
    device: torch.device

    def features(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, R, R, 3) -> (N, 256): the project's image-feature space."""
        self.net.eval()
        return apply(self.net.trunk, images, self.device)

    def embed(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, R, R, 3) -> (N, D) unit vectors comparable with sentence vectors."""
        self.net.eval()
        return apply(self.net, images, self.device)


def normalize_rows(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def train_image_encoder(table: pd.DataFrame, images: np.ndarray, text_vectors: np.ndarray,
                        settings: FitSettings, device: torch.device, data_key: str | None = None) -> ImageEncoder:
    """Fit on (train image, one of its captions) pairs; cached under ``data_key`` if given."""
    text_dim = int(text_vectors.shape[1])
    torch.manual_seed(settings.seed)  # before building: the initial weights are part of the result
    net = _Net(text_dim).to(device)
    key = cache.fingerprint("image_encoder", data_key, *astuple(settings)) if data_key else None
    hit = cache.load("image_encoder", key) if key else None
    if hit is not None:
        net.load_state_dict(hit[0])
        log.info("image encoder loaded from cache (%s)", key)
        return ImageEncoder(net.eval(), device)

    rows = np.flatnonzero((table["split"] == "train").to_numpy())
    image_of = table["image_index"].to_numpy()[rows]
    # Identical captions (common in templated data) are all positives for each other.
    caption_id = torch.from_numpy(pd.factorize(table["caption"].to_numpy()[rows])[0])
    texts = torch.from_numpy(normalize_rows(np.asarray(text_vectors[rows], np.float32)))
    def batch_loss(pick: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x = augment(to_input(images[image_of[pick.numpy()]], device), gen)  # (B, 3, r, r)
        t = texts[pick].to(device)  # (B, D)
        logits = net(x) @ t.T / TEMPERATURE  # (B, B) image i vs caption j
        same = (caption_id[pick][:, None] == caption_id[pick][None, :]).float().to(device)
        target = same / same.sum(1, keepdim=True)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))

    fit(net, settings, len(rows), batch_loss, "image encoder")
    if key:
        cache.save("image_encoder", key, net.state_dict(), {"text_dim": text_dim})
    return ImageEncoder(net, device)
