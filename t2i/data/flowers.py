"""Procedural flowers: the ground-truth attributes and how one flower is drawn.

A flower is drawn on a canvas 4x the target resolution (at least 128 px) and downsized once with
a box filter, which anti-aliases the polygon edges. Petals, centre and stem are kept large enough
that every attribute stays readable at 32 px: the evaluate stage's classifier must read them from
generated images. Backgrounds are desaturated mid-tones so they never look like a palette colour.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# Saturated, well-separated hues plus white and brown; distinguishable after a 4x downsize.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 20, 30),
    "orange": (255, 140, 0),
    "yellow": (255, 230, 20),
    "green": (40, 170, 40),
    "cyan": (0, 200, 220),
    "blue": (30, 60, 220),
    "purple": (130, 30, 180),
    "pink": (255, 130, 200),
    "white": (245, 245, 245),
    "brown": (120, 65, 20),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
PETAL_COUNTS: tuple[int, ...] = (3, 5, 8)  # few, far-apart classes: countable at 32 px
PETAL_SHAPES: tuple[str, ...] = ("round", "pointed")

# Every ground-truth attribute and its classes, in the order the caption table stores them.
ATTRIBUTES: dict[str, tuple] = {
    "petal_color": COLORS,
    "center_color": COLORS,
    "stem_color": COLORS,
    "petal_count": PETAL_COUNTS,
    "petal_shape": PETAL_SHAPES,
}


@dataclass(frozen=True)
class Flower:
    petal_color: str
    center_color: str
    stem_color: str
    petal_count: int
    petal_shape: str


def canvas_size(resolution: int) -> int:
    return max(128, 4 * resolution)


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    # Low saturation, mid value: never mistaken for white, brown or any palette hue.
    h, s, v = rng.uniform(0, 1), rng.uniform(0.0, 0.25), rng.uniform(0.35, 0.6)
    base = np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0
    # Low-frequency texture: a few random blobs of +-amp, upsampled smoothly.
    cells = int(rng.integers(3, 9))
    amp = rng.uniform(5.0, 25.0)
    noise = rng.normal(0.0, amp, size=(cells, cells, 3)) + base  # (cells, cells, 3)
    small = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8))
    return small.resize((size, size), Image.Resampling.BILINEAR)


def _petal(shape: str, n: int, length: float, angle: float, cx: float, cy: float) -> list[tuple[float, float]]:
    """Polygon of one petal pointing along ``angle`` from the flower centre."""
    r0 = 0.15 * length
    half_width = length * min(0.45, 0.95 * math.sin(math.pi / n))  # wider when fewer petals
    if shape == "round":
        t = np.linspace(0, 2 * math.pi, 28, endpoint=False)
        along = (r0 + length) / 2 + (length - r0) / 2 * np.cos(t)
        across = half_width * np.sin(t)
    else:  # pointed: a kite whose sharp tip points outwards
        along = np.array([r0, 0.5 * length, length, 0.5 * length])
        across = np.array([0.0, half_width, 0.0, -half_width])
    c, s = math.cos(angle), math.sin(angle)
    xs = cx + along * c - across * s
    ys = cy + along * s + across * c
    return list(zip(xs.tolist(), ys.tolist()))


def draw_flower(flower: Flower, resolution: int, rng: np.random.Generator) -> np.ndarray:
    """One flower, nuisance (position, scale, rotation, lean, background) drawn from ``rng``.

    Returns ``(resolution, resolution, 3)`` uint8 RGB.
    """
    size = canvas_size(resolution)
    img = _background(rng, size)
    draw = ImageDraw.Draw(img)
    length = rng.uniform(0.20, 0.28) * size  # petal length: head diameter 40-56% of the image
    cx = rng.uniform(0.35, 0.65) * size
    cy = rng.uniform(0.24, 0.40) * size  # head stays in the upper part: stem always visible
    rotation = rng.uniform(0, 2 * math.pi)
    stem, width = PALETTE[flower.stem_color], max(2, round(0.09 * size))
    bottom_x = cx + rng.uniform(-0.15, 0.15) * size
    draw.line([(cx, cy), (bottom_x, size)], fill=stem, width=width)
    # A leaf on the stem, same colour: more stem pixels for the classifier to read.
    t = rng.uniform(0.55, 0.8)
    lx, ly = cx + (bottom_x - cx) * t, cy + (size - cy) * t
    tilt = rng.uniform(0.3, 0.7)  # radians above horizontal (image y points down)
    leaf_angle = -tilt if rng.uniform() < 0.5 else math.pi + tilt
    draw.polygon(_petal("pointed", 3, 0.22 * size, leaf_angle, lx, ly), fill=stem)
    petal = PALETTE[flower.petal_color]
    for k in range(flower.petal_count):
        angle = rotation + 2 * math.pi * k / flower.petal_count
        draw.polygon(_petal(flower.petal_shape, flower.petal_count, length, angle, cx, cy), fill=petal)
    r = 0.3 * length
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=PALETTE[flower.center_color])
    small = img.resize((resolution, resolution), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.uint8)  # (R, R, 3)
