"""Generator: (z, sentence vector) -> image in [-1, 1].

z and the sentence go through a dense layer to a 4x4 map, then one upsampling block per
doubling. Every block is modulated by the sentence (per-channel scale and shift), so the text
steers all scales, not only the first; where `attention` lists a block's resolution a residual
attention module follows it. With `noise_in_blocks` the modulation also sees z: a prototype that
fed z only to the dense layer learned to ignore it (all samples of a caption alike).

Word attention (`word_attention` resolutions, t2i/models/word_attention.py): after the block of
that resolution, and before its residual attention module, the regions read the caption's
per-token states. The sentence vector stays the global condition; without tokens (an encoder
that stores none) the word modules are skipped and the network is the sentence-only one.

Caption code (`caption_code`, t2i/models/caption_code.py): a frozen copy of the matcher's text
encoder, loaded before training, turns the sentence and its tokens into a code that already tells
which colour goes with which part; `condition` puts the whitened code beside the whitened
sentence, and D reads the same vector (the training step gathers it from G's `condition`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from t2i.models.attention import ResidualAttention
from t2i.models.caption_code import CODE_DIM, CaptionCode
from t2i.models.config import GANConfig
from t2i.models.text_norm import TextNorm
from t2i.models.token_pca import TokenPCA
from t2i.models.word_attention import WordAttention


class Modulation(nn.Module):
    """Per-channel affine modulation by the condition vector.

    cbn: BatchNorm without its own affine, then (1 + gamma(c)) * h + beta(c) -- conditional BN.
    affine: no normalisation, the same scale/shift straight on the features (DF-GAN style).
    """

    def __init__(self, channels: int, cond_dim: int, normalise: bool) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False) if normalise else nn.Identity()
        self.to_scale_shift = nn.Linear(cond_dim, 2 * channels)
        # Start as the identity map so early training is a plain (normalised) network.
        nn.init.zeros_(self.to_scale_shift.weight)
        nn.init.zeros_(self.to_scale_shift.bias)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.to_scale_shift(cond).chunk(2, dim=1)  # (B, C) each
        return self.norm(h) * (1.0 + gamma[:, :, None, None]) + beta[:, :, None, None]


class GBlock(nn.Module):
    """Upsample x2 -> [conv -> modulate -> act] x2, plus a 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, normalise: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.mod1 = Modulation(c_out, cond_dim, normalise)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.mod2 = Modulation(c_out, cond_dim, normalise)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # (B, C_in, 2H, 2W)
        h = F.leaky_relu(self.mod1(self.conv1(x), cond), 0.2)
        h = F.leaky_relu(self.mod2(self.conv2(h), cond), 0.2)
        return h + self.shortcut(x)  # (B, C_out, 2H, 2W)


class Generator(nn.Module):
    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        c0 = c.g_channels(4)
        self.text_norm = TextNorm(c.text_dim, c.text_norm, c.whiten_eps)  # shared with D by the training step
        if c.caption_code:  # frozen: its weights come from the matcher (`load_caption_code`)
            self.caption_code = CaptionCode(c.text_dim, c.code_token_dim).requires_grad_(False)
            self.code_norm = TextNorm(CODE_DIM, "whiten", c.whiten_eps)
        cond_in = c.cond_text_dim + (c.z_dim if c.noise_in_blocks else 0)
        # Shared condition embedding (BigGAN-style): one MLP, a cheap Linear per modulation.
        # One layer keeps the state-dict keys of older models (cond.0.*).
        layers: list[nn.Module] = []
        for i in range(c.cond_layers):
            layers += [nn.Linear(cond_in if i == 0 else c.cond_dim, c.cond_dim), nn.LeakyReLU(0.2)]
        self.cond = nn.Sequential(*layers)
        self.dense = nn.Linear(c.z_dim + c.cond_text_dim, c0 * 4 * 4)
        self.blocks = nn.ModuleList()
        self.attn = nn.ModuleDict()
        self.word_attn = nn.ModuleDict()
        word_res = word_resolutions(c)
        # Fitted before training like text_norm; D reads tokens already through it.
        self.token_norm = TokenPCA(c.token_dim, c.token_pca) if c.token_pca else None
        c_prev = c0
        for res in c.g_resolutions():
            c_out = c.g_channels(res)
            self.blocks.append(GBlock(c_prev, c_out, c.cond_dim, c.conditioning == "cbn"))
            if res in word_res:
                self.word_attn[str(res)] = WordAttention(c_out, c.word_dim)
            if res in c.attention:
                self.attn[str(res)] = ResidualAttention(c_out, res, norm=True, sn=False)
            c_prev = c_out
        self.to_rgb = nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(c_prev, 3, 3, padding=1))

    @torch.no_grad()
    def load_caption_code(self, code: CaptionCode, train_text: torch.Tensor,
                          train_tokens: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """Copy the matcher's text encoder in and fit `code_norm` on the training captions' codes:
        train_text (N, D) raw, train_tokens ((N, T, token_dim), (N, T)) of the same captions."""
        self.caption_code.load_state_dict(code.state_dict())
        self.caption_code.eval()
        codes = self.caption_code(train_text, *(train_tokens or (None, None)))  # (N, CODE_DIM)
        self.code_norm.fit(codes)

    def condition(self, text: torch.Tensor, tokens: torch.Tensor | None = None,
                  token_mask: torch.Tensor | None = None) -> torch.Tensor:
        """What G's blocks and D's projection read of a caption: (B, cond_text_dim) fp32, from raw
        sentences (B, text_dim) and, for the caption code, their raw tokens and mask."""
        if not self.config.caption_code:
            return self.text_norm(text)  # (B, text_dim)
        with torch.autocast(text.device.type, enabled=False):
            code = self.caption_code(text.float(), tokens, token_mask)  # (B, CODE_DIM)
        return self.condition_from_code(text, code)

    def condition_from_code(self, text: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """`condition` from raw sentences (B, text_dim) and their caption codes (B, CODE_DIM)."""
        return torch.cat([self.text_norm(text), self.code_norm(code.float())], dim=1)

    def forward(self, z: torch.Tensor, text: torch.Tensor, tokens: torch.Tensor | None = None,
                token_mask: torch.Tensor | None = None) -> torch.Tensor:
        # z (B, z_dim), text (B, text_dim) raw sentence vectors, tokens (B, T, token_dim) per-token
        # states of the same captions (any float dtype; None = sentence only), token_mask (B, T) bool
        # (True = real token; None = all real) -> (B, 3, R, R) in [-1, 1].
        # A model without word modules ignores tokens, so one call serves both kinds.
        cfg = self.config
        text = self.condition(text, tokens, token_mask)  # (B, cond_text_dim), fp32
        cond_in = torch.cat([text, z], dim=1) if cfg.noise_in_blocks else text
        cond = self.cond(cond_in)  # (B, cond_dim)
        h = self.dense(torch.cat([z, text], dim=1)).view(z.shape[0], -1, 4, 4)  # (B, C0, 4, 4)
        if tokens is not None and self.token_norm is not None:
            tokens = self.token_norm(tokens)  # (B, T, token_pca)
        for block, res in zip(self.blocks, cfg.g_resolutions()):
            h = block(h, cond)
            if tokens is not None and str(res) in self.word_attn:
                h = self.word_attn[str(res)](h, tokens, token_mask)
            if str(res) in self.attn:
                h = self.attn[str(res)](h)
        return torch.tanh(self.to_rgb(h))



def word_resolutions(config: GANConfig) -> tuple[int, ...]:
    """G's word-attention resolutions, checked against the resolutions its blocks produce."""
    res = tuple(sorted(int(r) for r in config.word_attention))
    bad = [r for r in res if r not in config.g_resolutions()]
    if bad:
        raise ValueError(f"word_attention {list(res)}: {bad} not among the generator's block "
                         f"resolutions {config.g_resolutions()} at resolution={config.resolution}")
    return res
