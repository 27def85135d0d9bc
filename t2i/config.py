"""Typed, validated params: one pydantic model per params.yaml section (groups nested inside).

A stage calls ``load_section("train")`` before it does any work. An unknown key, a wrong type or
an out-of-range value raises ``ParamsError`` whose message names the dotted key and what is
allowed, so a typo in ``dvc exp run -S train.lrg=...`` fails at once instead of being ignored.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_PARAMS = Path("params.yaml")


class ParamsError(ValueError):
    """Bad params.yaml: the message names the key and what is allowed."""


class Section(BaseModel):
    # extra="forbid": unknown keys are errors, not silently ignored typos.
    model_config = ConfigDict(extra="forbid", frozen=True)


S = TypeVar("S", bound="Section")
Resolution = Literal[32, 64, 128, 256]
Device = Literal["auto", "cpu", "cuda"]


class IngestParams(Section):
    dataset: Literal["synthetic", "oxford102", "cub", "coco", "folder"] = "synthetic"
    root: str | None = None
    resolution: Resolution = 32
    seed: int = 0
    num_images: int = Field(4000, ge=8, le=10_000_000)
    captions_per_image: int = Field(4, ge=1, le=20)
    test_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    unseen_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    max_images: int | None = Field(None, ge=1)
    captions_file: str = "captions.csv"
    cub_crop: bool = True
    max_bad_fraction: float = Field(0.05, ge=0.0, le=1.0)
    workers: int = Field(2, ge=1, le=256)
    novel_fraction: float = Field(0.2, ge=0.0, lt=1.0)        # synthetic: sentence frames held out as novel_wording
    novel_word_fraction: float = Field(0.01, ge=0.0, lt=1.0)  # synthetic: synonyms only novel_wording uses

    def dataset_root(self) -> Path:
        return Path(self.root) if self.root else Path("data/raw") / self.dataset


class EmbedParams(Section):
    encoder: Literal["use", "tfhub", "bow"] = "use"
    handle: str | None = None
    batch_size: int = Field(512, ge=1, le=65536)
    chunk_size: int = Field(50_000, ge=1)
    threads: int = Field(1, ge=1, le=256)
    device: Device = "auto"
    max_tokens: int = Field(64, ge=1, le=4096)  # token states kept per caption (the sentence vector sees all)


class MatcherParams(Section):
    """The matcher stage (t2i/models/matcher.py): a frozen image-caption scorer for G's loss."""
    seed: int = 0
    steps: int = Field(2000, ge=1)
    batch_size: int = Field(64, ge=2, le=65536)
    candidates: int = Field(32, ge=1, le=64)   # one-word misses per caption
    word_orders: int = Field(5, ge=0, le=16)   # + up to this many same-words-other-order captions
    # + the batch's other captions (CLIP/DAMSM in-batch negatives: they exist for any caption set,
    # where one-word misses exist for a third of the grammar's captions and few human ones)
    batch_negatives: bool = True
    width: int = Field(16, ge=4, le=256)       # trunk channels at full resolution
    device: Device = "auto"
    threads: int | None = Field(None, ge=1, le=256)


class ModelParams(Section):
    """`train.model`: the networks' size and text pathway; each key is a `GANConfig` field."""
    z_dim: int = Field(32, ge=1, le=4096)
    g_width: int = Field(128, ge=8, le=4096)        # G channels at 4x4, halved per upsampling ...
    g_min_width: int = Field(16, ge=4, le=4096)     # ... down to this floor
    d_width: int = Field(16, ge=8, le=4096)         # D channels at full resolution, doubled per downsampling
    attention: list[int] = Field(default_factory=lambda: [8])  # resolutions with a residual attention module
    conditioning: Literal["affine", "cbn"] = "cbn"
    d_conditioning: Literal["projection", "concat"] = "projection"
    text_norm: Literal["scale", "whiten"] = "whiten"
    whiten_eps: float = Field(1e-3, gt=0.0, le=1.0)  # whitening damping: a fraction of the largest eigenvalue
    # Word-level text (t2i/models/word_attention.py, word_match.py, caption_code.py); off by itself
    # where the encoder stores no token states (encoder.json "token_states": false). The default
    # reads the words through the caption code alone: the word modules on top of it follow the
    # hand-written probe captions better on 3 seeds (docs/results/words.md) at ~20-26% of the
    # step, which takes the default repro past its 20-minute budget (docs/model.md).
    word_attention: list[int] = Field(default_factory=list)  # G resolutions attending over the tokens
    d_word_match: bool = False             # D adds a DAMSM-style word-region score to its logit
    word_match_resolution: int = 8         # D feature map whose regions the words are matched against
    token_pca: int = Field(64, ge=0, le=4096)  # token states reduced to this many PCA dims (0 = raw)
    caption_code: bool = True              # G and D read the matcher's frozen caption code beside the sentence

    @field_validator("attention", "word_attention")
    @classmethod
    def _attention_resolutions(cls, v: list[int]) -> list[int]:
        bad = [r for r in v if r not in (4, 8, 16, 32, 64, 128, 256)]
        if bad:
            raise ValueError(f"attention resolutions must be powers of two in 4..256, got {bad}")
        return sorted(set(v))


class LossParams(Section):
    """`train.loss`: the GAN losses (t2i/train/losses.py) and the negatives they draw
    (t2i/train/negatives.py). The one set of loss defaults."""
    kind: Literal["hinge", "bce"] = "hinge"
    ma_gp_weight: float = Field(0.0, ge=0.0)  # matching-aware gradient penalty (DF-GAN); 0 = off
    ma_gp_every: int = Field(4, ge=1)         # lazy: the penalty on every N-th D step only, N times as strong
    mismatch_weight: float = Field(1.0, ge=0.0)  # real images with a wrong caption, as D negatives
    # Weight of one-word-miss captions of other images among the wrong captions, against 1 for
    # word-order swaps and 1 for random captions: 1 = a third.
    near_miss: float = Field(1.0, ge=0.0, le=1e6)
    near_miss_pool: int = Field(8, ge=1, le=64)  # hard negatives: D's best match among this many misses
    diversity_weight: float = Field(0.2, ge=0.0)  # mode-seeking term (MSGAN): noise must matter
    diversity_pairs: float = Field(0.5, gt=0.0, le=0.5)  # share of the batch whose caption repeats with new noise
    # Cross-entropy of each image's caption against K one-word misses, for D (real) and G (fakes).
    contrastive_d: float = Field(1.0, ge=0.0, le=1e3)  # its weight in D's loss (real images)
    contrastive_g: float = Field(0.5, ge=0.0, le=1e3)  # its weight in G's loss (fakes, through D)
    contrastive_candidates: int = Field(32, ge=1, le=64)  # K
    contrastive_word_order: int = Field(5, ge=0, le=16)  # + up to this many same-words-other-order captions
    contrastive_captions: int = Field(4, ge=1, le=16)  # captions of each real image in D's term (its other ones too)
    # G's cross-entropy against the same candidates under the frozen matcher (the `matcher` stage); 0 = off
    matcher_weight: float = Field(1.0, ge=0.0, le=1e3)
    # Hard negatives for any caption set (t2i/train/nearest.py): the nearest other-image captions in
    # sentence space join the one-word misses (which exist only where captions share frames).
    nearest_negatives: bool = False  # off: 27% of them state the same attributes on the grammar (docs/results/words.md)
    swap_candidate: bool = True  # each caption's word-order swap is one more contrastive candidate

    @field_validator("near_miss", mode="before")
    @classmethod
    def _near_miss_is_a_weight(cls, v: Any) -> Any:
        if isinstance(v, bool):  # YAML `true` would otherwise pass as the weight 1.0
            raise ValueError(f"near_miss is a weight (0 = off, 1 = a third of the wrong captions), got {v}")
        return v


class OptimParams(Section):
    """`train.optim`: Adam for G and D, and G's exponential moving average."""
    lr_g: float = Field(5e-4, gt=0.0, le=1.0)
    lr_d: float = Field(1e-3, gt=0.0, le=1.0)
    beta1: float = Field(0.0, ge=0.0, lt=1.0)
    beta2: float = Field(0.9, ge=0.0, lt=1.0)
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0)


class TrainParams(Section):
    """The `train` section: every key changes what training writes (dvc.yaml tracks it whole)."""
    seed: int = 0
    steps: int = Field(3000, ge=1)
    batch_size: int = Field(64, ge=2, le=65536)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = True
    checkpoint_every: int = Field(250, ge=1)
    sample_every: int = Field(250, ge=1)
    log_every: int = Field(25, ge=1)
    model: ModelParams = Field(default_factory=ModelParams)
    loss: LossParams = Field(default_factory=LossParams)
    optim: OptimParams = Field(default_factory=OptimParams)


class TrainRuntimeParams(Section):
    """The `train_runtime` section: where training runs. Speed only, so dvc.yaml leaves it untracked."""
    device: Device = "auto"
    threads: int | None = Field(None, ge=1, le=256)  # torch CPU threads (None = the cores other processes leave free)


class EvaluateParams(Section):
    seed: int = 0
    max_captions: int = Field(600, ge=2)
    noise_samples: int = Field(8, ge=1, le=64)
    classifier_steps: int = Field(600, ge=1)
    diversity_captions: int = Field(8, ge=1)
    diversity_samples: int = Field(16, ge=2)
    rprecision_candidates: int = Field(100, ge=2)
    inception_weights: str | None = None
    device: Device = "auto"


SECTIONS: dict[str, type[Section]] = {
    "ingest": IngestParams,
    "embed": EmbedParams,
    "matcher": MatcherParams,
    "train": TrainParams,
    "train_runtime": TrainRuntimeParams,
    "evaluate": EvaluateParams,
}


def _unknown(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], allowed, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown key '{key}'{hint}; allowed: {', '.join(sorted(allowed))}"


def _group_at(cls: type[Section], loc: tuple[Any, ...]) -> type[Section]:
    """The group model that holds the key at ``loc`` (``("loss", "kind")`` -> LossParams)."""
    for part in loc[:-1]:
        field = cls.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, Section)):
            break
        cls = field.annotation
    return cls


def _group_hint(section: str, cls: type[Section], loc: tuple[Any, ...]) -> str | None:
    """A key given at the section level that belongs to one of its groups: name where it goes."""
    if len(loc) != 1:
        return None
    for group, field in cls.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, Section) and loc[0] in kind.model_fields:
            return f"unknown key '{section}.{loc[0]}': it belongs to a group, '{section}.{group}.{loc[0]}'"
    return None


def _format(section: str, cls: type[Section], err: ValidationError, source: Path) -> str:
    lines = []
    for e in err.errors():
        key = ".".join([section, *map(str, e["loc"])])
        if e["type"] == "extra_forbidden":
            lines.append(_group_hint(section, cls, e["loc"]) or _unknown(key, list(_group_at(cls, e["loc"]).model_fields)))
        else:
            lines.append(f"'{key}': {e['msg']} (got {e.get('input')!r})")
    return f"{source}: invalid params:\n  " + "\n  ".join(lines)


def read_params(path: Path | str = DEFAULT_PARAMS) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found: run the stage from the project root")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    unknown = [k for k in raw if k not in SECTIONS]
    if unknown:
        raise ParamsError(f"{path}: " + "; ".join(_unknown(k, list(SECTIONS)) for k in unknown))
    return raw


def validate_section(name: str, values: dict[str, Any] | None, source: Path | str = "params") -> Section:
    cls = SECTIONS[name]
    if values is not None and not isinstance(values, dict):
        raise ParamsError(f"{source}: section '{name}' must be a mapping, got {values!r}")
    try:
        return cls.model_validate(values or {})
    except ValidationError as exc:
        raise ParamsError(_format(name, cls, exc, Path(source))) from None


def load_section(name: str, path: Path | str = DEFAULT_PARAMS) -> Any:
    """Validated params of one stage; the other sections are only checked for unknown names."""
    if name not in SECTIONS:
        raise ParamsError(_unknown(name, list(SECTIONS)))
    return validate_section(name, read_params(path).get(name), path)


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` laid on top, nested mappings key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merged(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def updated(params: S, changes: dict[str, Any]) -> S:
    """``params`` with ``changes`` merged in (``{"loss": {"kind": "bce"}}`` keeps the other loss
    keys), validated like params.yaml: a bad key or value raises pydantic's ValidationError."""
    return type(params).model_validate(merged(params.model_dump(), changes))


def load_all(path: Path | str = DEFAULT_PARAMS) -> dict[str, Section]:
    raw = read_params(path)
    return {name: validate_section(name, raw.get(name), path) for name in SECTIONS}
