"""Load safetensors files so that a damaged or foreign file is an error that names it.

``safetensors`` reports a truncated or foreign file as ``SafetensorError: header too large``
(or similar) without the path. These helpers check the framing first -- 8-byte header length,
JSON header, every tensor's byte range inside the file, the data region's exact length -- and
say what the file looks like instead (a PyTorch pickle, a zip, an empty file, a truncated copy).
Nothing here unpickles: a pickle payload is recognised by its first bytes and refused.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import torch

_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


class DamagedFileError(ValueError):
    """A weights/checkpoint file that is not valid safetensors; ``path`` and ``reason`` say which
    and why."""

    def __init__(self, path: Path | str, reason: str, hint: str = "") -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: not a valid safetensors file ({reason})" + (f"; {hint}" if hint else ""))


def _looks_like(head: bytes) -> str | None:
    if head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
        return "it is a Python pickle (e.g. torch.save); pickles are refused because loading one can run code"
    if head[:4] == b"PK\x03\x04":
        return "it is a zip archive (e.g. torch.save's format); refused because loading it unpickles"
    if head[:1] in (b"<", b"{") or head[:5] == b"%PDF-":
        return "it looks like a text/HTML/JSON document (a failed download?)"
    return None


def read_header(path: Path | str) -> dict[str, Any]:
    """The parsed JSON header of ``path`` after checking the whole file's framing.

    Raises ``DamagedFileError`` (naming the file) for a missing/empty/truncated/foreign file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise DamagedFileError(path, f"{size} bytes: empty or cut off")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER or 8 + n > size:
                what = _looks_like(head) or f"header length {n} does not fit in its {size} bytes: truncated or not safetensors"
                raise DamagedFileError(path, what)
            raw = f.read(n)
    except OSError as exc:
        raise DamagedFileError(path, f"cannot read it: {exc.strerror or exc}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (UnicodeDecodeError, ValueError) as exc:
        raise DamagedFileError(path, f"header is not valid JSON ({exc})") from None
    data_len = size - 8 - n
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, stop = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise DamagedFileError(path, f"tensor {name!r} has no valid data_offsets") from None
        if not 0 <= begin <= stop <= data_len:
            raise DamagedFileError(path, f"tensor {name!r} lies beyond the end of the file: truncated")
        end = max(end, stop)
    if end != data_len:
        raise DamagedFileError(path, f"data region is {data_len} bytes, tensors need {end}: truncated or padded")
    return header


def metadata(path: Path | str) -> dict[str, str]:
    """The string metadata of a checked safetensors file ({} when it has none)."""
    meta = read_header(path).get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()}


def load_safetensors_checked(path: Path | str, device: str = "cpu") -> dict[str, torch.Tensor]:
    """``safetensors.torch.load_file`` after ``read_header``; any failure names ``path``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    read_header(path)
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise DamagedFileError(path, str(exc)) from None
