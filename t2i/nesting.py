"""The one flatten / nest pair: ``{"train": {"lr": 1}}`` <-> ``{"train.lr": 1}``.

MLflow params and sweep tables want flat dotted keys; params.yaml overrides and metrics.json
want sections. ``sep`` is "." for params and "/" for metric names (``test/attr_all``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def flatten(d: Mapping[str, Any], sep: str = ".", prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> one level with joined keys; pydantic models are dumped first."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if hasattr(value, "model_dump"):
            value = value.model_dump()
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, sep, f"{name}{sep}"))
        else:
            out[name] = value
    return out


def nest(flat: Mapping[str, Any], sep: str = ".") -> dict[str, Any]:
    """Joined keys -> nested dicts; a key that is both a leaf and a section is an error."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *path, leaf = key.split(sep)
        node = out
        for part in path:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{key!r}: {part!r} is both a value and a section")
        if isinstance(node.get(leaf), dict):
            raise ValueError(f"{key!r}: {leaf!r} is both a value and a section")
        node[leaf] = value
    return out
