"""The one grid renderer: sample images in rows with each row's caption written beside it.

eval/samples.png, `t2i generate`, `t2i probe` and the training sample grids all draw through
``caption_grid`` (numpy + PIL only, so every layer may use it).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CELL_MIN = 64  # upscale small images so a 32 px flower is visible in a report
TEXT_WIDTH = 300


def _wrap(text: str, width_chars: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width_chars:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return [*lines, line] if line else lines


def caption_grid(images: np.ndarray, captions: Sequence[str], marks: Sequence[str] | None = None) -> Image.Image:
    """uint8 (rows, cols, R, R, 3) -> one PIL image: caption text left, a row of samples right.

    ``marks`` (optional, one per row) is drawn under the caption, e.g. the attribute verdict.
    """
    rows, cols, res = images.shape[0], images.shape[1], images.shape[2]
    cell = max(res, CELL_MIN)
    pad = 2
    canvas = Image.new("RGB", (TEXT_WIDTH + cols * (cell + pad) + pad, rows * (cell + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for r in range(rows):
        y = pad + r * (cell + pad)
        lines = _wrap(captions[r], 44)
        if marks is not None and marks[r]:
            lines.append(marks[r])
        for k, line in enumerate(lines[: max(1, cell // 12)]):
            draw.text((6, y + 2 + 12 * k), line, fill="black", font=font)
        for c in range(cols):
            tile = Image.fromarray(np.ascontiguousarray(images[r, c]))
            if cell != res:
                tile = tile.resize((cell, cell), Image.Resampling.NEAREST)
            canvas.paste(tile, (TEXT_WIDTH + pad + c * (cell + pad), y))
    return canvas


def png_bytes(image: Image.Image) -> bytes:
    """PNG encoding of ``image``; no optimize pass: the same pixels give the same bytes, fast."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
