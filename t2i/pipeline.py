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

Words: a model with word attention (``GANConfig.word_attention``) also gets each caption's
per-token states, from the same encoder call as its sentence vector (``encode_tokens``), or from
the embed stage's token store for captions it was told about (``remember``). They are passed as
float16, the precision the embed stage stores and training reads, and padded to a fixed width
(the embed stage's ``max_tokens``), so a caption's image does not depend on the other captions
of a batch. A sentence-only model never computes them: it draws exactly what it drew before.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from PIL import Image

from t2i.device import pick_device
from t2i.models.config import GANConfig
from t2i.models.io import ModelNotFoundError, read_config, read_generator, resolve_model_dir
from t2i.text.base import MAX_TOKENS

__all__ = ["CaptionText", "GenerationPipeline", "ModelNotFoundError", "image_seeds", "noise", "to_uint8"]

DEFAULT_ENCODER = {"name": "use"}  # configs saved without an encoder section were trained on USE
MAX_PER_CAPTION = 64
MAX_IMAGES = 256
BATCH_SIZE = 256  # generator forward passes: bounds memory, not results
TOKEN_DTYPE = np.float16  # what the embed stage stores and training reads


class TokenSource(Protocol):
    """Stored token states row-aligned with remembered captions (``t2i.text.token_store.TokenStore``)."""

    def __len__(self) -> int: ...

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, T, D) float16 and (B, T) bool for rows ``rows``."""
        ...


class CaptionText(NamedTuple):
    """What the generator reads of a batch of captions."""

    sentence: np.ndarray  # (n, D) float32 sentence vectors
    tokens: np.ndarray | None  # (n, T, token_dim) float16, zero past each caption; None: sentence only
    mask: np.ndarray | None  # (n, T) bool, True on a caption's tokens


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
        self._encoder_lock = threading.Lock()  # a server may call from several threads at once
        # Remembered captions: caption -> (source, row); source k is (vectors (m, D), tokens or None).
        self._stored_rows: dict[str, tuple[int, int]] = {}
        self._sources: list[tuple[np.ndarray, TokenSource | None]] = []
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

    @property
    def uses_tokens(self) -> bool:
        """Whether the generator reads per-token states (word attention), not only sentence vectors."""
        return bool(self.config.word_attention) or (self.config.caption_code and self.config.code_token_dim > 0)

    @property
    def token_width(self) -> int:
        """T of every token batch: the embed stage's ``max_tokens`` (what the model was trained on)."""
        return int(self.encoder_info.get("max_tokens") or MAX_TOKENS)

    def remember(self, captions: Sequence[str], vectors: np.ndarray, tokens: TokenSource | None = None) -> None:
        """Use stored sentence vectors (rows of data/embeddings) for these captions instead of
        encoding them again: the evaluate stage's captions, exactly as training saw them.

        ``tokens`` (a ``TokenStore`` row-aligned with ``captions``) serves their token states to a
        word-attention model; without it they are encoded when needed. Several calls add up (the
        caption table, then its swaps); a caption given twice keeps its latest rows.
        """
        if len(captions) != len(vectors):
            raise ValueError(f"{len(captions)} captions but {len(vectors)} vectors")
        if tokens is not None and len(tokens) != len(captions):
            raise ValueError(f"{len(captions)} captions but token states for {len(tokens)}: "
                             "data/embeddings is stale; run `dvc repro embed`")
        if len(vectors) and vectors.shape[1] != self.config.text_dim:
            raise ValueError(f"stored vectors are {vectors.shape[1]}-d but the generator expects "
                             f"{self.config.text_dim}-d: they come from another encoder; run `dvc repro`")
        k = len(self._sources)
        self._sources.append((vectors, tokens))
        self._stored_rows.update({c: (k, i) for i, c in enumerate(captions)})

    def _get_encoder(self) -> Any:
        with self._encoder_lock:
            if self._encoder is None:
                self._encoder = self._encoder_factory()
        return self._encoder

    def encode(self, captions: Sequence[str]) -> np.ndarray:
        """(n,) captions -> (n, D) float32 sentence vectors (stored ones where remembered)."""
        return self.encode_text(captions, tokens=False).sentence

    def encode_text(self, captions: Sequence[str], tokens: bool | None = None) -> CaptionText:
        """Sentence vectors, and for a word-attention model (or ``tokens=True``) token states + mask
        padded to ``token_width``: stored ones where remembered, the rest from the encoder."""
        want_tokens = self.uses_tokens if tokens is None else tokens
        n = len(captions)
        sentence = np.empty((n, self.config.text_dim), np.float32)  # (n, D)
        tok = np.zeros((n, self.token_width, self.config.token_dim), TOKEN_DTYPE) if want_tokens else None
        mask = np.zeros((n, self.token_width), bool) if want_tokens else None
        todo: list[int] = []  # rows the encoder must fill (sentence and/or tokens)
        per_source: dict[int, list[tuple[int, int]]] = {}
        for i, c in enumerate(captions):
            where = self._stored_rows.get(c)
            if where is None:
                todo.append(i)
                continue
            sentence[i] = self._sources[where[0]][0][where[1]]
            if want_tokens:
                per_source.setdefault(where[0], []).append((i, where[1]))
        for k, pairs in per_source.items():
            store = self._sources[k][1]
            if store is None:
                todo += [i for i, _ in pairs]  # stored vector, tokens still to encode
                continue
            out_rows, rows = (np.array(v, dtype=np.int64) for v in zip(*pairs))
            t, m = store.gather(rows)  # (b, T_store, D), (b, T_store)
            self._put(tok, mask, out_rows, t, m)
        if todo:
            rows = np.array(sorted(set(todo)), dtype=np.int64)
            fresh = self._encode_missing([captions[i] for i in rows], want_tokens)
            new = np.array([captions[i] not in self._stored_rows for i in rows], bool)
            sentence[rows[new]] = fresh.sentence[new]  # a stored sentence vector stays as training saw it
            if fresh.tokens is None:  # a sentence-only encoder: the whole batch goes without words
                tok = mask = None
            else:
                self._put(tok, mask, rows, fresh.tokens, fresh.mask)
        return CaptionText(sentence, tok, mask)

    def _put(self, tok: np.ndarray | None, mask: np.ndarray | None, rows: np.ndarray, t: np.ndarray,
             m: np.ndarray) -> None:
        """Copy (b, T', D) token states into rows of the (n, T, D) batch; T' may be below T."""
        if tok is None or mask is None:
            return
        width = min(t.shape[1], tok.shape[1])
        if m[:, width:].any():
            raise ValueError(f"token states of {t.shape[1]} > token_width {tok.shape[1]}: "
                             "data/embeddings was made with another embed.max_tokens; run `dvc repro`")
        tok[rows, :width] = t[:, :width]
        mask[rows, :width] = m[:, :width]

    def _encode_missing(self, captions: list[str], want_tokens: bool) -> CaptionText:
        """The encoder's sentence vectors (and token states) for captions nobody stored."""
        encoder = self._get_encoder()
        if not want_tokens:
            return CaptionText(encoder.encode(captions), None, None)
        if not getattr(encoder, "token_states", False):
            warnings.warn(f"encoder {self.encoder_name!r} is sentence-only: the model's word attention is "
                          "skipped and it draws from the sentence vector alone", stacklevel=3)
            return CaptionText(encoder.encode(captions), None, None)
        states = encoder.encode_tokens(captions, max_tokens=self.token_width)
        return CaptionText(states.sentence, states.tokens.astype(TOKEN_DTYPE), states.mask)

    # -- images ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_with_seeds(self, captions: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        """uint8 (n, R, R, 3): image i of captions[i] with noise seed seeds[i]. No size limit
        (batched); the evaluation's image source."""
        if len(captions) != len(seeds):
            raise ValueError(f"{len(captions)} captions but {len(seeds)} seeds")
        if not len(captions):
            return np.zeros((0, self.resolution, self.resolution, 3), np.uint8)
        text = self.encode_text(list(captions))
        sentence = torch.from_numpy(text.sentence)  # (n, D)
        z = noise(seeds, self.config.z_dim)  # (n, z_dim)
        out = []
        for s in range(0, len(captions), BATCH_SIZE):
            cut = slice(s, s + BATCH_SIZE)
            words = {}
            if text.tokens is not None and text.mask is not None:
                words = {"tokens": torch.from_numpy(text.tokens[cut]).to(self.device),  # (b, T, token_dim)
                         "token_mask": torch.from_numpy(text.mask[cut]).to(self.device)}  # (b, T)
            out.append(to_uint8(self.generator(z[cut].to(self.device), sentence[cut].to(self.device), **words)))
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
