"""Synthetic-like caption generators shared by the embed benchmarks (no project data needed)."""

from __future__ import annotations

import random

COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "white", "brown")
_SHADES = ("", "bright ", "pale ", "dark ", "deep ", "light ", "soft ", "vivid ")
_SHAPES = ("round", "pointed", "long", "narrow", "wide", "curled", "ruffled", "heart-shaped")
_COUNTS = ("three", "four", "five", "six", "seven", "eight", "nine", "ten", "many")
_PLACES = ("", " in a garden", " on a table", " in the sun", " by a wall", " in a pot",
           " on grass", " at dusk", " in the rain", " near a fence")
_TEMPLATES = (
    "a {p} flower with {n} {s} petals and a {q} stem{w}",
    "the stem is {q} and the {n} {s} petals are {p}{w}",
    "this flower has {n} {p} petals, a {c} center and a {q} stem{w}",
    "{n} {s} {p} petals around a {c} center above a {q} stem{w}",
    "on a {q} stem sits a flower with {n} {s} {p} petals{w}",
    "a {q} stem holds a {p} flower whose {n} petals are {s}{w}",
)


def distinct_captions(n: int, seed: int = 0) -> list[str]:
    """``n`` different captions in the style of the synthetic flowers (~17 tokens each).

    Distinct on purpose: a throughput figure on repeated captions would measure the dedupe.
    """
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    while len(seen) < n:
        seen[rng.choice(_TEMPLATES).format(
            p=rng.choice(_SHADES) + rng.choice(COLOURS), q=rng.choice(_SHADES) + rng.choice(COLOURS),
            c=rng.choice(COLOURS), n=rng.choice(_COUNTS), s=rng.choice(_SHAPES), w=rng.choice(_PLACES),
        )] = None
    return list(seen)
