"""One training iteration: D step, G step, EMA update. No I/O, no logging.

One G forward per iteration (the DCGAN pattern): the fakes feed the D step detached, then the
same fakes, still attached to G's graph, are scored by the updated D for the G step. What the
step draws (wrong captions, candidates) comes from negatives.py as train rows; this module turns
them into text as D sees it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from t2i.config import LossParams, OptimParams
from t2i.models import Discriminator, GANConfig, Generator
from t2i.models.caption_code import CaptionCode
from t2i.models.matcher import Matcher
from t2i.train.data import Batch, TrainData
from t2i.train.losses import (Candidates, DTexts, ExtraTrue, Words, discriminator_loss, generator_loss, match_ce,
                              mode_seeking_pairs)
from t2i.train.negatives import Negatives, distinct_candidates, draw_negatives, mismatch_text
from t2i.train.runtime import Runtime, step_generator


@dataclass(frozen=True)
class CodeSource:
    """The matcher's caption code for G, and training captions to fit its whitening on."""
    encoder: CaptionCode
    text: torch.Tensor                                  # (N, D) raw sentence vectors
    tokens: tuple[torch.Tensor, torch.Tensor] | None    # ((N, T, token_dim), (N, T)) of the same captions


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
    # The frozen matcher (train.loss.matcher_weight > 0) and its text embedding of every train
    # caption, computed once like normed_text.
    matcher: Matcher | None = None
    matcher_text: torch.Tensor | None = None  # (P, E)
    matcher_tokens: tuple[torch.Tensor, torch.Tensor] | None = None  # (P, T, k) through its token PCA, (P, T)
    # Every pool caption's token states through G's token PCA (fitted before training, never
    # changed), computed once like normed_text: D's ~10^4 captions a step are gathered from it.
    d_tokens: torch.Tensor | None = None  # (P, T, k)
    d_token_mask: torch.Tensor | None = None  # (P, T) bool


@dataclass(frozen=True)
class StepConfig:
    """What a step needs besides the state and the batch."""
    loss: LossParams
    ema_decay: float
    runtime: Runtime
    seed: int = 0   # with rank and step: the step's random generator
    rank: int = 0


def normed_train_text(state: GANState, data: TrainData, device: torch.device) -> torch.Tensor:
    """`state.normed_text`, computed on first use (after a resume has restored text_norm)."""
    if state.normed_text is None:
        g = state.g_raw
        with torch.no_grad():
            text = data.pool_text.to(device)  # (P, D): train captions, then swaps
            if not g.config.caption_code:
                state.normed_text = g.text_norm(text)
            else:  # the code's token PCA applied in chunks, so the raw token table is never whole
                words = (None, None)
                if data.tokens is not None and g.config.code_token_dim:
                    words = data.tokens.reduced_table(g.caption_code.token_norm, device)  # (P, T, k), (P, T)
                state.normed_text = g.condition_from_code(text, g.caption_code.from_reduced(text, *words))  # (P, D + CODE_DIM)
    return state.normed_text


def word_table(state: GANState, data: TrainData, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(`state.d_tokens`, `state.d_token_mask`), computed on first use; None when D matches no
    words (no token states, or a model without d_word_match)."""
    if data.tokens is None or not state.d_raw.config.d_word_match:
        return None
    if state.d_tokens is None:
        state.d_tokens, state.d_token_mask = data.tokens.reduced_table(state.g_raw.token_norm, device)
    assert state.d_token_mask is not None
    return state.d_tokens, state.d_token_mask


def matcher_train_tokens(state: GANState, data: TrainData, device: torch.device
                         ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Every pool caption's token states through the matcher's own token PCA, computed on first
    use; None for a sentence-only matcher or data."""
    m = state.matcher
    if m is None or not m.uses_tokens or data.tokens is None:
        return None
    if state.matcher_tokens is None:
        state.matcher_tokens = data.tokens.reduced_table(m.caption.token_norm, device)
    return state.matcher_tokens


def matcher_train_text(state: GANState, data: TrainData, device: torch.device) -> torch.Tensor:
    """`state.matcher_text`, computed on first use."""
    if state.matcher_text is None:
        assert state.matcher is not None
        tokens = matcher_train_tokens(state, data, device)
        with torch.no_grad():
            state.matcher_text = state.matcher.embed_text(data.pool_text.to(device), *(tokens or (None, None)))  # (P, E)
    return state.matcher_text


def build_state(cfg: GANConfig, optim: OptimParams, runtime: Runtime, ddp: bool,
                train_text: torch.Tensor | None = None, train_tokens: torch.Tensor | None = None,
                code: CodeSource | None = None) -> GANState:
    """Fresh networks and optimisers; ``train_text`` (N, D) fits G's text_norm, ``train_tokens``
    (N', token_dim) real token states its token PCA (where the config has one), ``code`` the
    matcher's caption code and the captions its whitening is fitted on (``cfg.caption_code``)."""
    g = Generator(cfg)
    if train_text is not None:
        g.text_norm.fit(train_text)  # before the EMA copy and DDP's buffer broadcast
    if train_tokens is not None and g.token_norm is not None:
        g.token_norm.fit(train_tokens)
    if cfg.caption_code:
        if code is None:
            raise ValueError("train.model.caption_code needs the matcher's caption code: run the `matcher` "
                             "stage (dvc repro matcher) or set train.model.caption_code=false")
        g.load_caption_code(code.encoder, code.text, code.tokens)
    g = g.to(runtime.device, memory_format=runtime.memory_format)
    d = Discriminator(cfg).to(runtime.device, memory_format=runtime.memory_format)
    ema = copy.deepcopy(g).eval().requires_grad_(False)
    g_w: nn.Module = g
    d_w: nn.Module = d
    if ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        g_w, d_w = DDP(g, device_ids=ids), DDP(d, device_ids=ids)
    betas = (optim.beta1, optim.beta2)
    return GANState(
        g=g_w, d=d_w, g_raw=g, d_raw=d, ema=ema,
        opt_g=torch.optim.Adam(g.parameters(), lr=optim.lr_g, betas=betas),
        opt_d=torch.optim.Adam(d.parameters(), lr=optim.lr_d, betas=betas),
        scaler=torch.amp.GradScaler("cuda") if runtime.dtype == torch.float16 else None,
    )


@torch.no_grad()
def update_ema(ema: nn.Module, g: nn.Module, decay: float, step: int) -> None:
    # Warm-up: a short run's EMA should not be stuck at the random init.
    d = min(decay, (1.0 + step) / (10.0 + step))
    e_params, g_params = list(ema.parameters()), list(g.parameters())
    torch._foreach_lerp_(e_params, g_params, 1.0 - d)
    for eb, gb in zip(ema.buffers(), g.buffers()):  # BN running stats follow G
        eb.copy_(gb)


def _backward_step(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    if scaler is None:
        loss.backward()
        opt.step()
    else:  # fp16: scale against gradient underflow; the step is skipped on inf/NaN gradients
        scaler.scale(loss).backward()
        scaler.step(opt)


@dataclass(frozen=True)
class CandidateRows:
    """Contrastive candidates as train rows, one row per (image, true caption). With ``count``
    each row's distinct candidates with how often each was drawn: scoring words against regions
    costs a region attention per caption, and 38 slots hold ~2 distinct candidates on the
    grammar's train set. Without it every slot as drawn (the sentence-only scores, cheap)."""
    rows: torch.Tensor                  # (N, K) train rows
    valid: torch.Tensor                 # (N, K) bool
    count: torch.Tensor | None = None   # (N, K) draws of each distinct candidate

    @classmethod
    def of(cls, rows: torch.Tensor, valid: torch.Tensor, distinct: bool) -> "CandidateRows":
        every = cls(rows, valid)
        return every.distinct() if distinct else every

    def distinct(self) -> "CandidateRows":
        """Each row's distinct valid candidates with their draws (itself where already so)."""
        if self.count is not None:
            return self
        rows, count = distinct_candidates(self.rows, self.valid)  # (N, U)
        return CandidateRows(rows, count > 0, count)

    def text(self, normed: torch.Tensor) -> Candidates:
        """The candidates as D reads them: gathered from `normed` (P, D'), G's condition of every pool caption."""
        dev = normed.device
        log_weight = None if self.count is None else self.count.clamp(min=1).float().log().to(dev)
        return Candidates(normed[self.rows.to(dev)], self.valid.to(dev), log_weight)

    def scored(self) -> torch.Tensor:
        """The rows `Candidates.flat` scores, in its order: every slot, or the valid ones only."""
        return self.rows.flatten() if self.count is None else self.rows[self.valid]


def _d_candidate_rows(neg: Negatives, distinct: bool) -> CandidateRows | None:
    """D's candidates: the B true captions' rows, then the E extra true captions' (B + E, K)."""
    if neg.cand_rows is None or neg.cand_valid is None:
        return None
    rows, valid = neg.cand_rows, neg.cand_valid
    if neg.extra_rows is not None:
        assert neg.extra_cand_rows is not None and neg.extra_cand_valid is not None
        rows, valid = torch.cat([rows, neg.extra_cand_rows]), torch.cat([valid, neg.extra_cand_valid])
    return CandidateRows.of(rows, valid, distinct)


def _d_texts(sentence: nn.Module | None, data: TrainData, batch: Batch, fake_rows: torch.Tensor,
             neg: Negatives, normed: torch.Tensor, cands: CandidateRows | None) -> DTexts:
    """D's captions: the batch's through `sentence` (G's text_norm: D sees them as G does), the
    drawn rows gathered from `normed` (G's condition of every train caption, (P, D')). With a
    caption code (`sentence` None) the batch's rows too are gathered from `normed`."""
    dev, mis = batch.text.device, neg.mismatch
    if sentence is None:  # a caption code: every caption D reads is a row of `normed`
        true = normed[batch.rows.to(dev)]  # (B, D')
        t = DTexts(true=true, fake=true[fake_rows], mismatch=mismatch_text(true, normed, mis.rows))
    else:
        t = DTexts(true=sentence(batch.text), fake=sentence(batch.text[fake_rows]),
                   mismatch=sentence(mismatch_text(batch.text, data.pool_text, mis.rows)))
    if mis.pool.shape[1] > 1 and bool(mis.near.any()):  # hard negatives: ranked in D's own forward
        t.hard_pool, t.hard = normed[mis.pool.to(dev)], mis.near.to(dev)  # (B, P, D), (B,)
    if cands is not None:
        t.cands = cands.text(normed)  # (B [+ E], K, D)
        if neg.extra_rows is not None:
            assert neg.extra_image is not None and neg.extra_exists is not None
            t.extra = ExtraTrue(normed[neg.extra_rows.to(dev)], neg.extra_image, neg.extra_exists.to(dev))
    return t


def _d_words(table: tuple[torch.Tensor, torch.Tensor], batch: Batch, fake_rows: torch.Tensor, neg: Negatives,
             cands: CandidateRows | None) -> Words:
    """Which pool rows each of D's caption groups is (parallel to `_d_texts`)."""
    rows, mis = batch.rows, neg.mismatch
    w = Words(*table, rows={"true": rows, "fake": rows[fake_rows.cpu()],
                            "mismatch": torch.where(mis.rows >= 0, mis.rows, rows.roll(1)),  # -1: the rolled batch
                            "hard": mis.pool})
    if cands is not None:
        if neg.extra_rows is not None:
            w.rows["extra"] = neg.extra_rows
        w.rows["cands"] = cands.scored()
    return w


@dataclass
class Fakes:
    """The step's generated images and what made them."""
    images: torch.Tensor  # (B, 3, R, R), attached to G's graph
    z: torch.Tensor       # (B, z_dim)
    rows: torch.Tensor    # (B,) batch row of each fake's caption


def _g_loss(state: GANState, data: TrainData, batch: Batch, fakes: Fakes, neg: Negatives,
            cfg: StepConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """G's loss through the frozen D, plus the matcher's cross-entropy against the same candidates."""
    dev, rows = batch.text.device, fakes.rows
    table = word_table(state, data, dev)
    cand_rows, cands = None, None
    if neg.cand_rows is not None and neg.cand_valid is not None:
        # Each fake's caption's candidates; distinct ones where D scores words (CandidateRows).
        cand_rows = CandidateRows.of(neg.cand_rows[rows.cpu()], neg.cand_valid[rows.cpu()], table is not None)
        cands = cand_rows.text(normed_train_text(state, data, dev))  # (B, K, D)
    if state.g_raw.config.caption_code:
        text = normed_train_text(state, data, dev)[batch.rows.to(dev)[rows]]  # (B, D') as D sees it
    else:
        text = state.g_raw.text_norm(batch.text[rows])  # (B, D) as D sees it
    words = None
    if table is not None:
        words = Words(*table, rows={"text": batch.rows[rows.cpu()]})
        if cand_rows is not None:
            words.rows["cands"] = cand_rows.scored()
    loss, stats = generator_loss(state.d_raw, fakes.images, text, fakes.z, cfg.loss, cands, words)
    if cfg.loss.matcher_weight > 0 and state.matcher is not None:
        assert cand_rows is not None
        m_text = matcher_train_text(state, data, dev)  # (P, E)
        true = m_text[batch.rows.to(dev)[rows]]  # (B, E)
        # Each drawn candidate scored once, weighted by its draws: the same loss, ~1/10 the word scoring.
        matched = cand_rows.distinct()  # (B, U): D's own where it scores words
        cand, count = matched.rows, matched.count
        assert count is not None
        m_words = None
        m_tokens = matcher_train_tokens(state, data, dev)
        if m_tokens is not None:
            idx = torch.cat([batch.rows[rows.cpu()], cand.flatten()]).to(dev)  # (B + B*U,)
            m_words = (m_tokens[0][idx], m_tokens[1][idx])
        m_ce = match_ce(state.matcher, fakes.images, true, m_text[cand.to(dev)], matched.valid.to(dev), m_words,
                        cand_count=count.to(dev))
        loss = loss + cfg.loss.matcher_weight * m_ce
        stats["loss_g_matcher"] = m_ce.detach()
    return loss, stats


def train_step(state: GANState, data: TrainData, rows: torch.Tensor, step: int, cfg: StepConfig,
               ) -> dict[str, torch.Tensor]:
    """One D and one G update on the train captions `rows` (B,); returns the losses and stats."""
    rt, lc = cfg.runtime, cfg.loss
    gen = step_generator(cfg.seed, cfg.rank, step)
    batch = data.batch(rows, rt.device, rt.channels_last)
    b = batch.images.shape[0]
    z = torch.randn(b, state.g_raw.config.z_dim, generator=gen).to(rt.device)
    # The last `pairs` fakes repeat the first `pairs` captions with fresh noise (mode-seeking
    # term); the other b - pairs captions are each drawn once.
    pairs = mode_seeking_pairs(b, lc)
    fake_rows = torch.cat([torch.arange(b - pairs), torch.arange(pairs)]).to(rt.device)  # (B,)
    use_matcher = lc.matcher_weight > 0 and state.matcher is not None
    neg = draw_negatives(data.relations, rows, gen, lc, lc.contrastive_d > 0 or lc.contrastive_g > 0 or use_matcher)
    normed = normed_train_text(state, data, rt.device)  # outside autocast: computed once, in fp32
    table = word_table(state, data, rt.device)
    with rt.autocast():
        if batch.tokens is not None and (state.g_raw.word_attn or state.g_raw.config.code_token_dim):
            assert batch.token_mask is not None
            images = state.g(z, batch.text[fake_rows], batch.tokens[fake_rows], batch.token_mask[fake_rows])
        else:
            images = state.g(z, batch.text[fake_rows])
        fakes = Fakes(images, z, fake_rows)

    state.opt_d.zero_grad(set_to_none=True)
    with rt.autocast():
        sentence = None if state.g_raw.config.caption_code else state.g_raw.text_norm
        cands = _d_candidate_rows(neg, distinct=table is not None)  # distinct where D scores words
        texts = _d_texts(sentence, data, batch, fake_rows, neg, normed, cands)
        if table is not None:
            texts.words = _d_words(table, batch, fake_rows, neg, cands)
        loss_d, stats_d = discriminator_loss(state.d, batch.images, fakes.images, texts, lc, step)
    _backward_step(loss_d, state.opt_d, state.scaler)

    # G step: D frozen and called unwrapped (no DDP bookkeeping for a D that is not updated)
    state.d_raw.requires_grad_(False)
    state.opt_g.zero_grad(set_to_none=True)
    with rt.autocast():
        loss_g, stats_g = _g_loss(state, data, batch, fakes, neg, cfg)
    _backward_step(loss_g, state.opt_g, state.scaler)
    state.d_raw.requires_grad_(True)
    if state.scaler is not None:
        state.scaler.update()

    update_ema(state.ema, state.g_raw, cfg.ema_decay, step)
    return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), **stats_d, **stats_g}
