"""The caption code: the matcher's text side, pooled from the words, read frozen by G and D."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from t2i.config import MatcherParams
from t2i.models.caption_code import CODE_DIM, CaptionCode, TokenPool
from t2i.models.io import load_generator
from t2i.train import load_train_data, train
from t2i.train.matcher import fit_matcher

from test_train_fixtures import make_token_dataset, outputs_in, small_params

CPU = torch.device("cpu")


def test_token_pool_ignores_padding_and_reads_word_order_only_through_the_states() -> None:
    torch.manual_seed(0)
    pool = TokenPool(8, 16).eval()
    tokens = torch.randn(3, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    out = pool(tokens, mask)  # (3, 16)
    noisy = tokens.clone()
    noisy[~mask] = torch.randn(int((~mask).sum()), 8) * 100  # garbage where the mask says padding
    assert torch.allclose(pool(noisy, mask), out, atol=1e-5)
    perm = torch.tensor([2, 0, 1, 3, 4])  # the same three real tokens in another order
    assert torch.allclose(pool(tokens[:, perm], mask[:, perm])[0], out[0], atol=1e-5)
    assert not torch.allclose(out[0], out[1])
    # No token at all: the pooled values are zero and the code is the sentence projection.
    code = CaptionCode(12, 8).eval()
    text = torch.randn(2, 12)
    none = code(text, torch.randn(2, 5, 8), torch.zeros(2, 5, dtype=torch.bool))
    assert torch.allclose(none, code.text_proj(code.text_norm(text)) + code.pool.out.bias, atol=1e-5)


def test_training_reads_the_frozen_matcher_code_and_keeps_it_through_save_and_load(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    data = load_train_data(*make_token_dataset(tmp_path))
    params = small_params(steps=4, checkpoint_every=2, model={"caption_code": True, "word_attention": [],
                                                              "d_word_match": False})
    with pytest.raises(ValueError, match="caption_code needs the matcher"):
        train(params, data, outputs_in(tmp_path / "none"))
    a = fit_matcher(data, MatcherParams(steps=20, seed=0, candidates=4, word_orders=0, batch_size=16), CPU)
    b = fit_matcher(data, MatcherParams(steps=2, seed=1, candidates=4, word_orders=0, batch_size=16), CPU)
    out = outputs_in(tmp_path / "run")
    part = train(params, data, out, stop_after=2, matcher=a)
    assert len(part.history) == 2
    # Another matcher is another condition: not resumed against it.
    assert train(params, data, out, stop_after=2, matcher=b).resumed_from == 0
    train(params, data, out, matcher=a)
    g, _ = load_generator(out.models)
    assert g.config.caption_code and g.config.code_token_dim == data.token_dim
    code_a = a.caption.state_dict()
    for key, value in g.caption_code.state_dict().items():  # frozen through training: the matcher's own
        assert torch.equal(value, code_a[key]), key
    batch = data.batch(torch.arange(6), CPU, channels_last=False)
    cond = g.condition(batch.text, batch.tokens, batch.token_mask)  # (6, D + CODE_DIM)
    assert cond.shape == (6, data.text_dim + CODE_DIM)
    # The code reads the words: other tokens under the same sentence vectors give another condition.
    shuffled = g.condition(batch.text, batch.tokens.roll(1, 0), batch.token_mask.roll(1, 0))
    assert torch.equal(shuffled[:, : data.text_dim], cond[:, : data.text_dim])
    assert not torch.allclose(shuffled[:, data.text_dim:], cond[:, data.text_dim:])
    # Whitened on the training captions: the code half has mean ~0 and mean square ~1 per dim.
    rows = torch.arange(len(data.text))
    codes = g.condition(data.text, *data.tokens.gather(rows))[:, data.text_dim:]
    assert codes.mean(0).abs().max() < 0.2 and 0.5 < float(codes.pow(2).mean()) < 1.5
