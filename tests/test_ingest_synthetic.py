"""Synthetic flowers: determinism, caption/attribute consistency, colour roles, unseen split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from t2i.config import IngestParams
from t2i.data import synthetic
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
                "stem_color", "petal_count", "petal_shape", "mentions"]
    assert list(data.table.columns) == expected
    # Each image gets distinct templates while there are enough of them.
    assert (data.table.groupby("image_index")["template"].nunique() == 4).all()


def test_resolution_param() -> None:
    assert _read(num_images=8, resolution=64).images.shape == (8, 64, 64, 3)


def test_palette_and_templates_are_rich_enough() -> None:
    assert len(PALETTE) >= 8 and len(TEMPLATES) >= 8
    rgb = np.array(list(PALETTE.values()), float)
    distances = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1) + np.eye(len(rgb)) * 1e9
    assert distances.min() > 80  # clearly different colours, not shades of one
    # Word order differs: the stem colour comes first in some templates, last in others.
    first = {t.text.index("{stem}") < t.text.index("{petal}") for t in TEMPLATES}
    assert first == {True, False}


def test_captions_state_the_ground_truth(data: synthetic.Dataset) -> None:
    for row in data.table.itertuples(index=False):
        parsed = parse_caption(row.caption)
        assert parsed is not None, row.caption
        template, stated = parsed
        assert template == row.template
        assert set(stated) == set(row.mentions.split(","))
        assert {"petal_color", "stem_color"} <= set(stated) <= set(ATTRIBUTES)
        for key, value in stated.items():
            assert getattr(row, key) == value, (row.caption, key)
        assert row.stem_color != row.petal_color and row.center_color != row.petal_color
        assert getattr(row, "_3") == f"{row.petal_color}-{row.stem_color}"  # class column


def test_every_template_renders_and_parses_back() -> None:
    attrs = {"petal_color": "orange", "stem_color": "white", "center_color": "red",
             "petal_count": 8, "petal_shape": "round"}
    captions = [render_caption(t, attrs) for t in range(len(TEMPLATES))]
    assert len(set(captions)) == len(TEMPLATES)
    assert captions[0] == "an orange flower with a white stem"
    for t, caption in enumerate(captions):
        parsed = parse_caption(caption)
        assert parsed is not None and parsed[0] == t
        assert {k: attrs[k] for k in parsed[1]} == parsed[1]
    swapped = render_caption(0, swap_colors(attrs))
    assert swapped == "a white flower with an orange stem"
    assert parse_caption("a purple elephant") is None


def test_colour_pairs_appear_in_both_roles_in_training(data: synthetic.Dataset) -> None:
    train = data.table[data.table["split"] == "train"]
    pairs = set(zip(train["petal_color"], train["stem_color"]))
    both = [(a, b) for a, b in pairs if (b, a) in pairs]
    assert len(both) >= 0.8 * len(pairs)


def test_unseen_combos_never_in_train_in_either_order(data: synthetic.Dataset) -> None:
    t = data.table
    key = [synthetic.combo_key(r.template, r.petal_color, r.stem_color)
           for r in t[["template", "petal_color", "stem_color"]].itertuples(index=False)]
    t = t.assign(combo=key)
    unseen = set(t.loc[t["split"] == "unseen", "combo"])
    seen = set(t.loc[t["split"] != "unseen", "combo"])
    assert unseen and not unseen & seen
    held = {tuple(c) for c in data.manifest["unseen_combos"]}
    assert unseen <= held
    # Both orders of a held-out pair occur among the unseen rows (the order is not the holdout).
    orders = set(zip(t.loc[t["split"] == "unseen", "petal_color"], t.loc[t["split"] == "unseen", "stem_color"]))
    assert any((b, a) in orders for a, b in orders)
    # Every template and every colour still appears in training: unseen is a new combination.
    train = t[t["split"] == "train"]
    assert set(train["template"]) == set(range(len(TEMPLATES)))
    assert set(train["petal_color"]) == set(COLORS) == set(train["stem_color"])
    assert abs(len(held) / (len(TEMPLATES) * 45) - 0.15) < 0.01


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
