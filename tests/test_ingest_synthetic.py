"""Synthetic flowers: determinism, caption/attribute consistency, colour roles, unseen split."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from t2i.config import IngestParams
from t2i.data import grammar, synthetic
from t2i.data.flowers import ATTRIBUTES, COLORS, PALETTE, Flower, draw_flower
from t2i.data.templates import TEMPLATES, parse_caption, render_caption, swap_colors


def _read(**kw: object) -> synthetic.Dataset:
    values = {"num_images": 600, "captions_per_image": 4, "workers": 1, **kw}
    return synthetic.read(IngestParams(**values))


@pytest.fixture(scope="module")
def data() -> synthetic.Dataset:
    return _read()


def test_same_seed_same_bytes_across_worker_counts(data: synthetic.Dataset) -> None:
    # Two workers draw chunks in another order; per-image generators make that irrelevant.
    again = _read(workers=2)
    assert again.images.tobytes() == data.images.tobytes()
    pd.testing.assert_frame_equal(again.table, data.table)


def test_different_seed_differs(data: synthetic.Dataset) -> None:
    other = _read(seed=1)
    assert other.images.tobytes() != data.images.tobytes()
    assert not other.table["caption"].equals(data.table["caption"])


def test_shapes_and_columns(data: synthetic.Dataset) -> None:
    assert data.images.shape == (600, 32, 32, 3) and data.images.dtype == np.uint8
    assert len(data.table) == 600 * 4
    expected = ["image_index", "split", "caption", "class", "template", "petal_color", "center_color",
                "stem_color", "petal_count", "petal_shape", "mentions", "swap_caption", "novelty"]
    assert list(data.table.columns) == expected
    # Each image gets distinct frames while there are enough of them.
    assert (data.table.groupby("image_index")["template"].nunique() == 4).all()


def test_resolution_param() -> None:
    assert _read(num_images=8, resolution=64).images.shape == (8, 64, 64, 3)


def test_palette_and_templates_are_rich_enough() -> None:
    assert len(PALETTE) >= 8 and len(TEMPLATES) == 12 and len(grammar.FRAMES) >= 150
    rgb = np.array(list(PALETTE.values()), float)
    distances = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1) + np.eye(len(rgb)) * 1e9
    assert distances.min() > 80  # clearly different colours, not shades of one
    # Word order differs: the stem colour comes first in some frames, last in others.
    first = [f.text.index("{stem}") < f.text.index("{petal}") for f in grammar.FRAMES]
    assert 0.15 < np.mean(first) < 0.85
    # Every colour word names exactly one palette colour.
    words = [w for ws in grammar.COLOR_WORDS.values() for w in ws] + list(grammar.NOVEL_COLOR_WORDS.values())
    assert len(words) == len(set(words))


def _colour_words(colour: str) -> set[str]:
    return set(grammar.COLOR_WORDS[colour]) | {grammar.NOVEL_COLOR_WORDS[colour]}


def test_captions_state_the_ground_truth(data: synthetic.Dataset) -> None:
    for row in data.table.itertuples(index=False):
        frame = grammar.FRAMES[row.template]
        assert row.mentions == ",".join(frame.mentions)
        assert {"petal_color", "stem_color"} <= set(frame.mentions) <= set(ATTRIBUTES)
        text = row.caption.lower()
        for col in ("petal_color", "stem_color") + (("center_color",) if "center" in frame.slots else ()):
            assert any(w in text for w in _colour_words(getattr(row, col))), (row.caption, col)
        assert row.stem_color != row.petal_color and row.center_color != row.petal_color
        assert getattr(row, "_3") == f"{row.petal_color}-{row.stem_color}"  # class column
        # The canonical rendering of the row's frame parses back to the row's attributes, and so
        # do the caption and its swap themselves (for consumers that hold only the text).
        parsed = parse_caption(render_caption(row.template, row._asdict()))
        assert parsed is not None and parsed[0] == row.template
        assert all(getattr(row, k) == v for k, v in parsed[1].items())
        assert parse_caption(row.caption) == (row.template, {k: getattr(row, k) for k in frame.mentions})
        assert parse_caption(row.swap_caption) == (row.template, swap_colors(
            {k: getattr(row, k) for k in frame.mentions}))


def test_swap_caption_is_the_same_words_in_another_order(data: synthetic.Dataset) -> None:
    for row in data.table.itertuples(index=False):
        assert row.swap_caption != row.caption
        norm = lambda s: sorted(w for w in re.findall(r"\w+", s.lower()) if w not in ("a", "an"))  # noqa: E731
        assert norm(row.swap_caption) == norm(row.caption), (row.caption, row.swap_caption)
    # From the record: the canonical swap of a frame is the frame with the colours exchanged.
    rng = np.random.default_rng(0)
    attrs = {"petal_color": "orange", "stem_color": "white", "center_color": "red",
             "petal_count": 8, "petal_shape": "round"}
    for frame in range(len(grammar.FRAMES)):
        c = grammar.canonical(frame, attrs)
        assert grammar.render(grammar.swap(c)) == render_caption(frame, swap_colors(attrs))
        sampled = grammar.sample(frame, attrs, rng)
        assert grammar.swap(grammar.swap(sampled)) == sampled


def test_every_template_renders_and_parses_back() -> None:
    attrs = {"petal_color": "orange", "stem_color": "white", "center_color": "red",
             "petal_count": 8, "petal_shape": "round"}
    captions = [render_caption(t, attrs) for t in range(len(grammar.FRAMES))]
    assert len(set(captions)) == len(grammar.FRAMES)
    assert captions[0] == "an orange flower with a white stem"
    assert captions[:12] == [t.text.format(petal="orange", stem="white", center="red", count="eight",
                                           shape="round").replace("a orange", "an orange")
                             for t in TEMPLATES]
    for t, caption in enumerate(captions):
        parsed = parse_caption(caption)
        assert parsed is not None and parsed[0] == t
        assert {k: attrs[k] for k in parsed[1]} == parsed[1]
    swapped = render_caption(0, swap_colors(attrs))
    assert swapped == "a white flower with an orange stem"
    assert parse_caption("a purple elephant") is None


def test_grammar_has_300_structures_and_is_deterministic(data: synthetic.Dataset) -> None:
    structures = set()
    rng = np.random.default_rng(0)
    attrs = vars(Flower("red", "white", "green", 5, "round"))
    for i in range(6000):
        structures.add(grammar.structure(grammar.sample(i % len(grammar.FRAMES), attrs, rng)))
    assert len(structures) >= 300
    # Nouns abstracted too, frames and leads alone still give >= 300.
    assert len({(c.frame, c.lead.strip()) for c in [grammar.sample(i % len(grammar.FRAMES), attrs, rng)
                                                    for i in range(6000)]}) >= 300
    a = [grammar.render(grammar.sample(3, attrs, np.random.default_rng(7))) for _ in range(3)]
    assert len(set(a)) == 1


def test_every_colour_pair_in_both_orders_in_training() -> None:
    params = IngestParams(num_images=4000, captions_per_image=4)
    flowers = synthetic.sample_flowers(params.num_images, params.seed)
    novel = synthetic.novel_frames(params.seed, synthetic.NOVEL_FRACTION)
    held = synthetic.held_out_combos(params.seed, params.unseen_fraction,
                                     [f for f in range(len(grammar.FRAMES)) if f not in novel])
    table = synthetic.caption_table(flowers, params, held, novel)
    train = table[table["split"] == "train"]
    pairs = set(zip(train["petal_color"], train["stem_color"]))
    assert pairs == {(a, b) for a in COLORS for b in COLORS if a != b}


def test_novel_wording_never_in_training(data: synthetic.Dataset) -> None:
    t = data.table
    novel = set(data.manifest["novel_frames"])
    assert novel and novel.isdisjoint(range(12))
    assert abs(len(novel) / (len(grammar.FRAMES) - 12) - synthetic.NOVEL_FRACTION) < 0.01
    nw = t[t["split"] == "novel_wording"]
    rest = t[t["split"] != "novel_wording"]
    assert set(nw["template"]) >= novel and not set(rest["template"]) & novel
    assert set(nw["novelty"]) == {"frame", "words", "frame+words"}
    assert (rest["novelty"] == "").all()
    # Held-out words: in novel_wording captions only.
    words = set(data.manifest["novel_words"])
    has = t["caption"].str.lower().apply(lambda c: bool(words & set(c.replace(".", " ").replace("!", " ").split())))
    assert 0.05 < has[nw.index].mean() < 0.3 and not has[rest.index].any()
    assert 0.1 < len(nw) / len(t) < 0.35


def test_unseen_combos_never_in_train_in_either_order(data: synthetic.Dataset) -> None:
    t = data.table
    key = [synthetic.combo_key(r.template, r.petal_color, r.stem_color)
           for r in t[["template", "petal_color", "stem_color"]].itertuples(index=False)]
    t = t.assign(combo=key)
    unseen = set(t.loc[t["split"] == "unseen", "combo"])
    seen = set(t.loc[t["split"].isin(["train", "test"]), "combo"])
    assert unseen and not unseen & seen
    held = {tuple(c) for c in data.manifest["unseen_combos"]}
    assert unseen <= held
    # Both orders of a held-out pair occur among the unseen rows (the order is not the holdout).
    orders = set(zip(t.loc[t["split"] == "unseen", "petal_color"], t.loc[t["split"] == "unseen", "stem_color"]))
    assert any((b, a) in orders for a, b in orders)
    # Colours and (almost) every trained frame still appear in training: unseen is a new combination.
    train = t[t["split"] == "train"]
    trained = set(range(len(grammar.FRAMES))) - set(data.manifest["novel_frames"])
    assert len(set(train["template"])) >= 0.95 * len(trained)
    assert set(train["petal_color"]) == set(COLORS) == set(train["stem_color"])
    assert abs(len(held) / (len(trained) * 45) - 0.15) < 0.01


def test_image_split_fraction(data: synthetic.Dataset) -> None:
    t = data.table
    test_images = set(t.loc[t["split"] == "test", "image_index"])
    train_images = set(t.loc[t["split"] == "train", "image_index"])
    assert not test_images & train_images
    assert 0.07 * 600 <= len(test_images) <= 0.1 * 600


def test_no_unseen_split_when_fraction_zero() -> None:
    assert "unseen" not in set(_read(num_images=40, unseen_fraction=0.0).table["split"])


def test_drawn_colours_are_where_the_attributes_say() -> None:
    # A petal colour must dominate the flower head and the stem colour the bottom rows, so a
    # classifier can read both at 32 px.
    rng = np.random.default_rng(0)
    palette = np.array(list(PALETTE.values()), float)
    for petal, stem in [("red", "yellow"), ("yellow", "red"), ("blue", "white"), ("brown", "green")]:
        img = draw_flower(Flower(petal, "white" if petal != "white" else "red", stem, 5, "round"), 32, rng)
        nearest = np.linalg.norm(img[:, :, None].astype(float) - palette, axis=-1)  # (R, R, K)
        close = nearest.min(-1) < 40
        names = np.array(COLORS)[nearest.argmin(-1)]
        counts = pd.Series(names[close]).value_counts()
        assert counts.get(petal, 0) >= 40, (petal, counts.to_dict())
        assert counts.get(stem, 0) >= 12, (stem, counts.to_dict())
