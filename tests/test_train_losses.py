"""Loss details that the end-to-end training tests would not notice."""

from __future__ import annotations

import math

import pytest
import torch

from t2i.models import Discriminator, GANConfig
from t2i.config import LossParams
from t2i.train.losses import Candidates, DTexts, ExtraTrue, Words, discriminator_loss, generator_loss, mode_seeking_pairs
from t2i.train.step import CandidateRows


def loss_params(**over: float) -> LossParams:
    """LossParams with every optional term off unless named (the defaults turn several on)."""
    return LossParams(**{"ma_gp_weight": 0.0, "contrastive_d": 0.0, "contrastive_g": 0.0, "diversity_weight": 0.0, **over})


def _inputs(seed: int = 0) -> tuple[Discriminator, list[torch.Tensor]]:
    torch.manual_seed(seed)
    # eval(): spectral norm then stops refining its power iteration, so calls see one D
    d = Discriminator(GANConfig(resolution=32, text_dim=16, d_width=8, attention=())).eval()
    b = 4
    tensors = [torch.randn(b, 3, 32, 32), torch.randn(b, 16), torch.randn(b, 3, 32, 32), torch.randn(b, 16), torch.randn(b, 16)]
    return d, tensors


def test_lazy_ma_gp_runs_every_nth_step_n_times_as_strong() -> None:
    d, (real, text, fake, text_fake, text_mis) = _inputs()
    every1 = loss_params(ma_gp_weight=2.0, ma_gp_every=1)
    lazy = loss_params(ma_gp_weight=2.0, ma_gp_every=4)
    _, eager_stats = discriminator_loss(d, real, fake, DTexts(text, text_fake, text_mis), every1, step=1)
    loss_skip, skip_stats = discriminator_loss(d, real, fake, DTexts(text, text_fake, text_mis), lazy, step=1)
    loss_on, on_stats = discriminator_loss(d, real, fake, DTexts(text, text_fake, text_mis), lazy, step=8)
    assert eager_stats["ma_gp"] > 0
    assert skip_stats["ma_gp"] == 0                                   # skipped: no double backward
    assert torch.allclose(on_stats["ma_gp"], 4 * eager_stats["ma_gp"])  # applied: 4x as strong
    assert torch.allclose(loss_on - loss_skip, on_stats["ma_gp"])


def test_rank_texts_matches_the_full_score_up_to_the_image_term() -> None:
    torch.manual_seed(0)
    image, texts = torch.randn(3, 3, 32, 32), torch.randn(3, 5, 16)
    for cond in ("projection", "concat"):
        d = Discriminator(GANConfig(text_dim=16, d_width=8, attention=(), d_conditioning=cond)).eval()
        ranked = d.rank_texts(image, texts)  # (3, 5)
        full = torch.stack([d(image, texts[:, k]) for k in range(5)], dim=1)  # (3, 5)
        # Same order of candidates per image: equal up to a per-image constant (psi for projection).
        diff = full - ranked
        assert torch.allclose(diff, diff[:, :1].expand_as(diff), atol=1e-4), cond


def test_shared_real_features_give_the_three_separate_forwards() -> None:
    """The D loss scores each real image against its caption and a wrong one from one feature
    pass (image_index); the loss and every gradient must equal three separate forwards."""
    for cond in ("projection", "concat"):
        torch.manual_seed(0)
        d = Discriminator(GANConfig(resolution=32, text_dim=16, d_width=8, attention=(), d_conditioning=cond)).eval()
        real, text, fake, text_fake, text_mis = (torch.randn(4, 3, 32, 32), torch.randn(4, 16),
                                                 torch.randn(4, 3, 32, 32), torch.randn(4, 16), torch.randn(4, 16))
        cfg = loss_params(ma_gp_weight=0.0, mismatch_weight=0.5)
        loss, stats = discriminator_loss(d, real, fake, DTexts(text, text_fake, text_mis), cfg)
        shared = torch.autograd.grad(loss, list(d.parameters()))
        out_real, out_fake, out_mis = d(real, text), d(fake, text_fake), d(real, text_mis)
        separate = (1 - out_real).relu().mean() + ((1 + out_fake).relu().mean() + 0.5 * (1 + out_mis).relu().mean()) / 1.5
        assert torch.allclose(loss, separate, atol=1e-5), cond
        assert torch.allclose(stats["loss_d_mismatch"], (1 + out_mis).relu().mean(), atol=1e-5), cond
        for a, b in zip(shared, torch.autograd.grad(separate, list(d.parameters()))):
            assert torch.allclose(a, b, atol=1e-5), cond


def test_hard_pool_in_the_d_forward_equals_ranking_in_a_separate_pass() -> None:
    """Hard negatives are ranked by the D step's own forward (the max of the pool's scores on
    the near-miss rows); loss and gradients must equal ranking first (rank_texts, argmax) and
    then scoring the chosen caption, which cost one more pass over the real images."""
    for cond in ("projection", "concat"):
        torch.manual_seed(0)
        d = Discriminator(GANConfig(resolution=32, text_dim=16, d_width=8, attention=(), d_conditioning=cond)).eval()
        real, text, fake, text_fake, text_mis = (torch.randn(4, 3, 32, 32), torch.randn(4, 16),
                                                 torch.randn(4, 3, 32, 32), torch.randn(4, 16), torch.randn(4, 16))
        pool, near = torch.randn(4, 5, 16), torch.tensor([True, False, True, True])  # (B, P, D), (B,)
        cfg = loss_params(ma_gp_weight=0.0, mismatch_weight=0.5)
        loss, stats = discriminator_loss(d, real, fake, DTexts(text, text_fake, text_mis, hard_pool=pool, hard=near), cfg)
        grads = torch.autograd.grad(loss, list(d.parameters()))
        with torch.no_grad():
            best = d.rank_texts(real, pool).argmax(dim=1)  # (B,)
        chosen = torch.where(near[:, None], pool[torch.arange(4), best], text_mis)
        ref, ref_stats = discriminator_loss(d, real, fake, DTexts(text, text_fake, chosen), cfg)
        assert torch.allclose(loss, ref, atol=1e-5), cond
        assert torch.allclose(stats["loss_d_mismatch"], ref_stats["loss_d_mismatch"], atol=1e-5), cond
        for a, b in zip(grads, torch.autograd.grad(ref, list(d.parameters()))):
            assert torch.allclose(a, b, atol=1e-5), cond
        # The pool matters: with every row a near miss, the hardest candidate raises the loss.
        easy, _ = discriminator_loss(d, real, fake, DTexts(text, text_fake, pool[:, 0]), cfg)
        every_row = torch.ones(4, dtype=torch.bool)
        hard, _ = discriminator_loss(d, real, fake, DTexts(text, text_fake, pool[:, 0], hard_pool=pool, hard=every_row), cfg)
        assert hard > easy, cond


def test_contrastive_term_is_the_cross_entropy_of_separate_forwards() -> None:
    """The K candidates ride in the same D call (image_index); D's loss gains w * CE of the true
    caption against them, G's the same on its fakes, and invalid candidates are ignored."""
    torch.manual_seed(0)
    d = Discriminator(GANConfig(resolution=32, text_dim=16, d_width=8, attention=())).eval()
    real, text, fake, text_fake, text_mis = (torch.randn(4, 3, 32, 32), torch.randn(4, 16),
                                             torch.randn(4, 3, 32, 32), torch.randn(4, 16), torch.randn(4, 16))
    cands = torch.randn(4, 3, 16)  # (B, K, D)
    valid = torch.tensor([[True] * 3, [True, False, True], [False] * 3, [True] * 3])
    plain = loss_params(ma_gp_weight=0.0)
    with_ce = loss_params(ma_gp_weight=0.0, contrastive_d=0.5, contrastive_g=0.5, contrastive_candidates=3)

    def ce(image: torch.Tensor, true: torch.Tensor) -> torch.Tensor:  # by hand, one forward per candidate
        logits = torch.stack([d(image, true)] + [d(image, cands[:, k]) for k in range(3)], dim=1)  # (B, 1+K)
        logits[:, 1:] = logits[:, 1:].masked_fill(~valid, float("-inf"))
        return torch.nn.functional.cross_entropy(logits, torch.zeros(4, dtype=torch.long))

    base, _ = discriminator_loss(d, real, fake, DTexts(text, text_fake, text_mis), plain)
    loss, stats = discriminator_loss(d, real, fake, DTexts(text, text_fake, text_mis, cands=Candidates(cands, valid)), with_ce)
    expected = ce(real, text)
    assert torch.allclose(stats["loss_d_contrastive"], expected, atol=1e-5)
    assert torch.allclose(loss, base + 0.5 * expected, atol=1e-5)
    # a row without candidates adds nothing: softmax over its true caption alone, log(1) = 0
    from t2i.train.losses import candidate_ce

    none = torch.zeros(2, 3, dtype=torch.bool)
    assert candidate_ce(torch.tensor([0.3, -2.0]), torch.randn(2, 3), none) == 0
    assert candidate_ce(torch.tensor([0.0]), torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool)).item() == \
        pytest.approx(math.log(4))
    z = torch.randn(4, 8)
    g_base, _ = generator_loss(d, fake, text_fake, z, plain)
    g_loss, g_stats = generator_loss(d, fake, text_fake, z, with_ce, Candidates(cands, valid))
    assert torch.allclose(g_stats["loss_g_contrastive"], ce(fake, text_fake), atol=1e-5)
    assert torch.allclose(g_loss, g_base + 0.5 * ce(fake, text_fake), atol=1e-5)
    # each network's weight acts on its own loss only
    d_only = loss_params(ma_gp_weight=0.0, contrastive_d=0.5)
    g_same, g_same_stats = generator_loss(d, fake, text_fake, z, d_only, Candidates(cands, valid))
    assert torch.equal(g_same, g_base) and "loss_g_contrastive" not in g_same_stats
    d_with, _ = discriminator_loss(d, real, fake, DTexts(text, text_fake, text_mis, cands=Candidates(cands, valid)), d_only)
    assert torch.allclose(d_with, loss, atol=1e-6)
    # weight 0: the candidates are not even scored
    same, same_stats = discriminator_loss(d, real, fake, DTexts(text, text_fake, text_mis, cands=Candidates(cands, valid)), plain)
    assert torch.equal(same, base) and "loss_d_contrastive" not in same_stats


def test_extra_true_captions_add_their_own_cross_entropy_rows() -> None:
    """`extra_true`: more captions of the same real images, each against its own candidates, in
    the same D call; the term is the mean over every existing (image, caption) row."""
    torch.manual_seed(0)
    d = Discriminator(GANConfig(resolution=32, text_dim=16, d_width=8, attention=())).eval()
    real, text, fake, text_fake, text_mis = (torch.randn(4, 3, 32, 32), torch.randn(4, 16),
                                             torch.randn(4, 3, 32, 32), torch.randn(4, 16), torch.randn(4, 16))
    extra_text, image_of = torch.randn(3, 16), torch.tensor([0, 2, 2])  # (E, D), (E,)
    exists = torch.tensor([True, True, False])  # the last slot is empty: it must not count
    cands, valid = torch.randn(7, 2, 16), torch.ones(7, 2, dtype=torch.bool)  # (B + E, K, D)
    cfg = loss_params(ma_gp_weight=0.0, contrastive_d=1.0, contrastive_candidates=2)
    base, _ = discriminator_loss(d, real, fake, DTexts(text, text_fake, text_mis), loss_params(ma_gp_weight=0.0))
    texts = DTexts(text, text_fake, text_mis, cands=Candidates(cands, valid), extra=ExtraTrue(extra_text, image_of, exists))
    loss, stats = discriminator_loss(d, real, fake, texts, cfg)
    images = torch.cat([real, real[image_of]])  # (B + E, 3, R, R)
    trues = torch.cat([text, extra_text])
    logits = torch.stack([d(images, trues)] + [d(images, cands[:, k]) for k in range(2)], dim=1)  # (B + E, 3)
    per_row = torch.nn.functional.cross_entropy(logits, torch.zeros(7, dtype=torch.long), reduction="none")
    expected = per_row[:6].mean()  # rows 0-3 (the sampled captions) and the two extra that exist
    assert torch.allclose(stats["loss_d_contrastive"], expected, atol=1e-5)
    assert torch.allclose(loss, base + expected, atol=1e-5)
    assert not torch.allclose(expected, per_row[:4].mean())  # the extra rows do change the term


def test_distinct_candidates_give_the_word_scored_losses_and_gradients_of_every_drawn_slot() -> None:
    """Where D scores words against regions, each row's distinct candidates are scored once with
    log(draws) on their logit, and only the valid slots (`CandidateRows` with counts): D's and G's
    contrastive terms and D's gradients are those of scoring every drawn slot."""
    torch.manual_seed(0)
    d = Discriminator(GANConfig(resolution=32, text_dim=16, d_width=8, attention=(), token_dim=12,
                                d_word_match=True)).eval()
    normed, table = torch.randn(10, 16), torch.randn(10, 6, 12)  # 10 pool captions: (P, D), (P, T, k)
    mask = torch.rand(10, 6) > 0.3
    mask[:, 0] = True
    true_rows, mis_rows, extra_rows = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7]), torch.tensor([4, 5])
    extra = ExtraTrue(normed[extra_rows], torch.tensor([0, 2]), torch.tensor([True, True]))
    cand = torch.tensor([[5, 5, 2, 5, 2, 0], [3, 3, 3, 3, 3, 3], [1, 4, 7, 7, 4, 1], [0] * 6,
                         [8, 8, 9, 9, 8, 9], [6, 6, 6, 6, 6, 6]])  # (B + E, K) as drawn, with repeats
    valid = torch.tensor([[True] * 6, [True] * 5 + [False], [True] * 6, [False] * 6, [True] * 6, [True] * 6])
    real, fake, z = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32), torch.randn(4, 8)
    cfg = loss_params(contrastive_d=1.0, contrastive_g=0.5, contrastive_candidates=6)

    def d_term(c: CandidateRows) -> tuple[torch.Tensor, list[torch.Tensor]]:
        d.zero_grad()
        texts = DTexts(normed[true_rows], normed[true_rows], normed[mis_rows], cands=c.text(normed), extra=extra)
        texts.words = Words(table, mask, rows={"true": true_rows, "fake": true_rows, "mismatch": mis_rows,
                                               "extra": extra_rows, "cands": c.scored()})
        loss, stats = discriminator_loss(d, real, fake, texts, cfg)
        loss.backward()
        return stats["loss_d_contrastive"], [p.grad.clone() for p in d.parameters() if p.grad is not None]

    def g_term(c: CandidateRows) -> torch.Tensor:
        words = Words(table, mask, rows={"text": true_rows, "cands": c.scored()})
        with torch.no_grad():
            return generator_loss(d, fake, normed[true_rows], z, cfg, c.text(normed), words)[1]["loss_g_contrastive"]

    every, distinct = CandidateRows.of(cand, valid, False), CandidateRows.of(cand, valid, True)
    assert distinct.scored().tolist() == [0, 2, 5, 3, 1, 4, 7, 8, 9, 6]  # 10 captions scored, not 36
    ce_every, grad_every = d_term(every)
    ce_distinct, grad_distinct = d_term(distinct)
    assert torch.allclose(ce_every, ce_distinct, atol=1e-5)
    assert len(grad_every) == len(grad_distinct) > 0
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grad_every, grad_distinct))
    g_every, g_distinct = CandidateRows.of(cand[:4], valid[:4], False), CandidateRows.of(cand[:4], valid[:4], True)
    assert torch.allclose(g_term(g_every), g_term(g_distinct), atol=1e-5)
    unweighted = CandidateRows(distinct.rows, distinct.valid)  # the same captions, each standing once
    assert not torch.allclose(ce_every, d_term(unweighted)[0], atol=1e-3)  # the draws matter


def test_mode_seeking_pairs_repeat_the_first_captions_at_the_end_of_the_batch() -> None:
    """`diversity_pairs`: how many fakes repeat a caption with new noise, and which rows the
    mode-seeking term compares (row i against row B - P + i)."""
    quarter = loss_params(ma_gp_weight=0.0, diversity_weight=0.2, diversity_pairs=0.25)
    assert mode_seeking_pairs(64, quarter) == 16
    assert mode_seeking_pairs(64, loss_params(diversity_weight=0.2)) == 32  # default: the half
    assert mode_seeking_pairs(64, loss_params(diversity_weight=0.0)) == 0
    assert mode_seeking_pairs(2, quarter) == 0
    torch.manual_seed(0)
    d = Discriminator(GANConfig(resolution=32, text_dim=16, d_width=8, attention=())).eval()
    fake, text, z = torch.randn(8, 3, 32, 32), torch.randn(8, 16), torch.randn(8, 4)
    _, stats = generator_loss(d, fake, text, z, quarter)
    expected = (fake[:2] - fake[6:]).abs().mean() / (z[:2] - z[6:]).abs().mean()
    assert torch.allclose(stats["diversity"], expected)
    same = fake.clone()
    same[6:] = same[:2]  # the two noises of each pair give one image: the term is what dominates
    loss_same, _ = generator_loss(d, same, text, z, quarter)
    loss_apart, _ = generator_loss(d, fake, text, z, quarter)
    assert loss_same > loss_apart + 1000
