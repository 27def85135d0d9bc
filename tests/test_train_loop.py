"""A few real training steps at 32 px: losses move, checkpoints round-trip exactly, resume, NaN."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import numpy as np
import torch

from t2i.train import NonFiniteLossError, load_train_data, train
from t2i.train.checkpoint import load_checkpoint
from t2i.config import LossParams, TrainRuntimeParams
from t2i.train.data import ShardedSampler
from t2i.train.negatives import (bag_of_words, candidate_rows, draw_negatives, hard_mismatch, image_captions,
                                 near_miss_partners, swap_partners, word_order_partners)
from test_train_fixtures import make_dataset, outputs_in, small_params


def test_swap_partners_pairs_word_order_swaps_only() -> None:
    caps = ["a red flower with a blue stem", "a blue flower with a red stem", "a red flower", "A red flower"]
    assert swap_partners(caps).tolist() == [1, 0, -1, -1]


def test_near_miss_partners_differ_in_one_word_from_other_images() -> None:
    caps = [
        "the petals are red, the center is yellow",   # 0, image 0
        "the petals are red, the center is blue",    # 1, image 1: one word off 0 and 2
        "the petals are red, the center is yellow",   # 2, image 2: same text as 0
        "the petals are red, the centre is yellow",   # 3, image 0: a paraphrase of 0's image
        "a red flower",                               # 4, image 3: nothing one word off
    ]
    offsets, rows = near_miss_partners(caps, np.array([0, 1, 2, 0, 3]))
    near = [sorted(caps[r] for r in rows[offsets[i]:offsets[i + 1]]) for i in range(len(caps))]
    assert near[0] == [caps[1]]            # not 3: same image; not 2: same text
    assert near[1] == [caps[0]]            # one row per distinct text
    assert near[3] == []                   # its only one-word neighbour describes its own image
    assert near[4] == []


def test_wrong_captions_mix_swaps_near_misses_and_others(tmp_path: Path) -> None:
    data = load_train_data(*make_dataset(tmp_path))
    rel, rows = data.relations, torch.arange(len(data.text))

    def mismatched(near_miss: float) -> torch.Tensor:
        cfg = LossParams(near_miss=near_miss, near_miss_pool=1)
        return hard_mismatch(rel, data.text, rows, torch.Generator().manual_seed(0), cfg)

    mis = mismatched(1.0)
    assert mis.shape == data.text.shape
    assert not (mis == data.text).all(dim=1).any()  # never the image's own caption
    is_swap = (mis == data.text[rel.partner.clamp(min=0)]).all(dim=1) & (rel.partner >= 0)
    near_sets = [set(rel.near.rows[rel.near.offsets[i]:rel.near.offsets[i + 1]].tolist()) for i in rows.tolist()]
    is_near = torch.tensor([any(bool((mis[i] == data.text[r]).all()) for r in near_sets[i]) for i in rows.tolist()])
    assert is_swap.any() and is_near.any() and (~is_swap & ~is_near).any()
    off = mismatched(0.0)
    off_near = torch.tensor([any(bool((off[i] == data.text[r]).all()) for r in near_sets[i]) for i in rows.tolist()])
    assert off_near.float().mean() < is_near.float().mean() / 2  # only by chance (a shuffled caption)
    # a huge weight: every row that has a one-word miss gets one.
    has_near = rel.near.count(rows) > 0
    all_near = mismatched(1e6)
    got_near = torch.tensor([any(bool((all_near[i] == data.text[r]).all()) for r in near_sets[i]) for i in rows.tolist()])
    assert has_near.any() and bool(got_near[has_near].all())


def test_hard_near_miss_is_the_candidate_the_ranker_prefers(tmp_path: Path) -> None:
    data = load_train_data(*make_dataset(tmp_path))
    rel, rows = data.relations, torch.arange(len(data.text))
    key = data.text[:, 0]  # a stand-in for D's match score: the first coordinate
    def rank(cands: torch.Tensor) -> torch.Tensor:  # (B, K, D) -> (B, K)
        return cands[..., 0]

    cfg = LossParams(near_miss=1e6, near_miss_pool=64)
    mis = hard_mismatch(rel, data.text, rows, torch.Generator().manual_seed(0), cfg, rank)
    checked = 0
    for i in rows.tolist():
        partners = rel.near.rows[rel.near.offsets[i]:rel.near.offsets[i + 1]]
        if 0 < len(partners) <= 4:  # 64 draws cover every partner (miss chance < 4 * 0.75^64)
            assert torch.equal(mis[i], data.text[partners[key[partners].argmax()]])
            checked += 1
    assert checked > 0
    uniform = hard_mismatch(rel, data.text, rows, torch.Generator().manual_seed(0),
                            cfg)  # no ranker: the first draw, not the best
    assert not torch.equal(uniform, mis)


def test_contrastive_candidates_are_one_word_misses_of_their_row(tmp_path: Path) -> None:
    data = load_train_data(*make_dataset(tmp_path))
    near, rows = data.relations.near, torch.arange(len(data.text))
    cand, valid = near.draw(rows, 6, torch.Generator().manual_seed(0))
    assert cand.shape == valid.shape == (len(rows), 6)
    has_near = near.count(rows) > 0
    assert has_near.any() and torch.equal(valid, has_near[:, None].expand(-1, 6))
    for i in rows[has_near].tolist():
        allowed = set(near.rows[near.offsets[i]:near.offsets[i + 1]].tolist())
        assert set(cand[i].tolist()) <= allowed


def test_word_order_partners_are_every_other_order_of_the_same_words() -> None:
    caps = [
        "the petals are red, the center is blue and the stem is green",   # 0, image 0
        "the petals are green, the center is blue and the stem is red",   # 1, image 1: petal/stem swap of 0
        "the petals are blue, the center is green and the stem is red",   # 2, image 2: a 3-cycle of 0
        "the petals are red, the center is blue and the stem is green",   # 3, image 3: same text as 0
        "the petals are blue, the center is red and the stem is green",   # 4, image 0: 0's own image
        "the petals are red, the center is blue and the stem is pink",    # 5, image 4: other words
    ]
    offsets, rows = word_order_partners(caps, np.array([0, 1, 2, 3, 0, 4]))
    others = [sorted(rows[offsets[i]:offsets[i + 1]].tolist()) for i in range(len(caps))]
    assert others[0] == [1, 2]        # not 3: same text; not 4: same image
    assert others[1] == [0, 2, 4]     # one row per distinct text (0 stands for 3)
    assert others[5] == []


def test_word_order_candidates_follow_the_one_word_misses(tmp_path: Path) -> None:
    data = load_train_data(*make_dataset(tmp_path))
    rel, rows = data.relations, torch.arange(len(data.text))
    cand, valid = rel.near.draw(rows, 4, torch.Generator().manual_seed(0))
    cand6, valid6 = candidate_rows(rel, rows, 4, 2, torch.Generator().manual_seed(0))
    assert cand6.shape == valid6.shape == (len(rows), 6)
    assert torch.equal(cand6[:, :4], cand) and torch.equal(valid6[:, :4], valid)
    count = rel.orders.count(rows)
    assert (count > 0).any() and (count == 0).any()
    assert torch.equal(valid6[:, 4:].sum(1), count.clamp(max=2))
    words = [bag_of_words(c) for c in data.table.query("split == 'train'").caption]
    for i in rows[count > 0].tolist():
        for r in cand6[i, 4:][valid6[i, 4:]].tolist():
            assert words[r] == words[i] and data.image_index[r] != data.image_index[i]
    # The last step's D contrastive loss moves when they join the candidates.
    base = train(small_params(steps=2, loss={"contrastive_word_order": 0}), data, outputs_in(tmp_path / "a"))
    orders = train(small_params(steps=2, loss={"contrastive_word_order": 5}), data, outputs_in(tmp_path / "b"))
    assert base.history[-1]["loss_d_contrastive"] != orders.history[-1]["loss_d_contrastive"]


def test_image_captions_are_the_other_captions_of_the_same_image() -> None:
    offsets, rows = image_captions(np.array([2, 0, 2, 1, 0, 2]))
    others = [rows[offsets[i]:offsets[i + 1]].tolist() for i in range(6)]
    assert others == [[2, 5], [4], [0, 5], [], [1], [0, 2]]


def test_extra_captions_join_the_contrastive_term_of_d_only(tmp_path: Path) -> None:
    data = load_train_data(*make_dataset(tmp_path))
    rows = torch.arange(len(data.text))
    sib, exists = data.relations.siblings.first(rows, 3)
    assert sib.shape == exists.shape == (len(rows), 3)
    assert exists.any() and not exists.all()  # the fixture's images have 1-4 train captions
    for i in rows.tolist():
        for r in sib[i][exists[i]].tolist():
            assert r != i and data.image_index[r] == data.image_index[i]
        assert int(exists[i].sum()) == min(3, int((data.image_index == data.image_index[i]).sum()) - 1)
    # The extra rows change D's contrastive term from the first step on.
    one = train(small_params(steps=2, loss={"contrastive_captions": 1}), data, outputs_in(tmp_path / "a"))
    four = train(small_params(steps=2, loss={"contrastive_captions": 4}), data, outputs_in(tmp_path / "b"))
    assert one.history[0]["loss_d_contrastive"] != four.history[0]["loss_d_contrastive"]


def test_draw_negatives_draws_each_term_after_the_last_and_only_when_it_is_on(tmp_path: Path) -> None:
    data = load_train_data(*make_dataset(tmp_path))
    rel, rows = data.relations, torch.arange(16)

    def draw(candidates: bool, **loss: float) -> tuple[object, torch.Tensor]:
        gen = torch.Generator().manual_seed(0)
        cfg = LossParams(**{"contrastive_candidates": 3, "contrastive_word_order": 2, "swap_candidate": False, **loss})
        neg = draw_negatives(rel, rows, gen, cfg, candidates)
        return neg, torch.rand(1, generator=gen)  # where the generator was left

    plain, after_plain = draw(False)
    full, after_full = draw(True, contrastive_captions=4)
    assert plain.cand_rows is None and plain.extra_rows is None
    for a, b in zip(vars(plain.mismatch).values(), vars(full.mismatch).values()):
        assert torch.equal(a, b)  # the mismatch draws come first: the candidates do not move them
    assert not torch.equal(after_plain, after_full)  # ... and the candidates drew after them
    assert full.cand_rows.shape == full.cand_valid.shape == (16, 5)  # 3 one-word misses + 2 other orders
    assert full.extra_rows.shape == full.extra_image.shape == (16 * 3,)  # up to 3 other captions per image
    assert torch.equal(full.extra_image, torch.arange(16).repeat_interleave(3))
    assert not full.extra_cand_valid[~full.extra_exists].any()  # an empty slot has no candidates
    no_d, _ = draw(True, contrastive_captions=4, contrastive_d=0.0)  # extra captions only feed D's term
    assert no_d.cand_rows is not None and no_d.extra_rows is None
    swap, after_swap = draw(True, contrastive_captions=4, swap_candidate=True)
    assert torch.equal(after_swap, after_full)  # the swap column draws nothing
    partner = rel.partner[rows]
    assert swap.cand_rows.shape == (16, 6) and torch.equal(swap.cand_rows[:, :5], full.cand_rows)
    assert torch.equal(swap.cand_valid[:, 5], partner >= 0) and torch.equal(swap.cand_rows[partner >= 0, 5], partner[partner >= 0])


def test_sampler_state_reproduces_next_batch() -> None:
    s = ShardedSampler(20, 6, seed=1)
    for _ in range(4):  # crosses an epoch boundary
        s.next()
    s2 = ShardedSampler(20, 6, seed=1)
    s2.load_state(s.state())
    assert torch.equal(s.next(), s2.next())
    shards = [ShardedSampler(20, 3, seed=1, rank=r, world=2).next() for r in range(2)]
    assert not set(shards[0].tolist()) & set(shards[1].tolist())


def test_losses_move_and_checkpoint_round_trips_exactly(tmp_path: Path) -> None:
    data = load_train_data(*make_dataset(tmp_path))
    # One fixed thread count: the default follows the free cores, and a different count changes
    # the float summation order (a resume on another thread count is close, not bit-identical).
    one = TrainRuntimeParams(threads=1)
    # Straight run to step 6, checkpointing at 2, 4, 6.
    full = train(small_params(steps=6), data, outputs_in(tmp_path / "a"), runtime=one)
    d = [h["loss_d"] for h in full.history]
    g = [h["loss_g"] for h in full.history]
    assert len(d) == 6 and all(map(math.isfinite, d + g))
    assert max(d) - min(d) > 1e-3 and max(g) - min(g) > 1e-3
    # Interrupted run: stop after 4 steps, then a fresh call resumes from the step-4 checkpoint.
    part = train(small_params(steps=6), data, outputs_in(tmp_path / "b"), stop_after=4, runtime=one)
    assert part.step == 4
    ck = load_checkpoint(tmp_path / "b" / "checkpoints")
    assert ck is not None and ck.step == 4
    rest = train(small_params(steps=6), data, outputs_in(tmp_path / "b"), runtime=one)
    assert rest.resumed_from == 4
    a, b = load_checkpoint(tmp_path / "a" / "checkpoints"), load_checkpoint(tmp_path / "b" / "checkpoints")
    assert a is not None and b is not None and a.step == b.step == 6
    assert a.tensors.keys() == b.tensors.keys()
    # Same weights (G, D, EMA) and same Adam moments: the resumed run saw the same batches/noise.
    for k in a.tensors:
        assert torch.equal(a.tensors[k], b.tensors[k]), k
    assert a.meta["sampler"] == b.meta["sampler"]
    assert [h["loss_d"] for h in a.meta["history"]] == [h["loss_d"] for h in b.meta["history"]]
    assert (tmp_path / "a" / "models" / "generator.safetensors").is_file()


def test_changed_params_start_fresh(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = load_train_data(*make_dataset(tmp_path))
    train(small_params(steps=2), data, outputs_in(tmp_path))
    r = train(small_params(steps=2, optim={"lr_d": 3e-3}), data, outputs_in(tmp_path))  # default lr_d is 1e-3
    assert r.resumed_from == 0 and "starting fresh" in capsys.readouterr().out


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    data = load_train_data(*make_dataset(tmp_path))
    train(small_params(steps=4), data, outputs_in(tmp_path), stop_after=2)
    before = load_checkpoint(tmp_path / "checkpoints")
    assert before is not None and before.step == 2
    data.text[:] = float("nan")  # poison the captions: the next D loss is NaN
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 3"):
        train(small_params(steps=4), data, outputs_in(tmp_path))
    after = load_checkpoint(tmp_path / "checkpoints")
    assert after is not None and after.step == 2
    for k in before.tensors:
        assert torch.equal(before.tensors[k], after.tensors[k])


def test_other_steps_train_fresh_and_finished_resume_writes_outs(tmp_path: Path) -> None:
    data = load_train_data(*make_dataset(tmp_path))
    train(small_params(steps=4), data, outputs_in(tmp_path))
    shorter = train(small_params(steps=2), data, outputs_in(tmp_path))
    assert shorter.resumed_from == 0 and shorter.step == 2
    # A rerun on a finished checkpoint does no step but still writes every out DVC removed.
    (tmp_path / "plots" / "losses.csv").unlink()
    again = train(small_params(steps=2), data, outputs_in(tmp_path))
    assert again.resumed_from == 2
    assert (tmp_path / "plots" / "losses.csv").read_text().count("\n") == 3  # header + 2 steps
