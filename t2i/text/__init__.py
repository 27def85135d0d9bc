"""Sentence encoders behind one interface: ``use`` (bundled USE), ``tfhub``, ``bow``.

``get_encoder(name, handle=None, device="auto", threads=1)`` builds one; ``encoder_from_info``
rebuilds the encoder recorded in ``encoder.json``. Heavy imports (TensorFlow, torch) happen only
inside the encoder that needs them.
"""

from __future__ import annotations

from typing import Any

from t2i.text.base import EncoderError, SentenceEncoder

ENCODERS = ("use", "tfhub", "bow")


def get_encoder(
    name: str, handle: str | None = None, device: str = "auto", threads: int = 1, batch_size: int = 512
) -> SentenceEncoder:
    """A ready-to-use encoder. ``device`` matters for ``use``/``bow`` (auto: CUDA when present)."""
    if name == "use":
        from t2i.text.use import UseEncoder

        return UseEncoder(device=device, threads=threads, batch_size=batch_size)
    if name == "bow":
        from t2i.text.bow import BowEncoder

        return BowEncoder(device=device, threads=threads, batch_size=batch_size)
    if name == "tfhub":
        from t2i.text.tfhub import TfHubEncoder

        return TfHubEncoder(handle, threads=threads, batch_size=batch_size)
    raise EncoderError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")


def encoder_from_info(info: dict[str, Any], device: str = "auto", threads: int = 1) -> SentenceEncoder:
    """The encoder an ``encoder.json`` describes; fails if it would give other vectors' size."""
    enc = get_encoder(info["name"], handle=info.get("handle"), device=device, threads=threads)
    if "dim" in info and int(info["dim"]) != enc.dim:
        raise EncoderError(f"encoder.json says dim {info['dim']}, but {enc.name} gives {enc.dim}")
    if info.get("version") not in (None, enc.version):
        import warnings

        warnings.warn(
            f"embeddings were made with {info['name']} {info['version']}; this is {enc.version}",
            stacklevel=2,
        )
    return enc


__all__ = ["ENCODERS", "EncoderError", "SentenceEncoder", "encoder_from_info", "get_encoder"]
