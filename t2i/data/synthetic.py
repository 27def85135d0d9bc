"""The synthetic flower dataset: ground-truth attributes, captions and the three splits.

Everything derives from ``ingest.seed``: attributes from one generator, each image's nuisance
(position, scale, rotation, background) from its own ``(seed, index)`` generator, so the bytes
do not depend on how many worker processes drew them.

Splits (docs/architecture.md): images go to ``train``/``test`` by ``test_fraction``. A fraction
of (template, unordered {petal, stem} colour pair) combinations is held out: every caption row of
such a combination, in either colour order, is ``unseen``, whatever its image's split. So the
model has seen each template and each colour pair, but never that template with that pair.
"""

from __future__ import annotations

import itertools
import multiprocessing
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from t2i.config import IngestParams
from t2i.data.flowers import ATTRIBUTES, COLORS, PALETTE, PETAL_COUNTS, PETAL_SHAPES, Flower, draw_flower
from t2i.data.readers import Dataset
from t2i.data.templates import TEMPLATES, parse_caption, render_caption, swap_colors

__all__ = [
    "ATTRIBUTES", "PALETTE", "TEMPLATES", "parse_caption", "render_caption", "swap_colors",
    "combo_key", "held_out_combos", "sample_flowers", "render_images", "read",
]

Combo = tuple[int, str, str]  # (template id, colour a, colour b) with a < b in COLORS order
_CHUNK = 64  # images per worker task: large enough to amortise pickling, small for the bar


def combo_key(template_id: int, petal_color: str, stem_color: str) -> Combo:
    """The held-out unit: a template with an unordered colour pair (both orders are one combo)."""
    a, b = sorted((petal_color, stem_color), key=COLORS.index)
    return (int(template_id), a, b)


def held_out_combos(seed: int, fraction: float) -> set[Combo]:
    """``fraction`` of all combos, chosen so every template and every pair still has seen combos."""
    pairs = list(itertools.combinations(COLORS, 2))
    combos = [(t, a, b) for t in range(len(TEMPLATES)) for a, b in pairs]
    target = round(fraction * len(combos))
    rng = np.random.default_rng([seed, 2])
    held: set[Combo] = set()
    per_template = dict.fromkeys(range(len(TEMPLATES)), 0)
    per_pair = dict.fromkeys(pairs, 0)
    for i in rng.permutation(len(combos)):
        if len(held) >= target:
            break
        t, a, b = combos[i]
        # Keep at least one seen combo per template and per pair: unseen means a new
        # combination of known parts, not a word or template the model never met.
        if per_template[t] + 1 < len(pairs) and per_pair[(a, b)] + 1 < len(TEMPLATES):
            held.add((t, a, b))
            per_template[t] += 1
            per_pair[(a, b)] += 1
    return held


def sample_flowers(n: int, seed: int) -> list[Flower]:
    """Uniform attributes; the stem and centre colours always differ from the petal colour."""
    rng = np.random.default_rng([seed, 0])
    k = len(COLORS)
    petal = rng.integers(0, k, n)
    stem = (petal + rng.integers(1, k, n)) % k  # uniform over the other k-1 colours
    center = (petal + rng.integers(1, k, n)) % k
    count = rng.integers(0, len(PETAL_COUNTS), n)
    shape = rng.integers(0, len(PETAL_SHAPES), n)
    return [
        Flower(COLORS[p], COLORS[c], COLORS[s], PETAL_COUNTS[q], PETAL_SHAPES[h])
        for p, c, s, q, h in zip(petal, center, stem, count, shape)
    ]


def _render_chunk(job: tuple[int, int, int, list[Flower]]) -> tuple[int, np.ndarray]:
    seed, resolution, start, flowers = job
    out = np.empty((len(flowers), resolution, resolution, 3), np.uint8)  # (n, R, R, 3)
    for j, flower in enumerate(flowers):
        out[j] = draw_flower(flower, resolution, np.random.default_rng([seed, 1, start + j]))
    return start, out


def render_images(flowers: list[Flower], resolution: int, seed: int, workers: int = 1) -> np.ndarray:
    """Draw all flowers with ``workers`` processes; returns ``(N, R, R, 3)`` uint8."""
    images = np.empty((len(flowers), resolution, resolution, 3), np.uint8)
    jobs = [(seed, resolution, s, flowers[s : s + _CHUNK]) for s in range(0, len(flowers), _CHUNK)]
    with tqdm(total=len(flowers), desc="drawing flowers", unit="img") as bar:
        if workers <= 1:
            results = map(_render_chunk, jobs)
            for start, chunk in results:
                images[start : start + len(chunk)] = chunk
                bar.update(len(chunk))
        else:
            with multiprocessing.get_context().Pool(workers) as pool:
                for start, chunk in pool.imap_unordered(_render_chunk, jobs):
                    images[start : start + len(chunk)] = chunk
                    bar.update(len(chunk))
    return images


def caption_table(flowers: list[Flower], params: IngestParams, held: set[Combo]) -> pd.DataFrame:
    rng = np.random.default_rng([params.seed, 3])
    n, per_image = len(flowers), params.captions_per_image
    test = np.zeros(n, bool)
    test[rng.permutation(n)[: max(1, round(params.test_fraction * n))]] = True
    rows: list[dict[str, Any]] = []
    replace = per_image > len(TEMPLATES)  # distinct templates per image whenever possible
    for i, flower in enumerate(flowers):
        attrs = vars(flower)
        for t in rng.choice(len(TEMPLATES), per_image, replace=replace):
            t = int(t)
            unseen = combo_key(t, flower.petal_color, flower.stem_color) in held
            rows.append({
                "image_index": i,
                "split": "unseen" if unseen else ("test" if test[i] else "train"),
                "caption": render_caption(t, attrs),
                "class": f"{flower.petal_color}-{flower.stem_color}",
                "template": t,
                **attrs,
                "mentions": ",".join(TEMPLATES[t].mentions),
            })
    table = pd.DataFrame(rows)
    return table.astype({"image_index": "int64", "template": "int64", "petal_count": "int64"})


def read(params: IngestParams) -> Dataset:
    flowers = sample_flowers(params.num_images, params.seed)
    held = held_out_combos(params.seed, params.unseen_fraction)
    table = caption_table(flowers, params, held)
    images = render_images(flowers, params.resolution, params.seed, params.workers)
    manifest = {
        "source": "synthetic",
        "dataset": "synthetic",
        "seed": params.seed,
        "palette": {name: "#%02x%02x%02x" % rgb for name, rgb in PALETTE.items()},
        "templates": [t.text for t in TEMPLATES],
        "unseen_combos": [list(c) for c in sorted(held)],
        "skipped": [],
    }
    return Dataset(table=table, images=images, manifest=manifest)
