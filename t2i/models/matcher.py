"""Matcher: a small image-sentence scorer trained on real pairs before the GAN, frozen during it.

AttnGAN's DAMSM idea on sentence vectors: G's loss adds a cross-entropy asking that a fake
image score its own caption above the caption's one-word misses and word orders (the same
candidates as D's contrastive term), scored by a network that learned on real images only. D
learns to check the centre colour slowly, because a text-conditioned D gets one comparison per
wrong caption while the GAN moves under it (docs/results/tuning.md); the matcher learns it
before G starts and does not drift.

Words (`token_dim` > 0, an encoder with token states): the caption's text embedding is its
`CaptionCode` (t2i/models/caption_code.py: the sentence projection plus learned-query pooling
of the token states), and the trunk's mid-level map is also cut into regions that the tokens are
matched against with D's DAMSM local score (t2i/models/word_match.py); gain x that score joins
the code's score. The GAN reads captions through a frozen copy of the code (`caption_code`).
Without token states the matcher is the sentence-only one.

Trunk: the small CNN the evaluation judges also use (t2i/models/trunk.py). The matcher's is a
separate network with its own seed and loss, trained without attribute labels: the attribute
classifier that scores the results never sees it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from t2i.safe_load import load_safetensors_checked
import torch.nn.functional as F
from torch import nn

from t2i.models.caption_code import CODE_DIM, CaptionCode
from t2i.models.trunk import FEATURE_DIM, Trunk, to_work_resolution
from t2i.models.word_attention import check_tokens, token_projection
from t2i.models.word_match import indexed_score, similarity_matrix

EMBED_DIM = CODE_DIM
SCALE = 1.0 / 16.0  # scores = <image, text> / 16: logits of a few units at init
WEIGHTS, CONFIG = "matcher.safetensors", "matcher.json"
WORD_DIM, REGIONS = 32, 8  # word-region space, regions per side


def matcher_digest(matcher: "Matcher") -> str:
    """sha256 of the weights: names a matcher in a training checkpoint's fingerprint."""
    h = hashlib.sha256()
    for k, v in sorted(matcher.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()[:16]


class Matcher(nn.Module):
    def __init__(self, text_dim: int, width: int = 16, token_dim: int = 0) -> None:
        super().__init__()
        self.text_dim, self.width, self.token_dim = text_dim, width, token_dim
        self.caption = CaptionCode(text_dim, token_dim)  # its whitening and token PCA: fitted by fit_matcher
        self.trunk = Trunk(width)
        self.image_proj = nn.Linear(FEATURE_DIM, EMBED_DIM)
        if token_dim:
            k = self.caption.token_norm.k
            self.region_proj = nn.Conv2d(4 * width, WORD_DIM, 1)  # the trunk's last conv map -> regions
            self.position = nn.Parameter(torch.zeros(1, WORD_DIM, REGIONS * REGIONS))
            self.words = token_projection(k, WORD_DIM)
            self.word_gain = nn.Parameter(torch.full((), 4.0))  # as D's: a bounded score needs a gain

    @property
    def uses_tokens(self) -> bool:
        return self.token_dim > 0

    def embed_image(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, R, R) in [-1, 1] -> (B, E). Above 64 px the trunk sees a 64 px copy, as the judges do."""
        return self.embed_image_regions(image)[0]

    def embed_image_regions(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, E) image embedding and, with words, the (B, WORD_DIM, L) regions of the same pass."""
        x = to_work_resolution(image.float()).contiguous()
        h = self.trunk.convs(x)  # (B, 4w, r/4, r/4)
        f = self.image_proj(self.trunk.fc(self.trunk.pool(h)))  # (B, E)
        if not self.uses_tokens:
            return f, None
        r = F.adaptive_avg_pool2d(h, REGIONS)  # (B, 4w, 8, 8)
        return f, self.region_proj(r).flatten(2) + self.position  # (B, WORD_DIM, 64)

    def reduce_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, T, token_dim) raw token states -> (N, T, k) through the matcher's token PCA."""
        return self.caption.token_norm(tokens)

    def word_score(self, regions: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor,
                   image_index: torch.Tensor | None = None) -> torch.Tensor:
        """gain x DAMSM local score of caption n against image image_index[n]: regions (M, W, L),
        tokens (N, T, k) reduced, mask (N, T) -> (N,)."""
        mask = check_tokens(tokens, mask, self.caption.token_norm.k)
        words = self.words(tokens.float())  # (N, T, WORD_DIM)
        return self.word_gain * indexed_score(regions, words, mask, image_index)

    def word_score_matrix(self, regions: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """gain x DAMSM local score of every caption against every image: regions (B, W, L),
        tokens (B', T, k) reduced, mask (B', T) -> (B, B')."""
        mask = check_tokens(tokens, mask, self.caption.token_norm.k)
        return self.word_gain * similarity_matrix(regions, self.words(tokens.float()), mask)

    def embed_text(self, text: torch.Tensor, reduced: torch.Tensor | None = None,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
        """(N, D) raw sentence vectors and, for a matcher with words, their token states through
        `reduce_tokens` ((N, T, k)) and mask -> (N, E) caption codes."""
        return self.caption.from_reduced(text, reduced, mask)

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
        cfg = {"text_dim": self.text_dim, "width": self.width, "token_dim": self.token_dim}
        (directory / CONFIG).write_text(json.dumps(cfg) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path, device: torch.device | str = "cpu") -> "Matcher":
        directory = Path(directory)
        if not (directory / WEIGHTS).is_file() or not (directory / CONFIG).is_file():
            raise FileNotFoundError(f"no matcher in {directory} (expected {WEIGHTS} and {CONFIG}): "
                                    "run the `matcher` stage first (dvc repro matcher), or set train.matcher_weight=0")
        cfg = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
        m = cls(int(cfg["text_dim"]), int(cfg["width"]), int(cfg.get("token_dim", 0)))
        m.load_state_dict(load_safetensors_checked(directory / WEIGHTS))  # a damaged file is named
        return m.to(device).eval()
