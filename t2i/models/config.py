"""`GANConfig`: the architecture of one generator/discriminator pair, nothing about training.

It is saved in models/config.json beside the weights, so a generator can be rebuilt from the
file alone (see `t2i.models.io.load_generator`). Training builds it from `train.model`
(t2i/config.py `ModelParams`) by keyword; the defaults here fill the fields params.yaml does not
expose and the keys a config saved by older code lacks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

# Whitening damping (t2i/models/text_norm.py), a fraction of the largest eigenvalue: the matcher's,
# and what a saved config without the key means. Training sets its own (train.model.whiten_eps).
WHITEN_EPS = 1e-2

RESOLUTIONS = (32, 64, 128, 256)


@dataclass(frozen=True)
class GANConfig:
    resolution: int = 32                  # output side in pixels: 32 | 64 | 128 | 256
    text_dim: int = 512                   # sentence-vector size (USE: 512)
    z_dim: int = 32
    g_width: int = 128                    # G channels at 4x4, halved per upsampling
    d_width: int = 32                     # D channels at full resolution, doubled per downsampling
    attention: tuple[int, ...] = (8, 16)  # resolutions followed by a residual attention module
    conditioning: Literal["affine", "cbn"] = "cbn"
    d_conditioning: Literal["projection", "concat"] = "projection"
    g_min_width: int = 32
    d_attention: tuple[int, ...] | None = None  # D's attention resolutions (None: the same as G's)
    d_max_width: int = 512
    cond_dim: int = 128                   # shared embedding of [sentence, z] that drives every block
    cond_layers: int = 1                  # depth of the MLP that makes that embedding (Linear + LeakyReLU each)
    d_text_layers: int = 1                # projection D's sentence embedding: 1 = linear, more = an MLP
    noise_in_blocks: bool = True          # z also drives every block's modulation (diversity)
    # What G and D see of a caption (t2i/models/text_norm.py): "scale" = unit direction times
    # sqrt(D); "whiten" = centred and whitened on the training captions, which makes a
    # word-order swap ~20x more visible. Saved configs without the key load as "scale".
    text_norm: Literal["scale", "whiten"] = "scale"
    # Whitening damping (train.model.whiten_eps). Only `fit` reads it.
    whiten_eps: float = WHITEN_EPS
    extra: dict[str, Any] = field(default_factory=dict)  # room for forward-compatible keys
    # Word-level text (t2i/models/word_attention.py, word_match.py): the caption's per-token
    # states beside the sentence vector. Off by default: a config saved before these keys existed
    # describes a model without the modules, and must rebuild exactly that model to load its weights;
    # the train stage turns them on when the encoder stores token states.
    word_attention: tuple[int, ...] = ()  # G resolutions where regions attend over the tokens (() = sentence only)
    token_dim: int = 512                  # per-token state size (USE: 512)
    d_word_match: bool = False            # D adds a DAMSM-style word-region score to its logit
    word_match_resolution: int = 8        # the D feature map whose regions the words are matched against
    # Token states reduced by a PCA fitted on the training tokens (t2i/models/token_pca.py) before
    # any word module reads them: G applies it to raw states; D takes reduced ones. 0 = raw states.
    token_pca: int = 0
    # The caption code (t2i/models/caption_code.py): G holds a frozen copy of the matcher's text
    # encoder and G and D read [whitened sentence, whitened code] instead of the sentence alone.
    # code_token_dim: the token states the code pools (0 = a sentence-only code).
    caption_code: bool = False
    code_token_dim: int = 0

    def __post_init__(self) -> None:
        if self.resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {self.resolution}")
        if self.conditioning not in ("affine", "cbn"):
            raise ValueError(f"conditioning must be affine|cbn, got {self.conditioning!r}")
        if self.text_norm not in ("scale", "whiten"):
            raise ValueError(f"text_norm must be scale|whiten, got {self.text_norm!r}")
        if self.cond_layers < 1 or self.d_text_layers < 1:
            raise ValueError(f"cond_layers and d_text_layers must be >= 1, got {self.cond_layers}, {self.d_text_layers}")
        if self.d_conditioning not in ("projection", "concat"):
            raise ValueError(f"d_conditioning must be projection|concat, got {self.d_conditioning!r}")
        if not 0 <= self.token_pca <= self.token_dim:
            raise ValueError(f"token_pca must be in 0..token_dim={self.token_dim}, got {self.token_pca}")
        object.__setattr__(self, "attention", tuple(sorted(int(r) for r in self.attention)))
        object.__setattr__(self, "word_attention", tuple(sorted(int(r) for r in self.word_attention)))
        if self.d_attention is not None:
            object.__setattr__(self, "d_attention", tuple(sorted(int(r) for r in self.d_attention)))

    @property
    def cond_text_dim(self) -> int:
        """Width of a caption as G's condition and D's projection read it: the sentence, plus the
        caption code where there is one."""
        from t2i.models.caption_code import CODE_DIM  # the import stays one-way: caption_code needs no config

        return self.text_dim + (CODE_DIM if self.caption_code else 0)

    @property
    def word_dim(self) -> int:
        """Width of the token states the word modules read: `token_pca`, or `token_dim` without it."""
        return self.token_pca or self.token_dim

    def g_resolutions(self) -> list[int]:
        """Resolutions produced by the upsampling blocks: 8, 16, ..., resolution."""
        out, r = [], 8
        while r <= self.resolution:
            out.append(r)
            r *= 2
        return out

    def g_channels(self, res: int) -> int:
        # Halve per doubling of resolution from 4x4, floor at g_min_width.
        c, r = self.g_width, 4
        while r < res:
            c, r = max(self.g_min_width, c // 2), r * 2
        return c

    def d_channels(self, res: int) -> int:
        # Double per halving of resolution from full size, capped at d_max_width.
        c, r = self.d_width, self.resolution
        while r > res:
            c, r = min(self.d_max_width, c * 2), r // 2
        return c

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["attention"] = list(self.attention)
        d["word_attention"] = list(self.word_attention)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GANConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)
