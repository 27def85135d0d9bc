"""The matcher: fitting on real pairs, saving/loading, and its term in G's loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from t2i.config import MatcherParams
from t2i.models.matcher import Matcher
from t2i.train import load_train_data, train
from t2i.train.data import TrainData
from t2i.train.losses import match_ce
from t2i.train.matcher import distinct_captions, fit_matcher
from t2i.train.negatives import candidate_rows, distinct_candidates

from test_train_fixtures import make_dataset, outputs_in, small_params

CPU = torch.device("cpu")


def _wins(matcher: Matcher, data: TrainData) -> float:
    """Share of train captions its image scores above every one of its one-word misses."""
    rows = torch.arange(len(data.text))
    cand, valid = candidate_rows(data.relations, rows, 8, 0, torch.Generator().manual_seed(1))  # (M, 8)
    batch = data.batch(rows, CPU, channels_last=False)
    real, text = batch.images, batch.text
    with torch.no_grad():
        true = matcher(real, text)  # (M,)
        other = matcher(real, data.text[cand.flatten()], rows.repeat_interleave(cand.shape[1])).view_as(cand)
    has = valid.any(1)
    return float(((true[:, None] > other) | ~valid).all(1)[has].float().mean())


def test_fitting_teaches_the_matcher_its_captions_over_their_one_word_misses(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    data = load_train_data(*make_dataset(tmp_path))
    torch.manual_seed(0)
    untrained = Matcher(data.text_dim).eval()
    untrained.caption.text_norm.fit(data.text)
    fitted = fit_matcher(data, MatcherParams(steps=150, seed=0, candidates=8, word_orders=2, batch_size=16), CPU)
    before, after = _wins(untrained, data), _wins(fitted, data)
    assert after > 0.8 and after > before + 0.3, (before, after)
    assert not fitted.training and not any(p.requires_grad for p in fitted.parameters())


def test_saved_matcher_loads_with_the_same_scores_and_a_missing_one_names_the_stage(tmp_path: Path) -> None:
    data = load_train_data(*make_dataset(tmp_path))
    m = fit_matcher(data, MatcherParams(steps=3, seed=0, batch_size=8), CPU)
    m.save(tmp_path / "matcher")
    back = Matcher.load(tmp_path / "matcher")
    batch = data.batch(torch.arange(6), CPU, channels_last=False)
    real, text = batch.images, batch.text
    with torch.no_grad():
        assert torch.equal(m(real, text), back(real, text))
    with pytest.raises(FileNotFoundError, match="dvc repro matcher"):
        Matcher.load(tmp_path / "nowhere")


def test_match_ce_is_the_cross_entropy_of_the_true_caption_and_reaches_the_image() -> None:
    torch.manual_seed(0)
    m = Matcher(16).eval().requires_grad_(False)
    image = torch.rand(3, 3, 32, 32, requires_grad=True)
    emb = m.embed_text(torch.randn(3 + 3 * 4, 16))
    true, cand = emb[:3], emb[3:].view(3, 4, -1)
    valid = torch.tensor([[True] * 4, [True, True, False, False], [False] * 4])
    ce = match_ce(m, image, true, cand, valid)
    with torch.no_grad():
        f = m.embed_image(image)
        logits = torch.cat([(f * true).sum(1, keepdim=True), (cand * f[:, None]).sum(-1)], 1) / 16.0
        want = [torch.nn.functional.cross_entropy(logits[i : i + 1, : 1 + n], torch.tensor([0])) for i, n in enumerate((4, 2, 0))]
    assert torch.allclose(ce, torch.stack(want).mean(), atol=1e-5)
    ce.backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_in_batch_negatives_are_the_other_images_other_captions_and_join_the_softmax() -> None:
    """`batch_negatives`: image i also scores the batch's other true captions, except those of its
    own image and those with its caption's exact text (which no scorer can tell apart)."""
    rows = torch.tensor([0, 1, 2, 3])
    image_index = torch.tensor([0, 0, 1, 2])  # rows 0 and 1: one image
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 1.0]])  # rows 2 and 3: one text
    fair = distinct_captions(rows, image_index, text)
    assert fair.tolist() == [[False, False, True, True], [False, False, True, True],
                             [True, True, False, False], [True, True, False, False]]

    torch.manual_seed(0)
    m = Matcher(16).eval().requires_grad_(False)
    image = torch.rand(4, 3, 32, 32)
    emb = m.embed_text(torch.randn(4 + 4 * 2, 16))
    true, cand = emb[:4], emb[4:].view(4, 2, -1)
    valid = torch.ones(4, 2, dtype=torch.bool)
    ce = match_ce(m, image, true, cand, valid, batch_valid=fair)
    with torch.no_grad():
        f = m.embed_image(image)
        s_true, s_cand, s_batch = (f * true).sum(1), (cand * f[:, None]).sum(-1), f @ true.T  # (4,), (4, 2), (4, 4)
        want = torch.stack([torch.logsumexp(torch.cat([s_true[i:i + 1], s_cand[i], s_batch[i][fair[i]]]) / 16.0, 0)
                            - s_true[i] / 16.0 for i in range(4)]).mean()
    assert torch.allclose(ce, want, atol=1e-5)
    assert ce > match_ce(m, image, true, cand, valid)  # more wrong captions in the softmax


def test_distinct_candidates_with_their_counts_give_the_loss_and_gradient_of_every_draw() -> None:
    """Drawn with replacement, a caption's few one-word misses fill K slots many times over, and a
    caption without any fills them with empty slots: scoring each distinct candidate once with
    log(count) on its logit is the same cross-entropy, words and in-batch negatives included."""
    cand = torch.tensor([[5, 5, 2, 5, 2, 0], [3, 3, 3, 3, 3, 3], [1, 4, 7, 7, 4, 1], [0, 0, 0, 0, 0, 0]])
    valid = torch.tensor([[True] * 6, [True] * 5 + [False], [True] * 6, [False] * 6])
    rows, count = distinct_candidates(cand, valid)  # (4, 3)
    assert rows.tolist() == [[0, 2, 5], [3, 0, 0], [1, 4, 7], [0, 0, 0]]
    assert count.tolist() == [[1, 2, 3], [5, 0, 0], [2, 2, 2], [0, 0, 0]]

    torch.manual_seed(0)
    m = Matcher(16, token_dim=12)
    m.caption.token_norm.fit(torch.randn(200, 12))
    text, tokens = torch.randn(8, 16), m.reduce_tokens(torch.randn(8, 5, 12))  # 8 captions
    mask = torch.rand(8, 5) > 0.3
    mask[:, 0] = True
    image, true_rows = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    fair = ~torch.eye(4, dtype=torch.bool)

    def loss(c: torch.Tensor, v: torch.Tensor, n: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        m.zero_grad()
        idx = torch.cat([true_rows, c.flatten()])
        emb = m.embed_text(text[idx], tokens[idx], mask[idx])
        ce = match_ce(m, image, emb[:4], emb[4:].view(4, c.shape[1], -1), v, (tokens[idx], mask[idx]), fair, n)
        ce.backward()
        return ce.detach(), [p.grad.clone() for p in m.parameters() if p.grad is not None]

    every, every_grad = loss(cand, valid, None)
    distinct, distinct_grad = loss(rows, count > 0, count)
    assert torch.allclose(every, distinct, atol=1e-5)
    assert len(every_grad) == len(distinct_grad)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(every_grad, distinct_grad))
    assert not torch.allclose(every, loss(rows, count > 0, None)[0], atol=1e-3)  # the counts matter


def test_word_score_matrix_holds_each_images_own_caption_on_its_diagonal() -> None:
    torch.manual_seed(0)
    m = Matcher(16, token_dim=12).eval().requires_grad_(False)
    m.caption.token_norm.fit(torch.randn(200, 12))
    _, regions = m.embed_image_regions(torch.rand(3, 3, 32, 32))
    tokens = m.reduce_tokens(torch.randn(3, 5, 12))
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [True] + [False] * 4])
    matrix = m.word_score_matrix(regions, tokens, mask)  # (3, 3)
    assert matrix.shape == (3, 3)
    assert torch.allclose(matrix.diagonal(), m.word_score(regions, tokens, mask), atol=1e-5)
    assert torch.allclose(matrix[0, 1], m.word_score(regions[:1], tokens[1:2], mask[1:2])[0], atol=1e-5)


def test_training_with_the_matcher_logs_its_term_and_does_not_resume_against_another(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = load_train_data(*make_dataset(tmp_path))
    with pytest.raises(ValueError, match="matcher_weight"):
        train(small_params(steps=2, loss={"matcher_weight": 1.0}), data, outputs_in(tmp_path / "none"))
    a = fit_matcher(data, MatcherParams(steps=2, seed=0, batch_size=8), CPU)
    b = fit_matcher(data, MatcherParams(steps=2, seed=1, batch_size=8), CPU)
    part = train(small_params(steps=4, loss={"matcher_weight": 1.0}), data, outputs_in(tmp_path / "run"), stop_after=2, matcher=a)
    terms = [h["loss_g_matcher"] for h in part.history]
    assert len(terms) == 2 and all(t > 0 for t in terms)
    other = train(small_params(steps=4, loss={"matcher_weight": 1.0}), data, outputs_in(tmp_path / "run"), stop_after=2, matcher=b)
    assert other.resumed_from == 0 and "starting fresh" in capsys.readouterr().out
    same = train(small_params(steps=4, loss={"matcher_weight": 1.0}), data, outputs_in(tmp_path / "run"), matcher=b)
    assert same.resumed_from == 2


def _swap_scores(matcher: Matcher, data: TrainData) -> tuple[torch.Tensor, torch.Tensor]:
    """Word scores of the train captions with an embedded swap, and of their swaps, on their images."""
    rows = torch.nonzero(data.relations.partner >= len(data.text)).flatten()
    partner = data.relations.partner[rows]
    real = data.batch(rows, CPU, channels_last=False).images
    emb = matcher.embed_text(data.pool_text[torch.cat([rows, partner])])
    n = len(rows)
    assert emb.shape[0] == 2 * n
    with torch.no_grad():
        tok, mask = data.tokens.gather(torch.cat([rows, partner]))
        _, regions = matcher.embed_image_regions(real)
        index = torch.cat([torch.arange(n), torch.arange(n)])
        s = matcher.word_score(regions, matcher.reduce_tokens(tok), mask, index)  # (2n,)
    return s[:n], s[n:]


def test_matcher_with_token_states_scores_words_and_round_trips(tmp_path: Path) -> None:
    """Token data: the matcher gains the word-region score, which fitting trains and which tells a
    caption from its swap (same words, other order); it saves and loads, and G's loss runs through it.
    (The fixture's images are noise, so how well it learns is not asked here.)"""
    from test_train_fixtures import make_token_dataset

    torch.set_num_threads(1)
    data = load_train_data(*make_token_dataset(tmp_path))
    m = fit_matcher(data, MatcherParams(steps=60, seed=0, candidates=4, word_orders=0, batch_size=16), CPU)
    assert m.uses_tokens and float(m.caption.token_norm.basis.abs().sum()) > 0
    assert float(m.word_gain) != 4.0  # the word score reached the fitting loss
    true, swap = _swap_scores(m, data)
    assert not torch.allclose(true, swap)
    m.save(tmp_path / "data" / "matcher")
    back = Matcher.load(tmp_path / "data" / "matcher")
    assert back.uses_tokens and torch.equal(back.word_gain, m.word_gain)
    params = small_params(steps=2, checkpoint_every=2, loss={"matcher_weight": 1.0},
                          model={"word_attention": [8], "d_word_match": True, "token_pca": 8})
    result = train(params, data, outputs_in(tmp_path / "run"), matcher=back)
    assert all("loss_g_matcher" in row and row["loss_g_matcher"] > 0 for row in result.history)
