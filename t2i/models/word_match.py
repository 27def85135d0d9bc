"""Word-region matching shared by the discriminator and the matcher: AttnGAN's DAMSM local score.

Xu et al. 2018 (AttnGAN), DAMSM: each word gathers the image regions that answer it, and the
caption's score is how well every word agrees with what it gathered. Two softmaxes, as there:
- over the words, per region (Eq. 8): which word each region belongs to. Padding gets weight 0;
- over the regions, per word (Eq. 9), on Eq. 8's weights sharpened by gamma1: where each word
  looks. A word then reads its context c_t = sum_l a_tl v_l and scores cos(w_t, c_t).
The caption score is a soft maximum over its words, (1/gamma2) log mean_t exp(gamma2 cos_t). A
mean inside the log where DAMSM has a sum: captions of different lengths compete in the same
softmax (D's candidates), and a sum would pay a caption for each extra word.

The words are a set here: permuting a caption's tokens (with their mask) leaves the score
unchanged. Word order reaches the score only through contextual token states (USE's); the `bow`
encoder's per-word vectors stay order-blind, which is the control the project measures against.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

GAMMA1 = 4.0  # Eq. 9 sharpness (AttnGAN: 4 on CUB, 5 on COCO)
GAMMA2 = 5.0  # soft maximum over words (AttnGAN: 5)


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax over `dim` where `mask` (broadcastable bool, True = keep) is set; masked entries get 0,
    and a slice with nothing kept is all 0 (not NaN, also in the gradient). Computed in fp32."""
    x = logits.float().masked_fill(~mask, torch.finfo(torch.float32).min)
    # A finite fill, not -inf: an all-masked slice softmaxes to uniform (no 0/0), then the mask zeroes it.
    return torch.softmax(x, dim=dim) * mask


def region_word_attention(regions: torch.Tensor, words: torch.Tensor, mask: torch.Tensor,
                          gamma1: float = GAMMA1) -> tuple[torch.Tensor, torch.Tensor]:
    """Each word's region context (DAMSM Eqs. 8-9).

    regions (..., E, L), words (..., T, E), mask (..., T) bool, leading dims broadcast
    -> context (..., T, E), attention over regions (..., T, L) (rows of padded words are uniform)."""
    e = words.shape[-1]
    sim = torch.matmul(words, regions).float() / math.sqrt(e)  # (..., T, L)
    over_words = masked_softmax(sim, mask[..., :, None], dim=-2)  # (..., T, L), Eq. 8
    over_regions = torch.softmax(gamma1 * over_words, dim=-1)  # (..., T, L), Eq. 9
    context = torch.matmul(over_regions.to(regions.dtype), regions.transpose(-1, -2))  # (..., T, E)
    return context, over_regions


def region_word_score(regions: torch.Tensor, words: torch.Tensor, mask: torch.Tensor,
                      gamma1: float = GAMMA1, gamma2: float = GAMMA2) -> torch.Tensor:
    """DAMSM local score of each (image, caption) pair, in [-1, 1]: higher = the words find their regions.

    regions (..., E, L) image-region embeddings, words (..., T, E) word embeddings (same space),
    mask (..., T) bool (True = real token); leading dims broadcast, so aligned pairs
    ((N, E, L) with (N, T, E)) give (N,), and (B, 1, E, L) with (1, B', T, E) a (B, B') matrix.
    A caption with no real token scores 0."""
    context, _ = region_word_attention(regions, words, mask, gamma1)  # (..., T, E)
    cos = F.cosine_similarity(words.float(), context.float(), dim=-1, eps=1e-6)  # (..., T)
    filled = (gamma2 * cos).masked_fill(~mask, torch.finfo(torch.float32).min)
    count = mask.sum(-1)  # (...,)
    lme = (torch.logsumexp(filled, dim=-1) - count.clamp(min=1).float().log()) / gamma2
    return torch.where(count > 0, lme, torch.zeros_like(lme))


def similarity_matrix(regions: torch.Tensor, words: torch.Tensor, mask: torch.Tensor,
                      gamma1: float = GAMMA1, gamma2: float = GAMMA2) -> torch.Tensor:
    """Every image against every caption: regions (B, E, L), words (B', T, E), mask (B', T)
    -> (B, B') local scores, for a contrastive loss (row i: image i against all captions)."""
    return region_word_score(regions[:, None], words[None], mask[None], gamma1, gamma2)
