"""t2i.nesting: the one flatten / nest pair behind MLflow params, sweep tables and metrics.json."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from t2i.nesting import flatten, nest


class Section(BaseModel):
    lr: float = 0.1
    attention: list[int] = [8, 16]


def test_flatten_and_nest_are_inverse_for_each_separator() -> None:
    nested = {"train": {"lr": 0.1, "att": [8, 16]}, "x": 1, "a": {"b": {"c": None}}}
    flat = flatten(nested)
    assert flat == {"train.lr": 0.1, "train.att": [8, 16], "x": 1, "a.b.c": None}
    assert nest(flat) == nested
    assert nest({"test/attr_all": 0.5, "diversity": 1.0}, sep="/") == {"test": {"attr_all": 0.5}, "diversity": 1.0}
    assert flatten({"test": {"attr_all": 0.5}}, sep="/") == {"test/attr_all": 0.5}


def test_pydantic_sections_are_dumped_and_clashing_keys_refused() -> None:
    assert flatten({"train": Section()}) == {"train.lr": 0.1, "train.attention": [8, 16]}
    with pytest.raises(ValueError, match="both a value and a section"):
        nest({"a": 1, "a.b": 2})
    with pytest.raises(ValueError, match="both a value and a section"):
        nest({"a.b": 2, "a": 1})
