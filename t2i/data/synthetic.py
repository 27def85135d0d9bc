"""The synthetic flower dataset: ground-truth attributes, captions and the splits.

Everything derives from ``ingest.seed``: attributes from one generator, each image's nuisance
(position, scale, rotation, background) from its own ``(seed, index)`` generator, so the bytes
do not depend on how many worker processes drew them. Captions come from the grammar
(``t2i.data.grammar``): each row records its sentence frame (``template``), which attributes it
states (``mentions``) and its word-order swap (``swap_caption``), all from the grammar's record.

Splits (docs/data.md), first match wins:

* ``novel_wording``: the caption's sentence frame is one of the ``novel_fraction`` frames never
  used in training, or it uses a word training never sees (``grammar.NOVEL_COLOR_WORDS``,
  ``NOVEL_NOUNS``); the ``novelty`` column says which ("frame", "words" or "frame+words").
* ``unseen``: a held-out (frame, unordered {petal, stem} colour pair) combination, in either
  colour order: the model has seen the frame and the pair, never the two together.
* ``test``: the caption's image is among the ``test_fraction`` held-out images.
* ``train``: everything else.
"""

from __future__ import annotations

import itertools
import multiprocessing
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from t2i.config import IngestParams
from t2i.data import grammar
from t2i.data.flowers import ATTRIBUTES, COLORS, PALETTE, PETAL_COUNTS, PETAL_SHAPES, Flower, draw_flower
from t2i.data.readers import Dataset
from t2i.data.templates import TEMPLATES, parse_caption, render_caption, swap_colors

__all__ = [
    "ATTRIBUTES", "PALETTE", "TEMPLATES", "parse_caption", "render_caption", "swap_colors",
    "combo_key", "held_out_combos", "novel_frames", "sample_flowers", "render_images", "read",
]

Combo = tuple[int, str, str]  # (frame id, colour a, colour b) with a < b in COLORS order
_CHUNK = 64  # images per worker task: large enough to amortise pickling, small for the bar
# Until params.yaml carries them (ingest.novel_fraction, ingest.novel_word_fraction).
NOVEL_FRACTION = 0.2  # fraction of the non-legacy frames held out as novel_wording
# Held-out words are far harder than held-out frames (benchmarks/text_ceiling.py: a colour word
# never trained on is read right ~0.2 of the time even from token states, a new frame ~0.95), so
# they are a small share of novel_wording and its `novelty` column tells the two apart.
NOVEL_WORD_FRACTION = 0.01  # fraction of train-frame captions that use a held-out word instead
NOVEL_WORDS_IN_NOVEL_FRAMES = 0.1  # ... and of novel-frame captions
LEGACY_FRAMES = len(grammar.LEGACY)  # the original 12 templates: always trained on


def combo_key(template_id: int, petal_color: str, stem_color: str) -> Combo:
    """The held-out unit: a frame with an unordered colour pair (both orders are one combo)."""
    a, b = sorted((petal_color, stem_color), key=COLORS.index)
    return (int(template_id), a, b)


def novel_frames(seed: int, fraction: float) -> set[int]:
    """``fraction`` of the non-legacy frames, never used in training (the novel_wording split)."""
    candidates = np.arange(LEGACY_FRAMES, len(grammar.FRAMES))
    k = round(fraction * len(candidates))
    return {int(f) for f in np.random.default_rng([seed, 4]).permutation(candidates)[:k]}


def held_out_combos(seed: int, fraction: float, frames: list[int] | None = None) -> set[Combo]:
    """``fraction`` of all combos of ``frames``, so every frame and every pair keeps seen combos."""
    frames = list(range(len(grammar.FRAMES))) if frames is None else frames
    pairs = list(itertools.combinations(COLORS, 2))
    combos = [(t, a, b) for t in frames for a, b in pairs]
    target = round(fraction * len(combos))
    rng = np.random.default_rng([seed, 2])
    held: set[Combo] = set()
    per_template = dict.fromkeys(frames, 0)
    per_pair = dict.fromkeys(pairs, 0)
    for i in rng.permutation(len(combos)):
        if len(held) >= target:
            break
        t, a, b = combos[i]
        # Keep at least one seen combo per frame and per pair: unseen means a new
        # combination of known parts, not a word or frame the model never met.
        if per_template[t] + 1 < len(pairs) and per_pair[(a, b)] + 1 < len(frames):
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


def _split(novelty: str, unseen: bool, test: bool) -> str:
    return "novel_wording" if novelty else "unseen" if unseen else "test" if test else "train"


def caption_table(
    flowers: list[Flower], params: IngestParams, held: set[Combo], novel: set[int]
) -> pd.DataFrame:
    rng = np.random.default_rng([params.seed, 3])
    n, per_image = len(flowers), params.captions_per_image
    test = np.zeros(n, bool)
    test[rng.permutation(n)[: max(1, round(params.test_fraction * n))]] = True
    word_fraction = getattr(params, "novel_word_fraction", NOVEL_WORD_FRACTION)
    n_frames = len(grammar.FRAMES)
    rows: list[dict[str, Any]] = []
    for i, flower in enumerate(flowers):
        attrs = vars(flower)
        for t in rng.choice(n_frames, per_image, replace=per_image > n_frames):
            t = int(t)
            new_words = bool(rng.random() < (NOVEL_WORDS_IN_NOVEL_FRAMES if t in novel else word_fraction))
            caption = grammar.sample(t, attrs, rng, novel_words=new_words)
            novelty = "+".join(k for k, on in (("frame", t in novel), ("words", new_words)) if on)
            unseen = combo_key(t, flower.petal_color, flower.stem_color) in held
            rows.append({
                "image_index": i,
                "split": _split(novelty, unseen, bool(test[i])),
                "caption": grammar.render(caption),
                "class": f"{flower.petal_color}-{flower.stem_color}",
                "template": t,
                **attrs,
                "mentions": ",".join(grammar.FRAMES[t].mentions),
                "swap_caption": grammar.render(grammar.swap(caption)),
                "novelty": novelty,
            })
    table = pd.DataFrame(rows)
    return table.astype({"image_index": "int64", "template": "int64", "petal_count": "int64"})


def read(params: IngestParams) -> Dataset:
    flowers = sample_flowers(params.num_images, params.seed)
    novel = novel_frames(params.seed, getattr(params, "novel_fraction", NOVEL_FRACTION))
    trained = [f for f in range(len(grammar.FRAMES)) if f not in novel]
    held = held_out_combos(params.seed, params.unseen_fraction, trained)
    table = caption_table(flowers, params, held, novel)
    images = render_images(flowers, params.resolution, params.seed, params.workers)
    manifest = {
        "source": "synthetic",
        "dataset": "synthetic",
        "seed": params.seed,
        "palette": {name: "#%02x%02x%02x" % rgb for name, rgb in PALETTE.items()},
        "templates": [grammar.frame_text(f) for f in range(len(grammar.FRAMES))],
        "novel_frames": sorted(novel),
        "novel_words": sorted(set(grammar.NOVEL_COLOR_WORDS.values()) | set(grammar.NOVEL_NOUNS.values())),
        "unseen_combos": [list(c) for c in sorted(held)],
        "skipped": [],
    }
    return Dataset(table=table, images=images, manifest=manifest)
