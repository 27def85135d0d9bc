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
    """Each word's region context (DAMSM Eqs. 8-9), K captions per image.

    regions (M, E, L), words (M, K, T, E), mask (M, K, T) bool
    -> context (M, K, T, E), attention over regions (M, K, T, L). Rows of padded words are
    uniform, and a caption with no real token attends uniformly: its score is zeroed later.
    The K captions of an image share one (E, L) map: one bmm over K*T words, no copy per caption.
    The loss scores ~10^4 captions per step, so every full-size elementwise op counts here."""
    m, k, t, e = words.shape
    scaled = regions / math.sqrt(e)  # (M, E, L): the 1/sqrt(E) on the small tensor
    sim = torch.bmm(words.reshape(m, k * t, e), scaled).view(m, k, t, -1).float()  # (M, K, T, L)
    # Eq. 8 over the words. Not masked_softmax: a padded word's weight is exactly 0 after the
    # finite fill whenever the caption has a real word, and an all-padding caption scores 0 anyway.
    over_words = torch.softmax(sim.masked_fill(~mask[..., None], torch.finfo(torch.float32).min), dim=2)
    over_regions = torch.softmax(over_words * gamma1, dim=-1)  # (M, K, T, L), Eq. 9
    flat = over_regions.view(m, k * t, -1).to(regions.dtype)
    context = torch.bmm(flat, regions.transpose(1, 2))  # (M, K*T, E)
    return context.view(m, k, t, e), over_regions


def region_word_score(regions: torch.Tensor, words: torch.Tensor, mask: torch.Tensor,
                      gamma1: float = GAMMA1, gamma2: float = GAMMA2) -> torch.Tensor:
    """DAMSM local score of K captions against each image, in [-1, 1]: higher = the words find their regions.

    regions (M, E, L) image-region embeddings, words (M, K, T, E) word embeddings (same space),
    mask (M, K, T) bool (True = real token) -> (M, K). A caption with no real token scores 0."""
    context, _ = region_word_attention(regions, words, mask, gamma1)  # (M, K, T, E)
    w, c = words.float(), context.float()
    # cos = <w, c> / (|w| |c|), dividing the (M, K, T) dot, not the two (M, K, T, E) tensors.
    cos = (w * c).sum(-1) / (w.norm(dim=-1) * c.norm(dim=-1)).clamp(min=1e-6)  # (M, K, T)
    filled = (gamma2 * cos).masked_fill(~mask, torch.finfo(torch.float32).min)
    count = mask.sum(-1)  # (M, K)
    lme = (torch.logsumexp(filled, dim=-1) - count.clamp(min=1).float().log()) / gamma2
    return torch.where(count > 0, lme, torch.zeros_like(lme))


def similarity_matrix(regions: torch.Tensor, words: torch.Tensor, mask: torch.Tensor,
                      gamma1: float = GAMMA1, gamma2: float = GAMMA2) -> torch.Tensor:
    """Every image against every caption: regions (B, E, L), words (B', T, E), mask (B', T)
    -> (B, B') local scores, for a contrastive loss (row i: image i against all captions)."""
    b = regions.shape[0]
    return region_word_score(regions, words.expand(b, *words.shape), mask.expand(b, *mask.shape), gamma1, gamma2)


def indexed_score(regions: torch.Tensor, words: torch.Tensor, mask: torch.Tensor, index: torch.Tensor | None,
                  group: int = 16) -> torch.Tensor:
    """Caption n against image index[n]: regions (M, E, L), words (N, T, E), mask (N, T), index (N,)
    (None: the n-th image, N = M) -> (N,).

    The loss scores one real image against ~160 captions (true, mismatched, candidates) and a
    fake against one. Gathering an (E, L) map per caption copies E*L floats per caption forward
    and scatter-adds them back in the backward pass; packing instead took a word-scored step at
    ~160 captions per image from 0.23x to 0.32x the sentence-only step's images/s
    (benchmarks/word_attention_cost.py, before the other savings). An image's captions are packed
    into chunks of `group` that share its map (at most group - 1 padded slots per image)."""
    if index is None:
        return region_word_score(regions, words[:, None], mask[:, None])[:, 0]
    n, m = index.shape[0], regions.shape[0]
    counts = torch.bincount(index, minlength=m)  # (M,)
    order = torch.argsort(index, stable=True)
    first = torch.cumsum(counts, 0) - counts  # (M,) sorted position of each image's first caption
    rank = torch.arange(n, device=index.device) - first[index[order]]  # (N,) place among its image's captions
    chunks = (counts + group - 1) // group  # (M,)
    first_chunk = torch.cumsum(chunks, 0) - chunks
    slot = torch.empty_like(index)
    slot[order] = (first_chunk[index[order]] + rank // group) * group + rank % group  # (N,) in [0, C*group)
    chunk_image = torch.repeat_interleave(torch.arange(m, device=index.device), chunks)  # (C,)
    c = chunk_image.shape[0]
    packed = words.new_zeros(c * group, *words.shape[1:]).index_copy(0, slot, words)  # (C*G, T, E)
    packed_mask = mask.new_zeros(c * group, mask.shape[1]).index_copy(0, slot, mask)  # (C*G, T)
    scores = region_word_score(regions[chunk_image], packed.view(c, group, *words.shape[1:]),
                               packed_mask.view(c, group, -1))  # (C, G)
    return scores.flatten()[slot]
