"""GAN losses, kept apart from the networks and the loop.

Discriminator: real images with their caption are positives; generated images and real images
with a mismatched caption (another caption of the batch, or the word-order swap of the true
caption) are negatives -- the second kind is what forces D, and through it G, to read the text.
Hinge (DF-GAN) or BCE (the original notebook). The matching-aware gradient penalty (MA-GP,
DF-GAN) smooths D around real (image, matching sentence) pairs, in both inputs.
Generator: fool D; optionally a mode-seeking term (MSGAN) that pays G for making two noise
vectors of the same caption give different images.

Contrastive matching (XMC-GAN, Zhang et al. 2021, with one-word misses as the negatives): with
`train.loss.contrastive_d` / `contrastive_g` > 0 each image is also scored against K captions that differ from its own
in one word, and a cross-entropy asks that its own caption win. A hinge against one wrong
caption gives D one comparison per image; the softmax over K gives K, which is what a colour
seen in a few pixels (the flower's centre) needs. D learns it on real images, G on its fakes
through the frozen D.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from t2i.config import LossParams
from t2i.models.matcher import SCALE, Matcher


MA_GP_POWER = 6.0  # the penalty is |grad|^6 (DF-GAN's p)


def mode_seeking_pairs(batch: int, cfg: LossParams) -> int:
    """How many (caption, two noises) pairs the mode-seeking term compares: 0 when it is off.
    The last that many fakes of a batch repeat the first that many captions with fresh noise."""
    if cfg.diversity_weight <= 0 or batch < 4:
        return 0
    return max(1, min(batch // 2, round(batch * cfg.diversity_pairs)))


@dataclass
class Candidates:
    """Contrastive candidates of each (image, true caption) row, as D sees them.

    With ``log_weight`` the K slots hold each row's distinct candidates
    (`negatives.distinct_candidates`) and only the valid ones are scored: where D matches words
    against regions every scored caption costs a region attention, and K draws with replacement
    repeat a caption's few one-word misses many times (the same cross-entropy, `candidate_ce`)."""
    text: torch.Tensor   # (N, K, D)
    valid: torch.Tensor  # (N, K) bool: False = no such candidate, ignored
    log_weight: torch.Tensor | None = None  # (N, K) log of how many draws each stands for

    def flat(self, owner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The candidates to score as one list: (n, D) texts and (n,) the entry of ``owner`` (N,)
        (the image of each row) each belongs to; n = N * K, or the valid slots only."""
        index, text = owner.repeat_interleave(self.text.shape[1]), self.text.flatten(0, 1)
        if self.log_weight is None:
            return index, text
        keep = self.valid.flatten()
        return index[keep.to(index.device)], text[keep]

    def unflat(self, scores: torch.Tensor) -> torch.Tensor:
        """`flat`'s (n,) scores back as (N, K); slots not scored hold 0 (invalid, ignored)."""
        if self.log_weight is None:
            return scores.view(self.valid.shape)
        full = scores.new_zeros(self.valid.numel())
        full[self.valid.flatten()] = scores
        return full.view(self.valid.shape)


@dataclass
class ExtraTrue:
    """More true captions of the real images for D's contrastive term, as D sees them."""
    text: torch.Tensor    # (E, D)
    image: torch.Tensor   # (E,) batch row of each one's image
    exists: torch.Tensor  # (E,) bool: False = an empty slot (an image with fewer captions)


@dataclass
class Words:
    """Per-token states of every pool caption as D reads them (after G's token PCA), and which
    pool rows each group of D's captions is: D then scores words against regions for all of them."""
    table: torch.Tensor  # (P, T, k)
    mask: torch.Tensor   # (P, T) bool
    rows: dict[str, torch.Tensor] = field(default_factory=dict)  # group -> pool rows, any shape

    def take(self, groups: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, T, k) states and (N, T) mask of the groups' rows, flattened and concatenated."""
        idx = torch.cat([self.rows[g].flatten() for g in groups]).to(self.table.device)
        return self.table[idx], self.mask[idx]


@dataclass
class DTexts:
    """The captions of one D loss, as D sees them (after G's text_norm)."""
    true: torch.Tensor      # (B, D) captions of the real images
    fake: torch.Tensor      # (B, D) captions the fakes were generated from
    mismatch: torch.Tensor  # (B, D) one wrong caption per real image
    # Hard negatives: on `hard` rows the mismatched score is D's best of the P pool scores.
    hard_pool: torch.Tensor | None = None  # (B, P, D) one-word misses
    hard: torch.Tensor | None = None       # (B,) bool
    cands: Candidates | None = None        # rows: the B true captions, then the E extra ones
    extra: ExtraTrue | None = None
    # Groups "true", "fake", "mismatch", "hard", "extra", "cands" (None: sentence-only scores).
    words: Words | None = None


def candidate_ce(out_true: torch.Tensor, out_cand: torch.Tensor, valid: torch.Tensor,
                 count: torch.Tensor | None = None, log_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of the true caption against its candidates, per (image, caption) row.
    out_true (B,), out_cand (B, K) scores, valid (B, K) bool (False: no such candidate, ignored).
    Rows without a valid candidate contribute 0 (softmax over the true caption alone).
    count (B,) bool: rows that exist at all (an image's extra caption slot may be empty); the
    mean is over those. log_weight (B, K): added to the candidates' logits, log of how many
    times each stands in the softmax (`negatives.distinct_candidates`)."""
    if log_weight is not None:
        out_cand = out_cand + log_weight
    logits = torch.cat([out_true[:, None], out_cand.masked_fill(~valid, float("-inf"))], dim=1)  # (B, 1+K)
    ce = torch.logsumexp(logits, dim=1) - out_true  # (B,)
    if count is None:
        return ce.mean()
    return (ce * count).sum() / count.sum().clamp(min=1)


def match_ce(matcher: Matcher, image: torch.Tensor, true_emb: torch.Tensor, cand_emb: torch.Tensor,
             valid: torch.Tensor, words: tuple[torch.Tensor, torch.Tensor] | None = None,
             batch_valid: torch.Tensor | None = None, cand_count: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of each image's own caption against its candidates under the matcher
    (t2i/models/matcher.py): fitting it on real images, and in G's loss on fakes.
    image (B, 3, R, R), true_emb (B, E), cand_emb (B, K, E) = `matcher.embed_text` outputs,
    valid (B, K) bool. words: reduced token states (B * (1 + K), T, k) and mask, the B true
    captions then the candidates row by row: the matcher's word score joins (a matcher with words).
    batch_valid (B, B) bool: the batch's other true captions join image i's candidates where
    [i, j] is set (in-batch negatives, as CLIP and DAMSM train; the diagonal is ignored).
    cand_count (B, K): how many times each candidate was drawn (`negatives.distinct_candidates`);
    None: once each."""
    f, regions = matcher.embed_image_regions(image)  # (B, E), (B, W, L) | None
    s_true = (f * true_emb).sum(1) * SCALE  # (B,)
    s_cand = (cand_emb * f[:, None]).sum(-1) * SCALE  # (B, K)
    b, k = s_cand.shape
    with_words = words is not None and regions is not None
    if with_words:
        index = torch.cat([torch.arange(b), torch.arange(b).repeat_interleave(k)]).to(image.device)
        w = matcher.word_score(regions, words[0], words[1], index)  # (B + B*K,)
        s_true, s_cand = s_true + w[:b], s_cand + w[b:].view(b, k)
    if batch_valid is not None:
        s_batch = f @ true_emb.T * SCALE  # (B, B): image i against true caption j
        if with_words:
            s_batch = s_batch + matcher.word_score_matrix(regions, words[0][:b], words[1][:b])
        off_diagonal = ~torch.eye(b, dtype=torch.bool, device=batch_valid.device)
        s_cand = torch.cat([s_cand, s_batch], dim=1)  # (B, K + B)
        valid = torch.cat([valid, batch_valid & off_diagonal], dim=1)
        if cand_count is not None:  # the batch's captions stand once each
            cand_count = torch.cat([cand_count, torch.ones_like(batch_valid, dtype=cand_count.dtype)], dim=1)
    log_weight = None if cand_count is None else cand_count.clamp(min=1).float().log().to(s_cand.device)
    return candidate_ce(s_true.float(), s_cand.float(), valid, log_weight=log_weight)


def _neg(out: torch.Tensor, kind: str) -> torch.Tensor:
    """Loss pushing scores down (fake / mismatched), per sample."""
    return F.relu(1.0 + out) if kind == "hinge" else F.softplus(out)


def _pos(out: torch.Tensor, kind: str) -> torch.Tensor:
    """Loss pushing scores up (real and matching), per sample."""
    return F.relu(1.0 - out) if kind == "hinge" else F.softplus(-out)


def _d_scores(d: nn.Module, real: torch.Tensor, fake: torch.Tensor, t: DTexts, text_in: torch.Tensor,
              use_ce: bool) -> torch.Tensor:
    """One D forward: features of [real|fake] once, scored against [true|generating|mismatched
    (|P hard-negative pool)(|E extra true)(|K candidates per true caption)] captions. D has no
    batch norm, so this equals separate forwards; it is one call (DDP sees exactly one forward
    per backward) and a third less work. Returns (3B [+ B*P] [+ E] [+ (B + E)*K],) fp32 scores."""
    b = real.shape[0]
    index = [torch.arange(2 * b), torch.arange(b)]  # image of each score: (3B,)
    texts = [text_in, t.fake, t.mismatch]
    groups = ["true", "fake", "mismatch"]  # which rows of t.words each text is
    if t.hard_pool is not None:
        index.append(torch.arange(b).repeat_interleave(t.hard_pool.shape[1]))  # (B*P,)
        texts.append(t.hard_pool.flatten(0, 1))
        groups.append("hard")
    if use_ce and t.cands is not None:
        rows_of = torch.arange(b)
        if t.extra is not None:
            index.append(t.extra.image.cpu())  # (E,)
            texts.append(t.extra.text)
            groups.append("extra")
            rows_of = torch.cat([torch.arange(b), t.extra.image.cpu()])  # (B + E,)
        cand_index, cand_text = t.cands.flat(rows_of)  # ((B [+ E]) * K,) or the valid slots only
        index.append(cand_index)
        texts.append(cand_text)
        groups.append("cands")
    tokens, mask = t.words.take(groups) if t.words is not None else (None, None)  # (N, T, k), (N, T)
    out = d(torch.cat([real, fake.detach()]), torch.cat(texts), torch.cat(index).to(real.device), tokens, mask)
    return out.float()  # the loss is computed in fp32 even under autocast


def _d_contrastive(out: torch.Tensor, b: int, t: DTexts) -> torch.Tensor:
    """Cross-entropy of each true caption against its candidates, from `_d_scores`' output."""
    assert t.cands is not None
    start = (3 + (0 if t.hard_pool is None else t.hard_pool.shape[1])) * b
    c = t.cands
    if t.extra is None:
        return candidate_ce(out[:b], c.unflat(out[start:]), c.valid, log_weight=c.log_weight)
    n_extra = t.extra.text.shape[0]
    true = torch.cat([out[:b], out[start : start + n_extra]])  # (B + E,)
    exists = torch.cat([torch.ones(b, dtype=torch.bool, device=out.device), t.extra.exists])
    return candidate_ce(true, c.unflat(out[start + n_extra :]), c.valid, exists, c.log_weight)  # (B + E, K)


def _ma_gp(out_real: torch.Tensor, real_in: torch.Tensor, text_in: torch.Tensor, cfg: LossParams) -> torch.Tensor:
    """The matching-aware gradient penalty, amortised: every N-th step, N times as strong."""
    gx, gs = torch.autograd.grad(out_real.sum(), (real_in, text_in), create_graph=True)
    sq = gx.float().flatten(1).pow(2).sum(1) + gs.float().pow(2).sum(1)  # (B,) |grad|^2
    # |grad|^p as (|grad|^2)^(p/2): no sqrt, so no infinite derivative at a zero gradient.
    return cfg.ma_gp_weight * cfg.ma_gp_every * sq.pow(MA_GP_POWER / 2.0).mean()


def discriminator_loss(
    d: nn.Module,
    real: torch.Tensor,  # (B, 3, R, R)
    fake: torch.Tensor,  # (B, 3, R, R), detached
    texts: DTexts,
    cfg: LossParams,
    step: int = 0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Real images with their caption against fakes and against wrong captions (hinge or BCE),
    plus the contrastive term and the lazy MA-GP. `texts.hard_pool`: the hinge on the one-word
    miss D currently matches best, ranked by this same forward; the max routes the gradient to
    that one. `texts.extra`: more true captions, each with its own candidates in rows B.. of
    `texts.cands`, scored like the first."""
    b = real.shape[0]
    use_ce = cfg.contrastive_d > 0 and texts.cands is not None
    # The penalty's double backward costs about as much as the rest of the D step: with
    # ma_gp_every=N it runs on every N-th step only, N times as strong (same mean pull).
    use_gp = cfg.ma_gp_weight > 0 and step % cfg.ma_gp_every == 0
    real_in = real.detach().requires_grad_(use_gp)
    text_in = texts.true.detach().requires_grad_(use_gp)
    out = _d_scores(d, real_in, fake, texts, text_in, use_ce)
    out_real, out_fake, out_mis = out[:b], out[b : 2 * b], out[2 * b : 3 * b]
    if texts.hard_pool is not None and texts.hard is not None:
        n_pool = texts.hard_pool.shape[1]
        best = out[3 * b : (3 + n_pool) * b].view(b, n_pool).max(dim=1).values  # (B,)
        out_mis = torch.where(texts.hard, best, out_mis)
    loss_real = _pos(out_real, cfg.kind).mean()
    loss_fake = _neg(out_fake, cfg.kind).mean()
    loss_mis = _neg(out_mis, cfg.kind).mean()
    w = cfg.mismatch_weight
    loss = loss_real + (loss_fake + w * loss_mis) / (1.0 + w)
    stats = {"loss_d_real": loss_real.detach(), "loss_d_fake": loss_fake.detach(), "loss_d_mismatch": loss_mis.detach()}
    if use_ce:
        ce = _d_contrastive(out, b, texts)
        loss = loss + cfg.contrastive_d * ce
        stats["loss_d_contrastive"] = ce.detach()
    if use_gp:
        gp = _ma_gp(out_real, real_in, text_in, cfg)
        loss = loss + gp
    # Logged amortised (0 on skipped steps), so a window mean is the penalty per step.
    stats["ma_gp"] = gp.detach() if use_gp else torch.zeros((), device=out.device)
    return loss, stats


def generator_loss(
    d: nn.Module,
    fake: torch.Tensor,   # (B, 3, R, R), with grad to G
    text: torch.Tensor,   # (B, D) the generating captions, as D sees them
    z: torch.Tensor,      # (B, z_dim)
    cfg: LossParams,
    cands: Candidates | None = None,  # (B, K, D) candidates of `text`
    words: Words | None = None,       # groups "text" (B,) and "cands" (B, K): D's word-region score
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Fool D; the contrastive term on the fakes through D; the mode-seeking term on the
    `mode_seeking_pairs` pairs of fakes that share a caption."""
    b = fake.shape[0]
    use_ce = cfg.contrastive_g > 0 and cands is not None
    if use_ce:  # one feature pass scores the generating caption and its K candidates
        assert cands is not None
        cand_index, cand_text = cands.flat(torch.arange(b))  # (B*K,) or the valid slots only
        index = torch.cat([torch.arange(b), cand_index]).to(fake.device)
        tokens, mask = words.take(["text", "cands"]) if words is not None else (None, None)
        out_all = d(fake, torch.cat([text, cand_text]), index, tokens, mask).float()  # (B + B*K,)
        out = out_all[:b]
    else:
        tokens, mask = words.take(["text"]) if words is not None else (None, None)
        out = d(fake, text, None, tokens, mask).float()  # (B,)
    adv = -out.mean() if cfg.kind == "hinge" else F.softplus(-out).mean()
    stats: dict[str, torch.Tensor] = {"loss_g_adv": adv.detach()}
    loss = adv
    if use_ce:
        ce = candidate_ce(out, cands.unflat(out_all[b:]), cands.valid, log_weight=cands.log_weight)
        loss = loss + cfg.contrastive_g * ce
        stats["loss_g_contrastive"] = ce.detach()
    pairs = mode_seeking_pairs(b, cfg)
    if pairs > 0:
        img_dist = (fake[:pairs].float() - fake[b - pairs :].float()).abs().mean()
        z_dist = (z[:pairs] - z[b - pairs :]).abs().mean()
        ratio = img_dist / z_dist
        stats["diversity"] = ratio.detach()
        if cfg.diversity_weight > 0:
            # MSGAN: 1 / (ratio + eps) is large when two noises give the same image.
            loss = loss + cfg.diversity_weight / (ratio + 1e-5)
    return loss, stats
