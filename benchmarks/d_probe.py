"""What does the trained discriminator know? Real test images against their caption and one-attribute misses.

    python benchmarks/d_probe.py [--run DIR] [--project DIR] [--captions 200]

RUN holds models/config.json and checkpoints/last.safetensors (a `dvc repro` project, or a
`benchmarks/tune_train.py` output dir); PROJECT holds data/prepared and data/embeddings of the
synthetic dataset. For each test caption that names a centre colour, three wrong captions are
built from the same template with one colour changed (petal, stem or centre). Printed per
attribute: how often D scores the true caption above the miss, and the mean score margin. A
generator cannot learn an attribute its discriminator does not check: this is how the centre
colour was traced to D (docs/results/tuning.md).

A one-colour miss can be rejected by colour presence alone. The role check is printed per
template: each test caption against its petal/stem swap (the same colours in the other roles),
how often D prefers the true caption and by what mean margin (a template whose swaps D checks
weakly is one G will not learn the roles of).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from t2i.data.flowers import ATTRIBUTES, COLORS  # noqa: E402
from t2i.data.prepared import load_prepared  # noqa: E402
from t2i.data.templates import render_caption, swap_colors  # noqa: E402
from t2i.models import Discriminator, GANConfig, Generator  # noqa: E402
from t2i.text import encoder_from_info  # noqa: E402
from t2i.train.checkpoint import load_checkpoint, tensors_of  # noqa: E402

SLOTS = ("petal_color", "stem_color", "center_color")


def probe(d: Discriminator, sentences: Callable[[list[str], list[dict[str, Any]]], torch.Tensor],
          table: pd.DataFrame, images: np.ndarray, n: int = 200, seed: int = 0) -> dict[str, float]:
    """Per colour slot: how often D scores a real test image's caption above the same caption
    with that colour changed, and the mean margin. `sentences(captions, attrs)` -> (N, D)
    vectors as D sees them (after G's text_norm)."""
    rows = table[(table["split"] == "test") & table["mentions"].str.contains("center_color")].head(n)
    if rows.empty:
        raise SystemExit("no test captions that name a centre colour: the probe needs the synthetic dataset")
    rng = np.random.default_rng(seed)
    captions: dict[str, list[str]] = {"true": [], **{s: [] for s in SLOTS}}
    attrs: dict[str, list[dict[str, Any]]] = {k: [] for k in captions}
    for _, r in rows.iterrows():
        a = {k: r[k] for k in ("petal_color", "stem_color", "center_color", "petal_count", "petal_shape")}
        captions["true"].append(render_caption(int(r["template"]), a))
        attrs["true"].append(a)
        for slot in SLOTS:
            wrong = {**a, slot: rng.choice([c for c in COLORS if c != a[slot]])}
            captions[slot].append(render_caption(int(r["template"]), wrong))
            attrs[slot].append(wrong)
    x = torch.from_numpy(images[rows["image_index"].to_numpy()]).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (N, 3, R, R)
    was_training = d.training
    d.eval()
    keys = list(captions)  # true, then one miss per slot: all scored against one feature pass of x
    with torch.no_grad():
        text = torch.cat([sentences(captions[k], attrs[k]) for k in keys])  # (K*N, D)
        index = torch.arange(len(x)).repeat(len(keys))  # (K*N,) image of each sentence
        flat = d(x, text, index).float().numpy()
    score = dict(zip(keys, flat.reshape(len(keys), len(x))))
    d.train(was_training)
    out: dict[str, float] = {}
    for slot in SLOTS:
        out[f"{slot}: D prefers the true caption"] = round(float(np.mean(score["true"] > score[slot])), 3)
        out[f"{slot}: mean margin"] = round(float(np.mean(score["true"] - score[slot])), 3)
    return out


def swap_probe(d: Discriminator, sentences: Callable[[list[str], list[dict[str, Any]]], torch.Tensor],
               table: pd.DataFrame, images: np.ndarray, n: int = 150) -> dict[int, dict[str, float]]:
    """Per template: how often D scores a real test image's caption above its petal/stem swap,
    and the mean margin (up to ``n`` test captions per template)."""
    out: dict[int, dict[str, float]] = {}
    was_training = d.training
    d.eval()
    for template in sorted(table["template"].unique()):
        rows = table[(table["split"] == "test") & (table["template"] == template)].head(n)
        if rows.empty:
            continue
        attrs = rows[list(ATTRIBUTES)].to_dict("records")
        swapped = [swap_colors(a) for a in attrs]
        x = torch.from_numpy(images[rows["image_index"].to_numpy()]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        with torch.no_grad():
            true = d(x, sentences([render_caption(int(template), a) for a in attrs], attrs)).float().numpy()
            swap = d(x, sentences([render_caption(int(template), a) for a in swapped], swapped)).float().numpy()
        out[int(template)] = {"prefers": round(float(np.mean(true > swap)), 3),
                              "margin": round(float(np.mean(true - swap)), 3)}
    d.train(was_training)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=ROOT, help="dir with models/config.json and checkpoints/")
    ap.add_argument("--project", type=Path, default=None, help="dir with data/prepared, data/embeddings (default: RUN)")
    ap.add_argument("--captions", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    project = args.project or args.run
    torch.set_num_threads(1)

    config_path = args.run / "models" / "config.json"
    if not config_path.is_file():
        raise SystemExit(f"{config_path} missing: train first (`dvc repro train`)")
    cfg = GANConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8"))["model"])
    ckpt = load_checkpoint(args.run / "checkpoints")
    if ckpt is None:
        raise SystemExit(f"no checkpoint in {args.run / 'checkpoints'}: the discriminator is only saved there")
    d, g = Discriminator(cfg).eval(), Generator(cfg).eval()
    d.load_state_dict(tensors_of(ckpt, "d"))
    g.load_state_dict(tensors_of(ckpt, "ema"))  # for its fitted text_norm: D sees what G sees

    prepared = load_prepared(project / "data" / "prepared")
    if not set(SLOTS) <= set(prepared.table.columns):
        raise SystemExit(f"{prepared.path}: no ground-truth colours; the probe needs the synthetic dataset")
    info = json.loads((project / "data" / "embeddings" / "encoder.json").read_text(encoding="utf-8"))
    encoder = encoder_from_info(info)

    def sentences(captions: list[str], attrs: list[dict[str, Any]]) -> torch.Tensor:
        return g.text_norm(torch.from_numpy(encoder.encode(captions)).float())

    result = probe(d, sentences, prepared.table, prepared.images, args.captions, args.seed)
    swaps = swap_probe(d, sentences, prepared.table, prepared.images)
    print(json.dumps({"run": str(args.run), "step": ckpt.step, **result, "swap by template": swaps}))


if __name__ == "__main__":
    main()
