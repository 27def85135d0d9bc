"""The hand-written probe set: loads as a caption table, states palette colours, swaps by hand."""

from __future__ import annotations

import re

import numpy as np

from t2i.data import grammar
from t2i.data.flowers import COLORS
from t2i.data.probe import load_probe


def test_probe_loads_as_a_caption_table() -> None:
    t = load_probe()
    assert len(t) >= 60 and t["caption"].is_unique
    assert (t["split"] == "probe").all() and (t["image_index"] == -1).all()
    assert set(t["petal_color"]) <= set(COLORS) and set(t["stem_color"]) <= set(COLORS)
    assert (t["petal_color"] != t["stem_color"]).all()
    assert t["mentions"].str.contains("petal_color").all() and t["mentions"].str.contains("stem_color").all()
    stated = t["center_color"].notna()
    assert stated.any() and (t.loc[stated, "mentions"].str.contains("center_color")).all()
    assert t["petal_count"].dropna().isin([3, 5, 8]).all()


def test_probe_swaps_are_the_same_words_reordered() -> None:
    t = load_probe()
    norm = lambda s: sorted(w for w in re.findall(r"\w+", s.lower()) if w not in ("a", "an"))  # noqa: E731
    for cap, swap in zip(t["caption"], t["swap_caption"]):
        assert cap != swap and norm(cap) == norm(swap), (cap, swap)


def test_probe_is_not_grammar_output() -> None:
    # No probe caption is one the grammar can produce in canonical form, and most use a frame-level
    # wording the grammar lacks: the probe measures wordings outside the training distribution.
    frames = {grammar.frame_text(f) for f in range(len(grammar.FRAMES))}
    rng = np.random.default_rng(0)
    attrs = {"petal_color": "red", "stem_color": "green", "center_color": "white", "petal_count": 5,
             "petal_shape": "round"}
    sampled = {grammar.render(grammar.sample(f % len(grammar.FRAMES), attrs, rng)).lower().rstrip(".!")
               for f in range(5000)}
    t = load_probe()
    assert not {c.lower().rstrip(".!") for c in t["caption"]} & sampled
    assert not set(t["caption"]) & frames
