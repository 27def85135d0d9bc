"""``tfhub``: an official USE (v4 DAN, v5 large Transformer, ...) loaded with ``tensorflow_hub``.

``handle`` is a local SavedModel directory (works offline) or a TF-Hub/Kaggle URL (downloaded
into ``$TFHUB_CACHE_DIR`` on first use). TensorFlow is imported here and only here: importing it
costs ~5 s and ~850 MB, which the other encoders and stages must not pay. It is an optional extra:
``pip install "t2i[tfhub]"``.

The model is called as ``model(tf.constant(list_of_str))`` and must return ``(n, D)`` floats (a
dict output with ``outputs``/``default`` is accepted). Rows are L2-normalised like the other
encoders' (USE outputs are already close to unit norm).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from t2i.text.base import EncoderError, SentenceEncoder, batches, l2_normalise

INSTALL_HINT = 'pip install "t2i[tfhub]"  (tensorflow + tensorflow-hub; setuptools<81)'


def _import_tf() -> tuple[Any, Any]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ start-up chatter hides our bar
    try:
        import tensorflow as tf
        import tensorflow_hub as hub
    except ImportError as exc:
        raise EncoderError(
            f"embed.encoder=tfhub needs TensorFlow and tensorflow-hub ({exc}). Install them with:"
            f"  {INSTALL_HINT}"
        ) from exc
    return tf, hub


def _offline_message(handle: str, exc: BaseException) -> str:
    cache = os.environ.get("TFHUB_CACHE_DIR", "<TFHUB_CACHE_DIR>")
    return (
        f"could not load TF-Hub handle {handle!r}: {type(exc).__name__}: {exc}\n"
        "This machine seems to be offline (or the handle is wrong). Download the model where you "
        "have a network (for tfhub.dev/Kaggle: the 'tf2' SavedModel archive), unpack it to a "
        "directory that holds saved_model.pb, and set embed.handle to that directory, e.g.\n"
        "  dvc exp run -S embed.encoder=tfhub -S embed.handle=/path/to/universal-sentence-encoder_4\n"
        f"(or unpack it to {cache}/{hashlib.sha1(handle.encode()).hexdigest()} and keep the URL)."
    )


def _to_array(out: Any) -> np.ndarray:
    if isinstance(out, dict):
        key = next((k for k in ("outputs", "default") if k in out), None)
        if key is None:
            raise EncoderError(f"TF-Hub model returned a dict without 'outputs'/'default': {list(out)}")
        out = out[key]
    arr = np.asarray(out, dtype=np.float32)
    if arr.ndim != 2:
        raise EncoderError(f"TF-Hub model must return (n, D) vectors, got shape {arr.shape}")
    return arr


class TfHubEncoder(SentenceEncoder):
    name = "tfhub"

    def __init__(self, handle: str | None, threads: int = 1, batch_size: int = 256) -> None:
        if not handle:
            raise EncoderError(
                "embed.encoder=tfhub needs embed.handle: a local SavedModel directory or a "
                "TF-Hub/Kaggle URL, e.g. https://tfhub.dev/google/universal-sentence-encoder/4"
            )
        tf, hub = _import_tf()
        try:  # must happen before TF starts its runtime; later calls raise RuntimeError
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            pass  # already initialised in this process (a second encoder): keep its setting
        local = Path(handle).expanduser()
        is_remote = "://" in handle or not local.exists()
        if is_remote and "://" not in handle and handle.startswith(("/", ".", "~")):
            raise EncoderError(f"embed.handle {handle!r}: no such directory")
        if not is_remote and not (local / "saved_model.pb").exists():
            raise EncoderError(f"embed.handle {handle!r} is a directory without saved_model.pb")
        try:
            self.model = hub.load(handle if is_remote else str(local))
        except OSError as exc:  # urllib's URLError is an OSError: offline, DNS, HTTP errors
            raise EncoderError(_offline_message(handle, exc)) from exc
        except ValueError as exc:  # tensorflow_hub: a handle it cannot resolve
            raise EncoderError(f"embed.handle {handle!r} is not a TF-Hub handle: {exc}") from exc
        self._tf = tf
        self.handle = handle
        self.batch_size = batch_size
        self.version = f"tensorflow_hub-{hub.__version__}"
        self.dim = int(self._run(["a flower"]).shape[1])

    def _run(self, texts: list[str]) -> np.ndarray:
        return _to_array(self.model(self._tf.constant(texts, dtype=self._tf.string)))

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)  # (n, D)
        for i, batch in enumerate(batches(list(texts), self.batch_size)):
            out[i * self.batch_size:i * self.batch_size + len(batch)] = self._run(batch)
        return l2_normalise(out)
