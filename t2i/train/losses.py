"""GAN losses, kept apart from the networks and the loop.

Discriminator: real images with their caption are positives; generated images and real images
with a mismatched caption (another caption of the batch, or the word-order swap of the true
caption) are negatives -- the second kind is what forces D, and through it G, to read the text.
Hinge (DF-GAN) or BCE (the original notebook). The matching-aware gradient penalty (MA-GP,
DF-GAN) smooths D around real (image, matching sentence) pairs, in both inputs.
Generator: fool D; optionally a mode-seeking term (MSGAN) that pays G for making two noise
vectors of the same caption give different images.

Contrastive matching (XMC-GAN, Zhang et al. 2021, with one-word misses as the negatives): with
`contrastive_d` / `contrastive_g` > 0 each image is also scored against K captions that differ from its own
in one word, and a cross-entropy asks that its own caption win. A hinge against one wrong
caption gives D one comparison per image; the softmax over K gives K, which is what a colour
seen in a few pixels (the flower's centre) needs. D learns it on real images, G on its fakes
through the frozen D.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from t2i.models.matcher import SCALE, Matcher


@dataclass(frozen=True)
class LossConfig:
    kind: Literal["hinge", "bce"] = "hinge"
    ma_gp_weight: float = 2.0
    ma_gp_power: float = 6.0
    ma_gp_every: int = 1          # lazy regularisation (StyleGAN2): the penalty every N-th D step, x N
    mismatch_weight: float = 1.0
    near_miss: float = 1.0        # weight of one-word misses among the wrong captions (swap, random: 1 each)
    near_miss_pool: int = 1       # hard negatives: the best-matching of this many one-word misses
    diversity_weight: float = 0.0
    contrastive_d: float = 0.0        # weight of the cross-entropy against one-word misses in D's loss
    contrastive_g: float = 0.0        # ... and in G's, on its fakes through the frozen D
    contrastive_candidates: int = 8   # K candidates per image
    contrastive_word_order: int = 0   # ... plus up to this many captions with its words in another order
    contrastive_captions: int = 1     # D's term scores each real image with up to this many of its captions
    swap_all_orders: bool = False     # the hinge's swap negative turns through every other word order
    matcher_weight: float = 0.0       # G's cross-entropy against the same candidates under the frozen matcher
    diversity_pairs: float = 0.5  # share of the batch that repeats a caption for the mode-seeking term


def candidate_ce(out_true: torch.Tensor, out_cand: torch.Tensor, valid: torch.Tensor,
                 count: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of the true caption against its candidates, per (image, caption) row.
    out_true (B,), out_cand (B, K) scores, valid (B, K) bool (False: no such candidate, ignored).
    Rows without a valid candidate contribute 0 (softmax over the true caption alone).
    count (B,) bool: rows that exist at all (an image's extra caption slot may be empty); the
    mean is over those."""
    logits = torch.cat([out_true[:, None], out_cand.masked_fill(~valid, float("-inf"))], dim=1)  # (B, 1+K)
    ce = torch.logsumexp(logits, dim=1) - out_true  # (B,)
    if count is None:
        return ce.mean()
    return (ce * count).sum() / count.sum().clamp(min=1)


def match_ce(matcher: Matcher, image: torch.Tensor, true_emb: torch.Tensor, cand_emb: torch.Tensor,
             valid: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each image's own caption against its candidates under the matcher
    (t2i/models/matcher.py): fitting it on real images, and in G's loss on fakes.
    image (B, 3, R, R), true_emb (B, E), cand_emb (B, K, E) = `matcher.embed_text` outputs,
    valid (B, K) bool."""
    f = matcher.embed_image(image)  # (B, E)
    s_true = (f * true_emb).sum(1) * SCALE  # (B,)
    s_cand = (cand_emb * f[:, None]).sum(-1) * SCALE  # (B, K)
    return candidate_ce(s_true.float(), s_cand.float(), valid)


def _neg(out: torch.Tensor, kind: str) -> torch.Tensor:
    """Loss pushing scores down (fake / mismatched), per sample."""
    return F.relu(1.0 + out) if kind == "hinge" else F.softplus(out)


def _pos(out: torch.Tensor, kind: str) -> torch.Tensor:
    """Loss pushing scores up (real and matching), per sample."""
    return F.relu(1.0 - out) if kind == "hinge" else F.softplus(-out)


def discriminator_loss(
    d: nn.Module,
    real: torch.Tensor,       # (B, 3, R, R)
    text: torch.Tensor,       # (B, D) true captions of the real images
    fake: torch.Tensor,       # (B, 3, R, R), detached
    text_fake: torch.Tensor,  # (B, D) captions the fakes were generated from
    text_mis: torch.Tensor,   # (B, D) mismatched captions for the real images
    cfg: LossConfig,
    step: int = 0,
    cands: torch.Tensor | None = None,   # (B, K, D) one-word-miss candidates of the true captions
    cand_valid: torch.Tensor | None = None,  # (B, K) bool
    hard_pool: tuple[torch.Tensor, torch.Tensor] | None = None,  # (B, P, D) one-word misses, (B,) bool rows
    extra_true: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,  # (E, D), (E,) image, (E,) bool
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One D forward: features of [real|fake] once, scored against [true|generating|mismatched
    (|P hard-negative pool)(|K candidates)] captions. D has no batch norm, so this equals
    separate forwards; it is one call (DDP sees exactly one forward per backward) and a third
    less work.

    `hard_pool`: on its rows the mismatched score is the best of the P pool scores -- the hinge
    on the one-word miss D currently matches best (hard negatives), ranked by this same forward
    instead of a separate pass over the real images; the max routes the gradient to that one.

    `extra_true`: more true captions of the real images (sentence, image row, exists), each with
    its own candidates in rows B.. of `cands`: the contrastive term scores them like the first."""
    b = real.shape[0]
    use_ce = cfg.contrastive_d > 0 and cands is not None and cand_valid is not None
    # The penalty's double backward costs about as much as the rest of the D step: with
    # ma_gp_every=N it runs on every N-th step only, N times as strong (same mean pull).
    use_gp = cfg.ma_gp_weight > 0 and step % cfg.ma_gp_every == 0
    real_in = real.detach().requires_grad_(use_gp)
    text_in = text.detach().requires_grad_(use_gp)
    index = [torch.arange(2 * b), torch.arange(b)]  # image of each score: (3B,)
    texts = [text_in, text_fake, text_mis]
    n_pool = 0
    if hard_pool is not None:
        n_pool = hard_pool[0].shape[1]
        index.append(torch.arange(b).repeat_interleave(n_pool))  # (B*P,)
        texts.append(hard_pool[0].flatten(0, 1))
    n_extra = 0
    if use_ce and extra_true is not None:
        n_extra = extra_true[0].shape[0]
        index.append(extra_true[1].cpu())  # (E,)
        texts.append(extra_true[0])
    if use_ce:
        k = cands.shape[1]
        rows_of = torch.arange(b) if n_extra == 0 else torch.cat([torch.arange(b), extra_true[1].cpu()])  # (B [+ E],)
        index.append(rows_of.repeat_interleave(k))  # ((B + E) * K,)
        texts.append(cands.flatten(0, 1))
    out = d(torch.cat([real_in, fake.detach()]), torch.cat(texts), torch.cat(index).to(real.device))
    out = out.float()  # (3B [+ B*K],) scores; the loss is computed in fp32 even under autocast
    out_real, out_fake, out_mis = out[:b], out[b : 2 * b], out[2 * b : 3 * b]
    if hard_pool is not None:
        best = out[3 * b : (3 + n_pool) * b].view(b, n_pool).max(dim=1).values  # (B,)
        out_mis = torch.where(hard_pool[1], best, out_mis)
    loss_real = _pos(out_real, cfg.kind).mean()
    loss_fake = _neg(out_fake, cfg.kind).mean()
    loss_mis = _neg(out_mis, cfg.kind).mean()
    w = cfg.mismatch_weight
    loss = loss_real + (loss_fake + w * loss_mis) / (1.0 + w)
    stats = {"loss_d_real": loss_real.detach(), "loss_d_fake": loss_fake.detach(), "loss_d_mismatch": loss_mis.detach()}
    if use_ce:
        start = (3 + n_pool) * b
        if n_extra == 0:
            ce = candidate_ce(out_real, out[start:].view(b, -1), cand_valid)
        else:
            true = torch.cat([out_real, out[start : start + n_extra]])  # (B + E,)
            exists = torch.cat([torch.ones(b, dtype=torch.bool, device=out.device), extra_true[2]])
            ce = candidate_ce(true, out[start + n_extra :].view(b + n_extra, -1), cand_valid, exists)
        loss = loss + cfg.contrastive_d * ce
        stats["loss_d_contrastive"] = ce.detach()
    if use_gp:
        gx, gs = torch.autograd.grad(out_real.sum(), (real_in, text_in), create_graph=True)
        sq = gx.float().flatten(1).pow(2).sum(1) + gs.float().pow(2).sum(1)  # (B,) |grad|^2
        # |grad|^p as (|grad|^2)^(p/2): no sqrt, so no infinite derivative at a zero gradient.
        gp = cfg.ma_gp_weight * cfg.ma_gp_every * sq.pow(cfg.ma_gp_power / 2.0).mean()
        loss = loss + gp
    # Logged amortised (0 on skipped steps), so a window mean is the penalty per step.
    stats["ma_gp"] = gp.detach() if use_gp else torch.zeros((), device=out.device)
    return loss, stats


def generator_loss(
    d: nn.Module,
    fake: torch.Tensor,   # (B, 3, R, R), with grad to G
    text: torch.Tensor,   # (B, D)
    z: torch.Tensor,      # (B, z_dim)
    cfg: LossConfig,
    pairs: int,
    cands: torch.Tensor | None = None,   # (B, K, D) one-word-miss candidates of `text`
    cand_valid: torch.Tensor | None = None,  # (B, K) bool
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`pairs`: the last `pairs` fakes repeat the first `pairs` captions with fresh noise, which
    is what the mode-seeking term compares (0: no pairs)."""
    b = fake.shape[0]
    use_ce = cfg.contrastive_g > 0 and cands is not None and cand_valid is not None
    if use_ce:  # one feature pass scores the generating caption and its K candidates
        k = cands.shape[1]
        index = torch.cat([torch.arange(b), torch.arange(b).repeat_interleave(k)]).to(fake.device)
        out_all = d(fake, torch.cat([text, cands.flatten(0, 1)]), index).float()  # (B + B*K,)
        out = out_all[:b]
    else:
        out = d(fake, text).float()  # (B,)
    adv = -out.mean() if cfg.kind == "hinge" else F.softplus(-out).mean()
    stats: dict[str, torch.Tensor] = {"loss_g_adv": adv.detach()}
    loss = adv
    if use_ce:
        ce = candidate_ce(out, out_all[b:].view(b, k), cand_valid)
        loss = loss + cfg.contrastive_g * ce
        stats["loss_g_contrastive"] = ce.detach()
    if pairs > 0:
        img_dist = (fake[:pairs].float() - fake[b - pairs :].float()).abs().mean()
        z_dist = (z[:pairs] - z[b - pairs :]).abs().mean()
        ratio = img_dist / z_dist
        stats["diversity"] = ratio.detach()
        if cfg.diversity_weight > 0:
            # MSGAN: 1 / (ratio + eps) is large when two noises give the same image.
            loss = loss + cfg.diversity_weight / (ratio + 1e-5)
    return loss, stats
