"""One training iteration: D step, G step, EMA update. No I/O, no logging.

One G forward per iteration (the DCGAN pattern): the fakes feed the D step detached, then the
same fakes, still attached to G's graph, are scored by the updated D for the G step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from t2i.models import Discriminator, GANConfig, Generator
from t2i.models.matcher import Matcher
from t2i.train.data import TrainData
from t2i.train.losses import LossConfig, discriminator_loss, generator_loss, match_ce
from t2i.train.runtime import Runtime, step_generator


@dataclass
class GANState:
    g: nn.Module               # Generator, or DDP(Generator)
    d: nn.Module               # Discriminator, or DDP(Discriminator)
    g_raw: Generator
    d_raw: Discriminator
    ema: Generator             # exponential moving average of G: every sample comes from it
    opt_g: torch.optim.Adam
    opt_d: torch.optim.Adam
    scaler: torch.amp.GradScaler | None = None  # fp16 on CUDA only; bf16/fp32 need no scaling
    # G's text_norm of every train caption, computed once (text_norm is fitted before training
    # and never changes): the ~3,000 candidate captions of a step are gathered from it, not
    # re-whitened (a 512x512 matmul each, ~5% of a CPU step).
    normed_text: torch.Tensor | None = None  # (M, D)
    # The frozen matcher (train.matcher_weight > 0) and its text embedding of every train caption,
    # computed once like normed_text.
    matcher: Matcher | None = None
    matcher_text: torch.Tensor | None = None  # (M, E)


def normed_train_text(state: GANState, data: TrainData, device: torch.device) -> torch.Tensor:
    """`state.normed_text`, computed on first use (after a resume has restored text_norm)."""
    if state.normed_text is None:
        with torch.no_grad():
            state.normed_text = state.g_raw.text_norm(data.text.to(device))  # (M, D)
    return state.normed_text


def matcher_train_text(state: GANState, data: TrainData, device: torch.device) -> torch.Tensor:
    """`state.matcher_text`, computed on first use."""
    if state.matcher_text is None:
        assert state.matcher is not None
        with torch.no_grad():
            state.matcher_text = state.matcher.embed_text(data.text.to(device))  # (M, E)
    return state.matcher_text


def build_state(
    cfg: GANConfig, lr_g: float, lr_d: float, betas: tuple[float, float], runtime: Runtime, ddp: bool,
    train_text: torch.Tensor | None = None,  # (N, D) training sentence vectors: fit G's text_norm
) -> GANState:
    g = Generator(cfg)
    if train_text is not None:
        g.text_norm.fit(train_text)  # before the EMA copy and DDP's buffer broadcast
    g = g.to(runtime.device, memory_format=runtime.memory_format)
    d = Discriminator(cfg).to(runtime.device, memory_format=runtime.memory_format)
    ema = copy.deepcopy(g).eval().requires_grad_(False)
    g_w: nn.Module = g
    d_w: nn.Module = d
    if ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        g_w, d_w = DDP(g, device_ids=ids), DDP(d, device_ids=ids)
    return GANState(
        g=g_w, d=d_w, g_raw=g, d_raw=d, ema=ema,
        opt_g=torch.optim.Adam(g.parameters(), lr=lr_g, betas=betas),
        opt_d=torch.optim.Adam(d.parameters(), lr=lr_d, betas=betas),
        scaler=torch.amp.GradScaler("cuda") if runtime.dtype == torch.float16 else None,
    )


def mode_seeking_pairs(batch: int, loss_cfg: LossConfig) -> int:
    """How many (caption, two noises) pairs the mode-seeking term compares: 0 when it is off."""
    if loss_cfg.diversity_weight <= 0 or batch < 4:
        return 0
    return max(1, min(batch // 2, round(batch * loss_cfg.diversity_pairs)))


@torch.no_grad()
def update_ema(ema: nn.Module, g: nn.Module, decay: float, step: int) -> None:
    # Warm-up: a short run's EMA should not be stuck at the random init.
    d = min(decay, (1.0 + step) / (10.0 + step))
    e_params, g_params = list(ema.parameters()), list(g.parameters())
    torch._foreach_lerp_(e_params, g_params, 1.0 - d)
    for eb, gb in zip(ema.buffers(), g.buffers()):  # BN running stats follow G
        eb.copy_(gb)


@dataclass
class Mismatch:
    """The wrong caption of each real image, as drawn (before any ranking)."""
    text: torch.Tensor   # (B, D) raw: the swap, another caption, or the first drawn one-word miss
    near: torch.Tensor   # (B,) bool: rows whose wrong caption is a one-word miss
    pool: torch.Tensor   # (B, P) train rows of the drawn one-word misses (P = pool; unused rows: 0)


def draw_mismatch(
    data: TrainData, text: torch.Tensor, rows: torch.Tensor, partner: torch.Tensor, gen: torch.Generator,
    near_miss: float = 1.0, pool: int = 1,
) -> Mismatch:
    """Per row, with odds 1 : `near_miss` : 1, the word-order swap, a one-word miss or the
    caption of another image in the batch -- falling back to the last where the row has no
    swap / no near miss. For a one-word miss, `pool` candidates are drawn; the first is taken."""
    shuffled = text.roll(1, dims=0)  # (B, D)
    u = torch.rand(len(rows), generator=gen)
    pick = torch.full((len(rows),), -1, dtype=torch.long)  # train row of the chosen negative
    # u in [0, swap_end): swap; [swap_end, near_end): near miss; the rest: another caption.
    swap_end, near_end = 1.0 / (2.0 + near_miss), (1.0 + near_miss) / (2.0 + near_miss)
    use_swap = (partner >= 0) & (u < swap_end)
    pick[use_swap] = partner[use_swap]
    use_near = torch.zeros(len(rows), dtype=torch.bool)
    cand = torch.zeros(len(rows), max(1, pool), dtype=torch.long)
    if near_miss > 0 and data.near_offsets is not None and data.near_rows is not None:
        count = data.near_offsets[rows + 1] - data.near_offsets[rows]
        use_near = (count > 0) & (u >= swap_end) & (u < near_end)
        if bool(use_near.any()):  # drawn only then: the same generator calls as ever
            cand, _ = near_miss_candidates(data, rows, pool, gen)  # (B, pool) train rows
            pick[use_near] = cand[:, 0][use_near]
    if bool((pick >= 0).any()):
        chosen = data.text[pick.clamp(min=0)].to(text.device)
        shuffled = torch.where((pick >= 0).to(text.device)[:, None], chosen, shuffled)
    return Mismatch(text=shuffled, near=use_near, pool=cand)


def mismatched_text(
    data: TrainData, text: torch.Tensor, rows: torch.Tensor, partner: torch.Tensor, gen: torch.Generator,
    near_miss: float = 1.0, pool: int = 1, rank: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Wrong captions for the real images (B, D): `draw_mismatch`, then hard negatives (VSE++,
    Faghri et al. 2018): with `pool` > 1 and `rank` (raw candidate sentences (B, K, D) -> match
    scores (B, K)), the one-word miss is the best-matching of the `pool` drawn, so D is shown
    the attribute it currently confuses most. (The training step does the same ranking inside
    D's own forward: `discriminator_loss(hard_pool=...)`.)"""
    m = draw_mismatch(data, text, rows, partner, gen, near_miss, pool)
    if pool <= 1 or rank is None or not bool(m.near.any()):
        return m.text
    best = rank(data.text[m.pool].to(text.device)).argmax(dim=1).cpu()  # (B,)
    hard = data.text[m.pool[torch.arange(len(rows)), best]].to(text.device)  # (B, D)
    return torch.where(m.near.to(text.device)[:, None], hard, m.text)


def near_miss_candidates(
    data: TrainData, rows: torch.Tensor, k: int, gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """K one-word-miss captions per row, drawn uniformly with replacement: (rows (B, K) of
    data.text, valid (B, K) bool). A row with no one-word miss gets K invalid candidates."""
    if data.near_offsets is None or data.near_rows is None or len(data.near_rows) == 0:
        return torch.zeros(len(rows), k, dtype=torch.long), torch.zeros(len(rows), k, dtype=torch.bool)
    start, count = data.near_offsets[rows], data.near_offsets[rows + 1] - data.near_offsets[rows]
    j = start[:, None] + (torch.rand(len(rows), k, generator=gen) * count[:, None]).long()  # (B, K)
    cand = data.near_rows[j.clamp(max=len(data.near_rows) - 1)]
    return cand, (count > 0)[:, None].expand(-1, k)


def first_of_csr(offsets: torch.Tensor | None, csr_rows: torch.Tensor | None, rows: torch.Tensor, n: int,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` entries of each row's CSR list (no random draw): (entries (B, n), exists (B, n))."""
    b = len(rows)
    if n == 0 or offsets is None or csr_rows is None or len(csr_rows) == 0:
        return torch.zeros(b, n, dtype=torch.long), torch.zeros(b, n, dtype=torch.bool)
    start, count = offsets[rows], offsets[rows + 1] - offsets[rows]
    j = torch.arange(n)[None, :]  # (1, n)
    return csr_rows[(start[:, None] + j).clamp(max=len(csr_rows) - 1)], j < count[:, None]


def with_word_order_candidates(
    data: TrainData, rows: torch.Tensor, cand_rows: torch.Tensor, valid: torch.Tensor, n: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Append up to `n` captions with the row's words in another order (the first n of
    `word_order_partners`; no random draw) to its K candidates: (rows (B, K+n), valid (B, K+n)).
    Their sentence vectors lie nearest the true one (a role swap in a copula sentence moves USE
    least: docs/results/tuning.md, session 9); inside the softmax a candidate's gradient grows as
    D's margin on it shrinks, where the hinge weighs every wrong caption alike."""
    extra, ok = first_of_csr(data.order_offsets, data.order_rows, rows, n)
    return torch.cat([cand_rows, extra.to(cand_rows.device)], dim=1), torch.cat([valid, ok.to(valid.device)], dim=1)


def candidate_rows(data: TrainData, rows: torch.Tensor, k: int, word_orders: int,
                   gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """K one-word misses plus up to `word_orders` other orders per row: rows (B, K'), valid (B, K')."""
    cand, valid = near_miss_candidates(data, rows, k, gen)
    if word_orders > 0:
        cand, valid = with_word_order_candidates(data, rows, cand, valid, word_orders)
    return cand, valid


def sibling_captions(data: TrainData, rows: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `n` other captions of each row's image (the first n of `image_captions`; no random
    draw): (rows (B, n) of data.text, exists (B, n) bool)."""
    return first_of_csr(data.sibling_offsets, data.sibling_rows, rows, n)


def rotating_swap_partner(data: TrainData, rows: torch.Tensor, partner: torch.Tensor, step: int) -> torch.Tensor:
    """The hinge's word-order negative taken in turn from all of a row's other orders
    (`word_order_partners`, the (step + row)-th; no random draw) instead of the one fixed
    `swap_partners` row; rows without such a caption keep their fixed partner. (B,) rows."""
    if data.order_offsets is None or data.order_rows is None or len(data.order_rows) == 0:
        return partner
    start, count = data.order_offsets[rows], data.order_offsets[rows + 1] - data.order_offsets[rows]
    turn = data.order_rows[(start + (step + rows) % count.clamp(min=1)).clamp(max=len(data.order_rows) - 1)]
    return torch.where(count > 0, turn, partner)


def _backward_step(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    if scaler is None:
        loss.backward()
        opt.step()
    else:  # fp16: scale against gradient underflow; the step is skipped on inf/NaN gradients
        scaler.scale(loss).backward()
        scaler.step(opt)


def train_step(
    state: GANState,
    data: TrainData,
    rows: torch.Tensor,       # (B,) train-caption rows of this rank's batch
    step: int,
    seed: int,
    rank: int,
    loss_cfg: LossConfig,
    ema_decay: float,
    runtime: Runtime,
) -> dict[str, torch.Tensor]:
    gen = step_generator(seed, rank, step)
    real, text, partner = data.batch(rows, runtime.device, runtime.channels_last)
    if loss_cfg.swap_all_orders:
        partner = rotating_swap_partner(data, rows, partner, step)
    b = real.shape[0]
    z = torch.randn(b, state.g_raw.config.z_dim, generator=gen).to(runtime.device)
    pairs = mode_seeking_pairs(b, loss_cfg)
    # The last `pairs` fakes repeat the first `pairs` captions with fresh noise (mode-seeking
    # term); the other b - pairs captions are each drawn once. pairs = b // 2 (the default):
    # the first half's captions twice.
    fake_rows = torch.cat([torch.arange(b - pairs), torch.arange(pairs)]).to(text.device)  # (B,) batch row of each fake's caption
    text_fake = text[fake_rows]
    sentence = state.g_raw.text_norm  # D sees the sentence vectors exactly as G does

    mis = draw_mismatch(data, text, rows, partner, gen, loss_cfg.near_miss, loss_cfg.near_miss_pool)
    hard = None
    if loss_cfg.near_miss_pool > 1 and bool(mis.near.any()):  # hard negatives: ranked in D's own forward
        hard = (normed_train_text(state, data, runtime.device)[mis.pool.to(runtime.device)], mis.near.to(runtime.device))  # (B, P, D), (B,)
    cands = cands_fake = valid = valid_fake = None
    use_matcher = loss_cfg.matcher_weight > 0 and state.matcher is not None
    cand_rows = None
    if loss_cfg.contrastive_d > 0 or loss_cfg.contrastive_g > 0 or use_matcher:  # drawn after everything else: weight 0 draws what it always drew
        # K one-word misses, plus the captions with the same words in other orders
        cand_rows, valid = candidate_rows(data, rows, loss_cfg.contrastive_candidates, loss_cfg.contrastive_word_order, gen)
        cands = normed_train_text(state, data, runtime.device)[cand_rows.to(runtime.device)]  # (B, K, D)
        valid = valid.to(runtime.device)
        cands_fake, valid_fake = cands[fake_rows], valid[fake_rows]
    extra_true = None
    if loss_cfg.contrastive_d > 0 and loss_cfg.contrastive_captions > 1:
        # The image's other captions, each against its own candidates, in D's term only: more
        # evidence per feature pass (a quarter of the synthetic captions name the centre; most
        # images have one that does), while G keeps drawing each caption as sampled.
        sib, exists = sibling_captions(data, rows, loss_cfg.contrastive_captions - 1)  # (B, n)
        flat, exists = sib.flatten(), exists.flatten()  # (E,) with E = B * n
        e_rows, e_valid = candidate_rows(data, flat, loss_cfg.contrastive_candidates, loss_cfg.contrastive_word_order, gen)
        e_valid = e_valid & exists[:, None]
        normed = normed_train_text(state, data, runtime.device)
        cands = torch.cat([cands, normed[e_rows.to(runtime.device)]])  # (B + E, K, D)
        valid = torch.cat([valid, e_valid.to(runtime.device)])
        image_of = torch.arange(b).repeat_interleave(sib.shape[1])  # (E,) batch row of each extra caption
        extra_true = (normed[flat.to(runtime.device)], image_of, exists.to(runtime.device))

    with runtime.autocast():
        fake = state.g(z, text_fake)  # (B, 3, R, R)

    # --- D step
    state.opt_d.zero_grad(set_to_none=True)
    with runtime.autocast():
        loss_d, stats_d = discriminator_loss(state.d, real, sentence(text), fake, sentence(text_fake), sentence(mis.text), loss_cfg, step,
                                              cands, valid, hard, extra_true)
    _backward_step(loss_d, state.opt_d, state.scaler)

    # --- G step: D frozen and called unwrapped (no DDP bookkeeping for a D that is not updated)
    state.d_raw.requires_grad_(False)
    state.opt_g.zero_grad(set_to_none=True)
    with runtime.autocast():
        loss_g, stats_g = generator_loss(state.d_raw, fake, sentence(text_fake), z, loss_cfg, pairs, cands_fake, valid_fake)
        if use_matcher:  # the caption against the same candidates, under the frozen matcher
            assert state.matcher is not None and cand_rows is not None and valid_fake is not None
            table = matcher_train_text(state, data, runtime.device)  # (M, E)
            fake_cands = cand_rows.to(runtime.device)[fake_rows]  # (B, K')
            m_ce = match_ce(state.matcher, fake, table[rows.to(runtime.device)[fake_rows]], table[fake_cands], valid_fake)
            loss_g = loss_g + loss_cfg.matcher_weight * m_ce
            stats_g["loss_g_matcher"] = m_ce.detach()
    _backward_step(loss_g, state.opt_g, state.scaler)
    state.d_raw.requires_grad_(True)
    if state.scaler is not None:
        state.scaler.update()

    update_ema(state.ema, state.g_raw, ema_decay, step)
    return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), **stats_d, **stats_g}
