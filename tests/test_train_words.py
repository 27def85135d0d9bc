"""Training with word features: token states reach G and D, the swaps come from the embed stage,
negatives exist for any caption set, and a sentence-only encoder still trains the old model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from t2i.config import TrainRuntimeParams
from t2i.models import Generator, load_generator
from t2i.models.token_pca import TokenPCA
from t2i.train import load_train_data, train
from t2i.train.checkpoint import load_checkpoint
from t2i.train.loop import model_config
from t2i.train.nearest import nearest_partners, union_csr
from test_train_fixtures import make_dataset, make_token_dataset, outputs_in, small_params

WORDS = dict(word_attention=[8, 16], d_word_match=True, token_pca=8)


def test_token_data_loads_swaps_as_pool_rows_and_gathers_states(tmp_path: Path) -> None:
    prepared, emb = make_token_dataset(tmp_path)
    data = load_train_data(prepared, emb)
    m = len(data.text)
    partner = data.relations.partner
    has_swap = partner >= m
    assert has_swap.float().mean() == 0.5  # every caption naming a stem, none of the others
    swap = np.load(emb / "swap" / "embeddings.npy")
    train_rows = np.flatnonzero(data.table["split"].to_numpy() == "train")
    i = int(torch.nonzero(has_swap)[0])
    assert torch.equal(data.pool_text[partner[i]], torch.from_numpy(swap[train_rows[i]]))
    assert data.tokens is not None and len(data.tokens) == len(data.pool_text)
    tok, mask = data.tokens.gather(torch.tensor([i, int(partner[i])]))
    n_words = len(data.table["caption"].iloc[train_rows[i]].split())
    assert mask.sum(1).tolist() == [n_words, n_words]  # a swap has the same words ...
    assert not torch.equal(tok[0], tok[1])              # ... in another order
    assert (tok[~mask] == 0).all()


def test_words_on_train_move_the_loss_round_trip_and_run_without_tokens(tmp_path: Path) -> None:
    data = load_train_data(*make_token_dataset(tmp_path))
    params = small_params(steps=4, checkpoint_every=2, model=WORDS)
    cfg = model_config(params, data)
    assert cfg.word_attention == (8, 16) and cfg.d_word_match and cfg.token_pca == 8 and cfg.token_dim == 32
    out = outputs_in(tmp_path / "run")
    # One fixed thread count: the default follows the free cores, and a count that changes between
    # the straight and the resumed run changes the float summation order.
    one = TrainRuntimeParams(threads=1)
    straight = train(params, data, out, runtime=one)
    assert straight.state is not None
    g = straight.state.g_raw
    assert g.token_norm is not None and float(g.token_norm.basis.abs().sum()) > 0
    first, last = straight.history[0], straight.history[-1]
    assert first["loss_d"] != last["loss_d"] and first["loss_g"] != last["loss_g"]
    # The word modules trained: G's gates opened and D's word gain moved from its initial 4.
    assert any(float(m.gate.detach().abs()) > 0 for m in g.word_attn.values())
    assert float(straight.state.d_raw.word_regions_head.gain.detach()) != 4.0
    # A resumed run reproduces the straight one (the word table is rebuilt from the restored PCA).
    resumed_out = outputs_in(tmp_path / "resumed")
    train(params, data, resumed_out, stop_after=2, runtime=one)
    resumed = train(params, data, resumed_out, runtime=one)
    assert resumed.resumed_from == 2
    assert all(resumed.history[-1][k] == v for k, v in straight.history[-1].items() if k != "images_per_s")
    ckpt = load_checkpoint(out.checkpoints)
    assert ckpt is not None and ckpt.step == 4
    # The exported generator reloads with its PCA and still runs on a sentence alone.
    gen, _ = load_generator(out.models)
    assert isinstance(gen, Generator) and torch.equal(gen.token_norm.basis, straight.state.ema.token_norm.basis)
    z, text = torch.randn(2, gen.config.z_dim), data.text[:2]
    tok, mask = data.tokens.gather(torch.arange(2))
    with torch.no_grad():
        with_words, without = gen(z, text, tok, mask), gen(z, text)
    assert with_words.shape == without.shape == (2, 3, 32, 32)
    assert torch.isfinite(without).all() and not torch.equal(with_words, without)


def test_sentence_only_encoder_turns_the_word_modules_off(tmp_path: Path) -> None:
    data = load_train_data(*make_dataset(tmp_path))  # encoder.json without token_states
    assert data.tokens is None
    cfg = model_config(small_params(model=WORDS), data)
    assert cfg.word_attention == () and not cfg.d_word_match and cfg.token_pca == 0
    assert not Generator(cfg).word_attn


def test_nearest_partners_are_other_images_other_texts_nearest_first() -> None:
    text = np.array([[1, 0], [0.9, 0.1], [1, 0], [0.5, 0.5], [0, 1]], np.float32)
    captions = ["a", "b", "a", "c", "d"]
    image = np.array([0, 1, 2, 3, 0])
    offsets, rows = nearest_partners(text, captions, image, k=2)
    lists = [rows[offsets[i]:offsets[i + 1]].tolist() for i in range(5)]
    assert lists[0] == [1, 3]  # not 2 (same text), not 4 (same image)
    assert lists[1][0] in (0, 2)
    assert 4 not in lists[0] and 0 not in lists[4]
    o, r = union_csr((np.array([0, 1, 1, 1, 1, 1]), np.array([3])), (offsets, rows))
    assert r[o[0]:o[1]].tolist() == [3, 1]  # the first list's rows first, no repeats


def test_token_pca_keeps_the_strong_directions_and_centres() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 16, generator=g) * torch.linspace(0.1, 3.0, 16) + 5.0  # (N, 16)
    pca = TokenPCA(16, 4)
    pca.fit(x)
    y = pca(x)  # (N, 4)
    assert y.shape == (2000, 4) and float(y.mean(0).abs().max()) < 1e-3
    var = y.var(0)
    assert bool((var[:-1] >= var[1:]).all()) and abs(float(var.mean()) - 1.0) < 0.05
    assert float(pca.basis[-4:].abs().sum()) > 10 * float(pca.basis[:4].abs().sum())  # the high-variance dims
