"""Decode real images once, in parallel: optional box crop, centre square crop, resize.

A file that cannot be decoded (missing, not an image, truncated) yields a reason string instead
of an array; the caller lists it in manifest.json rather than crashing on item 40,000 of 80,000.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile
from tqdm import tqdm

# Truncated files must fail loudly: a half-grey image would silently become training data.
ImageFile.LOAD_TRUNCATED_IMAGES = False

Box = tuple[float, float, float, float]  # (x, y, width, height) in original pixels


def square_around(box: Box, width: int, height: int, scale: float = 1.5) -> Box:
    """Square of ``scale`` x the box's longer side, centred on it, clipped to the image.

    The bird-crop convention of the CUB text-to-image literature (StackGAN/AttnGAN: 1.5x).
    """
    x, y, w, h = box
    side = min(max(w, h) * scale, width, height)
    cx, cy = x + w / 2, y + h / 2
    left = min(max(cx - side / 2, 0.0), width - side)
    top = min(max(cy - side / 2, 0.0), height - side)
    return (left, top, side, side)


def load_image(path: Path | str, resolution: int, box: Box | None = None) -> np.ndarray | str:
    """``(R, R, 3)`` uint8 RGB, or the reason it could not be read.

    ``box`` is an object's bounding box: the crop is ``square_around(box)``. Otherwise the
    centre square of the whole image is kept (no aspect distortion).
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
            # An object box becomes a square around the object; no box: the whole image.
            full = (0.0, 0.0, float(width), float(height))
            region = square_around(box, width, height) if box is not None else full
            side = min(region[2], region[3])
            if side < 1:
                return f"empty crop box {box}"
            # JPEG only: decode at a reduced DCT scale that still leaves >= R px in the crop.
            want = (math.ceil(width * resolution / side), math.ceil(height * resolution / side))
            img.draft("RGB", want)
            img.load()
            scale = img.size[0] / width  # draft may have shrunk the image
            rgb = img.convert("RGB")
    except FileNotFoundError:
        return "file not found"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        # OSError covers UnidentifiedImageError (not an image) and truncated data.
        return f"unreadable image: {exc}"
    x, y, w, h = (v * scale for v in region)
    s = min(w, h)  # centre square of the region: no aspect distortion
    left, top = x + (w - s) / 2, y + (h - s) / 2
    square = rgb.resize(
        (resolution, resolution), Image.Resampling.LANCZOS, box=(left, top, left + s, top + s)
    )
    return np.asarray(square, dtype=np.uint8)  # (R, R, 3)


def _load(job: tuple[str, int, Box | None]) -> np.ndarray | str:
    return load_image(*job)


def iter_images(
    paths: list[Path], resolution: int, workers: int, boxes: list[Box | None] | None = None,
    desc: str = "decoding images",
) -> Iterator[np.ndarray | str]:
    """``load_image`` over all paths with ``workers`` processes, in order, with a progress bar.

    A generator, so the caller can write each image into a preallocated array and never hold
    a second copy of the whole dataset.
    """
    jobs = [(str(p), resolution, boxes[i] if boxes else None) for i, p in enumerate(paths)]
    with tqdm(total=len(jobs), desc=desc, unit="img") as bar:
        if workers <= 1 or len(jobs) < 2:
            for job in jobs:
                yield _load(job)
                bar.update()
            return
        with multiprocessing.get_context().Pool(workers) as pool:
            for result in pool.imap(_load, jobs, chunksize=16):
                yield result
                bar.update()
