"""Discriminator: image + sentence vector -> one realism/match score per image.

Spectral-normalised downsampling blocks (with a residual attention module where `attention`
lists the block's output resolution) down to 4x4, then the sentence enters once:
- projection (Miyato & Koyama 2018): score = psi(phi(x)) + <embed(s), phi(x)>;
- concat (DF-GAN): the sentence, tiled over the 4x4 map, is concatenated and convolved.
No BatchNorm: the loss puts real, fake and mismatched images through one forward, and the
matching-aware gradient penalty differentiates the score per image.

Word-region matching (`d_word_match`, t2i/models/word_match.py): the regions of one mid-size
feature map (`word_match_resolution`) and the caption's per-token states meet in AttnGAN's DAMSM
local score, and gain x score joins the logit. The loss's mismatched captions and candidates
then train it with no new term: a caption whose colours sit on the wrong parts finds its words
in the wrong regions even where its sentence vector is nearly the true one's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from t2i.models.attention import ResidualAttention
from t2i.models.config import GANConfig
from t2i.models.word_attention import check_tokens, pointwise, token_projection
from t2i.models.word_match import indexed_score, similarity_matrix


class DBlock(nn.Module):
    """conv3x3 -> act -> conv4x4 stride 2, plus avg-pool + 1x1 shortcut; all spectral-normed."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = spectral_norm(nn.Conv2d(c_in, c_in, 3, padding=1))
        self.conv2 = spectral_norm(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1))
        self.shortcut = spectral_norm(nn.Conv2d(c_in, c_out, 1))
        self.gamma = nn.Parameter(torch.zeros(1))  # residual branch fades in (DF-GAN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H/2, W/2)
        h = self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(x, 0.2)), 0.2))
        return self.shortcut(F.avg_pool2d(x, 2)) + self.gamma * h


def sentence_embedding(text_dim: int, width: int, layers: int) -> nn.Module:
    """Projection D's sentence embedding. One layer: a Linear (the keys of older models). More: an
    MLP, for sentence forms whose word-order swap moves the vector 2x less than others'
    (docs/results/tuning.md, 2026-12-02, 1a2f09a), which a linear map scales alike."""
    if layers == 1:
        return nn.Linear(text_dim, width)
    mods: list[nn.Module] = []
    for i in range(layers - 1):
        mods += [nn.Linear(text_dim if i == 0 else width, width), nn.LeakyReLU(0.2)]
    return nn.Sequential(*mods, nn.Linear(width, width))


class Discriminator(nn.Module):
    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.from_rgb = spectral_norm(nn.Conv2d(3, c.d_channels(c.resolution), 3, padding=1))
        self.blocks = nn.ModuleList()
        self.attn = nn.ModuleDict()
        self.resolutions: list[int] = []
        res = c.resolution
        while res > 4:
            self.blocks.append(DBlock(c.d_channels(res), c.d_channels(res // 2)))
            res //= 2
            self.resolutions.append(res)
            if res in (c.attention if c.d_attention is None else c.d_attention):
                self.attn[str(res)] = ResidualAttention(c.d_channels(res), res, norm=False, sn=True)
        if c.d_word_match:
            self.word_regions_head = WordRegions(c, self.resolutions)
        c4 = c.d_channels(4)
        if c.d_conditioning == "projection":
            self.psi = spectral_norm(nn.Linear(c4, 1))
            # No spectral norm here: word-order-swapped captions differ by a small vector (USE
            # cosine 0.993), and a unit-gain embedding could barely tell them apart.
            self.embed = sentence_embedding(c.cond_text_dim, c4, c.d_text_layers)
        else:
            self.text_proj = nn.Linear(c.cond_text_dim, c.cond_dim)
            self.joint = nn.Sequential(
                spectral_norm(nn.Conv2d(c4 + c.cond_dim, c4, 3, padding=1)),
                nn.LeakyReLU(0.2),
                spectral_norm(nn.Conv2d(c4, 1, 4)),
            )

    def features(self, image: torch.Tensor) -> torch.Tensor:  # (B, 3, R, R) -> (B, C4, 4, 4)
        return self.features_and_regions(image)[0]

    def features_and_regions(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, C4, 4, 4) features and, with `d_word_match`, the word-match regions (B, E, L) of the
        same pass (None without)."""
        h = self.from_rgb(image)
        regions = None
        for block, res in zip(self.blocks, self.resolutions):
            h = block(h)
            if str(res) in self.attn:
                h = self.attn[str(res)](h)
            if self.config.d_word_match and res == self.word_regions_head.resolution:
                regions = self.word_regions_head.regions(h)
        return F.leaky_relu(h, 0.2), regions

    def word_regions(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, R, R) -> region embeddings (B, E, L) for `word_match` (needs `d_word_match`)."""
        regions = self.features_and_regions(image)[1]
        if regions is None:
            raise ValueError("word_regions needs a discriminator built with d_word_match=True")
        return regions

    def word_match(self, regions: torch.Tensor, tokens: torch.Tensor, token_mask: torch.Tensor | None = None,
                   image_index: torch.Tensor | None = None, matrix: bool = False) -> torch.Tensor:
        """DAMSM local score in [-1, 1] (before the head's `gain`), higher = the words find their regions.
        regions (M, E, L) from `word_regions`, tokens (N, T, token_dim), token_mask (N, T) bool.
        matrix=False: caption n against image image_index[n] (None: the n-th, N = M) -> (N,);
        matrix=True: every image against every caption -> (M, N), for a contrastive loss."""
        return self.word_regions_head.score(regions, tokens, token_mask, image_index, matrix)

    def forward(self, image: torch.Tensor, text: torch.Tensor, image_index: torch.Tensor | None = None,
                tokens: torch.Tensor | None = None, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        # image (M, 3, R, R), text (N, cond_text_dim) = G's condition(raw caption) -> score (N,).
        # image_index (N,): which image each sentence is scored against (None: the i-th, N = M),
        # so a real image paired with its caption and with a wrong one costs one feature pass.
        # The caller rescales, so the MA-GP differentiates w.r.t. the rescaled sentence.
        # tokens (N, T, token_dim), token_mask (N, T) bool: the same captions' per-token states; with
        # `d_word_match` they add word_gain x the word-region score (None: the sentence-only score).
        h, regions = self.features_and_regions(image)  # (M, C4, 4, 4), (M, E, L) | None
        out = self._sentence_score(h, text, image_index)  # (N,)
        if regions is None or tokens is None:
            return out
        return out + self.word_regions_head.gain * self.word_match(regions, tokens, token_mask, image_index)  # (N,) fp32

    def _sentence_score(self, h: torch.Tensor, text: torch.Tensor, image_index: torch.Tensor | None) -> torch.Tensor:
        if self.config.d_conditioning == "projection":
            # Mean, not sum, pooling: keeps |d score / d sentence| near 1 at init, where the MA-GP's
            # |grad|^6 would otherwise start in the hundreds of thousands.
            feat = h.mean(dim=(2, 3))  # (M, C4)
            image_term = self.psi(feat).squeeze(1)  # (M,)
            if image_index is not None:  # pooled before the gather: N can be B x (3 + K)
                feat, image_term = feat[image_index], image_term[image_index]  # (N, C4), (N,)
            return image_term + (self.embed(text) * feat).sum(dim=1)
        if image_index is not None:
            h = h[image_index]  # (N, C4, 4, 4)
        s = self.text_proj(text)[:, :, None, None].expand(-1, -1, 4, 4)  # (N, cond_dim, 4, 4)
        return self.joint(torch.cat([h, s.to(h.dtype)], dim=1)).flatten()

    def rank_texts(self, image: torch.Tensor, texts: torch.Tensor, tokens: torch.Tensor | None = None,
                   token_mask: torch.Tensor | None = None) -> torch.Tensor:
        """How well each of K candidate sentences matches each image: (B, K), higher = better.
        image (B, 3, R, R), texts (B, K, text_dim) normalised, tokens (B, K, T, token_dim) and
        token_mask (B, K, T) optional. Projection: the image term is the same for every candidate,
        so one feature pass and a dot product rank them."""
        b, k = texts.shape[:2]
        index = torch.arange(b, device=image.device).repeat_interleave(k)  # (B*K,)
        flat_tokens = None if tokens is None else tokens.flatten(0, 1)  # (B*K, T, token_dim)
        flat_mask = None if token_mask is None else token_mask.flatten(0, 1)  # (B*K, T)
        if self.config.d_conditioning != "projection":
            return self(image, texts.flatten(0, 1), index, flat_tokens, flat_mask).view(b, k)
        h, regions = self.features_and_regions(image)
        feat = h.mean(dim=(2, 3))  # (B, C4)
        out = (self.embed(texts.flatten(0, 1)).view(b, k, -1) * feat[:, None]).sum(-1)  # (B, K)
        if regions is not None and flat_tokens is not None:
            word = self.word_match(regions, flat_tokens, flat_mask, index).view(b, k)
            out = out + self.word_regions_head.gain * word
        return out


# Width of the word-region embedding space. The loss scores ~10^4 captions per step against 64
# regions each, and that cost is linear in it: 32 halved the word score's CPU time against 64
# (benchmarks/word_attention_cost.py); a few colours and parts need no wider space.
WORD_MATCH_DIM = 32


class WordRegions(nn.Module):
    """D's word-region matcher: region embeddings of one feature map, word embeddings of the
    tokens, their DAMSM local score, and the gain that puts it on the logit's scale."""

    def __init__(self, config: GANConfig, resolutions: list[int]) -> None:
        super().__init__()
        res = int(config.word_match_resolution)
        if res not in resolutions:
            raise ValueError(f"word_match_resolution={res} is not among the discriminator's feature maps "
                             f"{resolutions} at resolution={config.resolution}")
        # D reads tokens after G's token_norm (t2i/models/token_pca.py) when token_pca is set.
        self.resolution, self.token_dim = res, config.word_dim
        c, e = config.d_channels(res), min(config.d_channels(res), WORD_MATCH_DIM)
        self.region_proj = spectral_norm(nn.Conv2d(c, e, 1))
        # Where each region is (zero-init, learned from the matching loss): which part a region
        # shows is partly where it is; the toy test reached 0.96 without it, 0.995 with it (300
        # steps). Only the image side gets one: a position on the word side would hand word order
        # to the order-blind `bow` encoder.
        self.position = nn.Parameter(torch.zeros(1, e, res * res))
        self.words = token_projection(config.word_dim, e)
        # The score is bounded in [-1, 1]; a gain that started at 1 (Adam moves it ~lr per step)
        # capped the caption-vs-swap logit gap near 2 for thousands of steps, and the toy test
        # (tests/test_word_attention.py) reached 0.85-0.97 in 250 steps against 1.00 from 4.
        self.gain = nn.Parameter(torch.full((), 4.0))

    def regions(self, h: torch.Tensor) -> torch.Tensor:  # (B, C, r, r) -> (B, E, L=r*r)
        b, c, r, _ = h.shape
        rows = F.leaky_relu(h, 0.2).permute(0, 2, 3, 1).reshape(b, r * r, c)  # (B, L, C)
        return pointwise(self.region_proj, rows).transpose(1, 2) + self.position.to(h.dtype)

    def score(self, regions: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None,
              image_index: torch.Tensor | None, matrix: bool) -> torch.Tensor:
        mask = check_tokens(tokens, mask, self.token_dim)
        if mask.shape[1] > 0:  # drop the columns after the last real token: padding costs like words here
            last = int(torch.nonzero(mask.any(0)).max()) + 1 if bool(mask.any()) else 1
            tokens, mask = tokens[:, :last], mask[:, :last]
        words = self.words(tokens.to(self.words[0].weight.dtype)).to(regions.dtype)  # (N, T, E)
        if matrix:
            return similarity_matrix(regions, words, mask)  # (M, N)
        if image_index is None and regions.shape[0] != words.shape[0]:
            raise ValueError(f"word_match: {regions.shape[0]} region maps for {words.shape[0]} captions "
                             "(pass image_index, or matrix=True)")
        return indexed_score(regions, words, mask, image_index)  # (N,)
