"""Matcher: a small image-sentence scorer trained on real pairs before the GAN, frozen during it.

AttnGAN's DAMSM idea on sentence vectors: G's loss adds a cross-entropy asking that a fake
image score its own caption above the caption's one-word misses and word orders (the same
candidates as D's contrastive term), scored by a network that learned on real images only. D
learns to check the centre colour slowly, because a text-conditioned D gets one comparison per
wrong caption while the GAN moves under it (docs/results/tuning.md); the matcher learns it
before G starts and does not drift.

Trunk: the small CNN the evaluation judges also use (t2i/models/trunk.py). The matcher's is a
separate network with its own seed and loss, trained without attribute labels: the attribute
classifier that scores the results never sees it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from t2i.models.text_norm import TextNorm
from t2i.models.trunk import FEATURE_DIM, Trunk, to_work_resolution

EMBED_DIM = 256
SCALE = 1.0 / 16.0  # scores = <image, text> / 16: logits of a few units at init
WEIGHTS, CONFIG = "matcher.safetensors", "matcher.json"


def matcher_digest(matcher: "Matcher") -> str:
    """sha256 of the weights: names a matcher in a training checkpoint's fingerprint."""
    h = hashlib.sha256()
    for k, v in sorted(matcher.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()[:16]


class Matcher(nn.Module):
    def __init__(self, text_dim: int, width: int = 16) -> None:
        super().__init__()
        self.text_dim, self.width = text_dim, width
        self.text_norm = TextNorm(text_dim, "whiten")  # its own: G's may be `scale`
        self.trunk = Trunk(width)
        self.image_proj = nn.Linear(FEATURE_DIM, EMBED_DIM)
        self.text_proj = nn.Linear(text_dim, EMBED_DIM)

    def embed_image(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, R, R) in [-1, 1] -> (B, E). Above 64 px the trunk sees a 64 px copy, as the judges do."""
        return self.image_proj(self.trunk(to_work_resolution(image.float()).contiguous()))

    def embed_text(self, text: torch.Tensor) -> torch.Tensor:
        """(N, D) raw sentence vectors -> (N, E)."""
        return self.text_proj(self.text_norm(text))

    def forward(self, image: torch.Tensor, text: torch.Tensor, image_index: torch.Tensor | None = None) -> torch.Tensor:
        """Score of each sentence against its image: image (M, 3, R, R), text (N, D) raw,
        image_index (N,) (None: the i-th image, N = M) -> (N,). Same call as the discriminator's,
        so `benchmarks/d_probe.py` probes either."""
        f = self.embed_image(image)  # (M, E)
        if image_index is not None:
            f = f[image_index]
        return (f * self.embed_text(text)).sum(1) * SCALE

    def save(self, directory: str | Path) -> None:
        """Weights and config into `directory` (the stage writes it through `t2i.atomic.atomic_dir`)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(directory / WEIGHTS))
        (directory / CONFIG).write_text(json.dumps({"text_dim": self.text_dim, "width": self.width}) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path, device: torch.device | str = "cpu") -> "Matcher":
        directory = Path(directory)
        if not (directory / WEIGHTS).is_file() or not (directory / CONFIG).is_file():
            raise FileNotFoundError(f"no matcher in {directory} (expected {WEIGHTS} and {CONFIG}): "
                                    "run the `matcher` stage first (dvc repro matcher), or set train.matcher_weight=0")
        cfg = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
        m = cls(int(cfg["text_dim"]), int(cfg["width"]))
        m.load_state_dict(load_file(str(directory / WEIGHTS)))
        return m.to(device).eval()
