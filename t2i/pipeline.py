"""The one generation pipeline: captions in, images out, from a trained generator.

    from t2i.pipeline import GenerationPipeline
    pipe = GenerationPipeline.from_pretrained("models")        # or "runs:/<id>", "models:/t2i@prod"
    images = pipe(["a red flower with a yellow stem"], seed=0, n=4)   # 4 PIL images

In the spirit of diffusers' pipelines it only runs inference: it loads the EMA generator's
safetensors weights and config.json (nothing is unpickled), encodes captions with the encoder
named in that config (the bundled USE when the config names none), draws the noise from the seed
and returns images. `t2i generate`, `t2i probe` and the evaluate stage all generate through it.

Noise: image j of every caption uses the j-th of ``n`` seeds drawn from ``seed``, so the columns
of a caption grid share their noise and a row-to-row change is the text's doing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from t2i.device import pick_device
from t2i.models.config import GANConfig
from t2i.models.io import ModelNotFoundError, read_config, read_generator, resolve_model_dir

__all__ = ["GenerationPipeline", "ModelNotFoundError", "image_seeds", "noise", "to_uint8"]

DEFAULT_ENCODER = {"name": "use"}  # configs saved without an encoder section were trained on USE
MAX_PER_CAPTION = 64
MAX_IMAGES = 256
BATCH_SIZE = 256  # generator forward passes: bounds memory, not results


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, R, R) in [-1, 1] -> uint8 (B, R, R, 3)."""
    x = ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def noise(seeds: Sequence[int], z_dim: int) -> torch.Tensor:
    """(n, z_dim) standard normal, row i a function of seeds[i] alone: the same caption and seed
    give the same image whatever else is in the batch."""
    return torch.from_numpy(np.stack([
        np.random.default_rng(int(s)).standard_normal(z_dim).astype(np.float32) for s in seeds
    ]).reshape(len(seeds), z_dim))


def image_seeds(seed: int, n: int) -> list[int]:
    """The ``n`` per-image noise seeds that ``seed`` stands for."""
    return np.random.default_rng(seed).integers(0, 2**31 - 1, n).tolist()


class GenerationPipeline:
    """A trained generator, its text encoder and its noise: ``pipe(captions, seed, n)``."""

    max_per_caption = MAX_PER_CAPTION
    max_images = MAX_IMAGES  # one call's upper bound: more is a ValueError (split the request)

    def __init__(self, generator: torch.nn.Module, config: dict[str, Any], device: torch.device,
                 encoder_factory: Callable[[], Any] | None = None) -> None:
        self.generator = generator.to(device).eval()
        self.config = GANConfig.from_dict(config["model"])
        self.saved = config  # the whole config.json: model, encoder, train, step
        self.device = device
        self.encoder_info: dict[str, Any] = dict(config.get("encoder") or DEFAULT_ENCODER)
        self._encoder_factory = encoder_factory or self._build_encoder
        self._encoder: Any = None
        self._stored_rows: dict[str, int] = {}  # caption -> row of self._stored
        self._stored = np.zeros((0, self.config.text_dim), np.float32)
        dim = self.encoder_info.get("dim")
        if dim is not None and int(dim) != self.config.text_dim:
            raise ValueError(f"model config is inconsistent: encoder dim {dim} != generator "
                             f"text_dim {self.config.text_dim}")

    @classmethod
    def from_pretrained(cls, source: str | Path, device: str | torch.device = "auto") -> GenerationPipeline:
        """Load from a models/ directory (or its weights file), ``runs:/<run_id>[/<path>]``,
        ``models:/<name>@<alias>`` or ``models:/<name>/<version>``.

        Raises ``ModelNotFoundError`` (a FileNotFoundError) naming the source and the missing
        file, ``ValueError`` for a config or weights file that cannot be used.
        """
        dev = device if isinstance(device, torch.device) else pick_device(device)
        directory = resolve_model_dir(source)
        config = read_config(directory)
        return cls(read_generator(directory, config, dev), config, dev)

    # -- what the model is -------------------------------------------------------------------
    @property
    def resolution(self) -> int:
        return int(self.config.resolution)

    @property
    def encoder_name(self) -> str:
        return str(self.encoder_info["name"])

    @property
    def step(self) -> int | None:
        return self.saved.get("step")

    # -- text --------------------------------------------------------------------------------
    def _build_encoder(self) -> Any:
        from t2i.text import encoder_from_info

        encoder = encoder_from_info(self.encoder_info, device=self.device.type)
        if int(encoder.dim) != self.config.text_dim:
            raise ValueError(f"encoder {self.encoder_name!r} gives {encoder.dim}-d vectors but the generator "
                             f"was trained on {self.config.text_dim}-d ones: use the encoder it was trained with")
        return encoder

    def remember(self, captions: Sequence[str], vectors: np.ndarray) -> None:
        """Use stored sentence vectors (rows of data/embeddings) for these captions instead of
        encoding them again: the evaluate stage's captions, exactly as training saw them."""
        if len(captions) != len(vectors):
            raise ValueError(f"{len(captions)} captions but {len(vectors)} vectors")
        if len(vectors) and vectors.shape[1] != self.config.text_dim:
            raise ValueError(f"stored vectors are {vectors.shape[1]}-d but the generator expects "
                             f"{self.config.text_dim}-d: they come from another encoder; run `dvc repro`")
        self._stored_rows = {c: i for i, c in enumerate(captions)}
        self._stored = vectors

    def encode(self, captions: Sequence[str]) -> np.ndarray:
        """(n,) captions -> (n, D) float32 sentence vectors (stored ones where remembered)."""
        out = np.empty((len(captions), self.config.text_dim), np.float32)  # (n, D)
        missing = [i for i, c in enumerate(captions) if c not in self._stored_rows]
        for i, c in enumerate(captions):
            if c in self._stored_rows:
                out[i] = self._stored[self._stored_rows[c]]
        if missing:
            if self._encoder is None:
                self._encoder = self._encoder_factory()
            out[missing] = self._encoder.encode([captions[i] for i in missing])
        return out

    # -- images ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_with_seeds(self, captions: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        """uint8 (n, R, R, 3): image i of captions[i] with noise seed seeds[i]. No size limit
        (batched); the evaluation's image source."""
        if len(captions) != len(seeds):
            raise ValueError(f"{len(captions)} captions but {len(seeds)} seeds")
        if not len(captions):
            return np.zeros((0, self.resolution, self.resolution, 3), np.uint8)
        text = torch.from_numpy(self.encode(list(captions)))  # (n, D)
        z = noise(seeds, self.config.z_dim)  # (n, z_dim)
        out = [to_uint8(self.generator(z[s:s + BATCH_SIZE].to(self.device), text[s:s + BATCH_SIZE].to(self.device)))
               for s in range(0, len(captions), BATCH_SIZE)]
        return np.concatenate(out)  # (n, R, R, 3)

    def _check_request(self, captions: Sequence[str], n: int) -> list[str]:
        if isinstance(captions, str):
            raise TypeError("captions must be a sequence of strings, not one string: pass [caption]")
        captions = [str(c) for c in captions]
        if any(not c.strip() for c in captions):
            raise ValueError("a caption is empty: describe the image, e.g. \"a red flower with a yellow stem\"")
        if not 1 <= n <= self.max_per_caption:
            raise ValueError(f"n must be between 1 and {self.max_per_caption} images per caption, got {n}")
        if len(captions) * n > self.max_images:
            raise ValueError(f"{len(captions)} captions x {n} = {len(captions) * n} images; at most "
                             f"{self.max_images} per call: split the request")
        return captions

    def generate_array(self, captions: Sequence[str], seed: int = 0, n: int = 1) -> np.ndarray:
        """uint8 (len(captions) * n, R, R, 3), caption-major: rows k*n .. k*n+n-1 are caption k."""
        captions = self._check_request(captions, n)
        seeds = image_seeds(seed, n)
        return self.generate_with_seeds([c for c in captions for _ in range(n)], seeds * len(captions))

    def __call__(self, captions: Sequence[str], seed: int = 0, n: int = 1) -> list[Image.Image]:
        """``len(captions) * n`` PIL images, caption-major; the same seed gives the same images."""
        return [Image.fromarray(a) for a in self.generate_array(captions, seed, n)]

    def __repr__(self) -> str:
        return (f"GenerationPipeline(resolution={self.resolution}, encoder={self.encoder_name!r}, "
                f"step={self.step}, device={self.device})")
