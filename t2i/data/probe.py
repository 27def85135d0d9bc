"""The hand-written probe captions: plain English the grammar never produces, never trained on.

``t2i/data/probe_captions.csv`` (package data) holds captions a person wrote, each with the palette
colours it states for the petals and the stem (and the centre colour, petal count or shape where
it states them, else empty) and its word-order swap written by hand. Colour words outside the
palette's names ("scarlet", "turquoise") are mapped to the palette colour they name. The set is
for measuring only: nothing trains or tunes on it (docs/data.md).
"""

from __future__ import annotations

from importlib.resources import files

import pandas as pd

from t2i.data.flowers import ATTRIBUTES

PROBE_FILE = "probe_captions.csv"


def load_probe() -> pd.DataFrame:
    """The probe set as a caption table: split "probe", image_index and template -1 (no image).

    Columns: image_index, split, caption, class, template, the attribute columns (empty where the
    caption does not state them: None / <NA>), mentions, swap_caption, novelty ("probe").
    """
    path = files("t2i.data") / PROBE_FILE
    with path.open("r", encoding="utf-8") as f:
        raw = pd.read_csv(f, dtype=str, keep_default_na=False)
    missing = {"caption", "petal_color", "stem_color", "swap_caption"} - set(raw.columns)
    if missing:
        raise ValueError(f"{PROBE_FILE} lacks columns {sorted(missing)}")
    for col in ("petal_color", "stem_color", "center_color"):
        bad = set(raw[col]) - set(ATTRIBUTES[col]) - {""}
        if bad:
            raise ValueError(f"{PROBE_FILE}: {col} values {sorted(bad)} are not palette colours")
    stated = raw[list(ATTRIBUTES)].ne("")
    table = pd.DataFrame({
        "image_index": -1,
        "split": "probe",
        "caption": raw["caption"],
        "class": raw["petal_color"] + "-" + raw["stem_color"],
        "template": -1,
        **{col: raw[col].where(stated[col], None) for col in ATTRIBUTES},
        "mentions": [",".join(c for c in ATTRIBUTES if row[c]) for _, row in stated.iterrows()],
        "swap_caption": raw["swap_caption"],
        "novelty": "probe",
    })
    table["petal_count"] = pd.to_numeric(table["petal_count"]).astype("Int64")
    return table.astype({"image_index": "int64", "template": "int64"})
