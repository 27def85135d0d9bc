"""The evaluate stage's work: load model and data, run every metric, write and log the outputs.

``stages/evaluate.py`` only parses arguments and calls ``evaluate``; ``t2i generate`` and
``t2i probe`` reuse ``load_model_source``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from t2i.config import EvaluateParams
from t2i.eval import cache
from t2i.eval.classifier import COLOR_ROLES
from t2i.eval.context import EvalContext
from t2i.eval.grids import caption_grid
from t2i.eval.nets import pick_device
from t2i.eval.registry import MetricResult, run_metrics
from t2i.eval.report import flat_metrics, write_outputs
from t2i.eval.sampling import ModelSource, TextLookup, split_seeds, swap_pairs

log = logging.getLogger(__name__)
GRID_PAIRS = 3  # swapped pairs per split in eval/samples.png


class ModelNotFoundError(FileNotFoundError):
    """No trained generator where one was expected."""


@dataclass
class LoadedModel:
    source: ModelSource
    config: dict[str, Any]
    lookup: TextLookup


def load_model_source(model: str | Path, device: torch.device, captions: list[str] | None = None,
                      vectors: np.ndarray | None = None) -> LoadedModel:
    """Generator + the encoder it was trained with, behind the ImageSource interface.

    Stored vectors (embeddings.npy) are used for captions they cover; anything else is encoded
    by the encoder named in the model's config.json, so `t2i generate` reproduces training's
    text pathway exactly.
    """
    text = str(model)
    if not text.startswith(("runs:/", "models:/", "mlflow-artifacts:/")):
        path = Path(text)
        config_file = path / "config.json" if path.is_dir() or not path.suffix else path.parent / "config.json"
        if not config_file.is_file():
            raise ModelNotFoundError(f"no trained model at {path} (missing {config_file.name}): "
                                     "train one first with `dvc repro` (or `dvc repro train`)")
    from t2i.models import load_generator

    generator, config = load_generator(model, device)
    info = config.get("encoder") or {}
    text_dim = int(config["model"]["text_dim"])
    if info.get("dim") is not None and int(info["dim"]) != text_dim:
        raise ValueError(f"model config is inconsistent: encoder dim {info['dim']} != generator text_dim {text_dim}")

    def make_encoder() -> Any:
        if not info:
            raise ValueError("the model's config.json names no encoder: cannot embed new captions")
        from t2i.text import encoder_from_info

        encoder = encoder_from_info(info, device=device.type)
        if int(encoder.dim) != text_dim:
            raise ValueError(f"encoder {info.get('name')!r} gives {encoder.dim}-d vectors but the generator was "
                             f"trained on {text_dim}-d ones: use the encoder it was trained with")
        return encoder

    if vectors is not None and vectors.shape[1] != text_dim:
        raise ValueError(f"data/embeddings has {vectors.shape[1]}-d vectors but the generator expects {text_dim}-d: "
                         "the embeddings come from another encoder; run `dvc repro`")
    lookup = TextLookup(captions or [], vectors if vectors is not None else np.zeros((0, text_dim), np.float32),
                        make_encoder)
    source = ModelSource(generator, int(config["model"]["z_dim"]), lookup, device)
    return LoadedModel(source, config, lookup)


def data_fingerprint(prepared_dir: Path, embeddings_dir: Path) -> str:
    """Cache key of the judges: the bytes they are trained on (shared by stage and `t2i probe`)."""
    return cache.fingerprint(*(cache.file_digest(p) for p in (
        prepared_dir / "captions.parquet", prepared_dir / "images.npy", embeddings_dir / "embeddings.npy")))


def samples_grid(ctx: EvalContext) -> Image.Image:
    """Rows: swapped caption pairs (adjacent) from test and unseen, or plain test captions;
    columns: ``noise_samples`` noise vectors, the same vectors in every row."""
    captions: list[str] = []
    for split in ("test", "unseen"):
        pairs = swap_pairs(ctx.rows(split), GRID_PAIRS)
        for a, b in zip(pairs["caption_a"], pairs["caption_b"]):
            captions += [a, b]
    if not captions:
        captions = ctx.rows("test")["caption"].drop_duplicates().head(2 * GRID_PAIRS).tolist()
    k = ctx.params.noise_samples
    seeds = split_seeds(ctx.params.seed, "grid", k).tolist()
    images = np.stack([ctx.source([c] * k, seeds) for c in captions])  # (rows, k, R, R, 3)
    marks = None
    if ctx.has_attributes:
        from t2i.data.templates import parse_caption

        clf = ctx.classifier()
        marks = []
        for caption, row in zip(captions, images):
            parsed = parse_caption(caption)
            if parsed is None:
                marks.append("")
                continue
            pred = clf.predict(row)
            ok = np.ones(k, bool)
            for a, v in parsed[1].items():
                if a in COLOR_ROLES:  # colours: what the judge reads reliably at any resolution
                    ok &= pred[a] == str(v)
            marks.append(f"judge: {int(ok.sum())}/{k} show every stated colour")
    return caption_grid(images, captions, marks)


def evaluate(params: EvaluateParams, prepared_dir: Path, embeddings_dir: Path, model_dir: Path,
             out_dir: Path, track: bool = True) -> dict[str, float]:
    """Run every registered metric and write eval/; returns the flat metrics."""
    from t2i.data.prepared import load_prepared

    t0 = time.perf_counter()
    device = pick_device(params.device)
    prepared = load_prepared(prepared_dir)
    vectors = np.load(embeddings_dir / "embeddings.npy", mmap_mode="r")  # (n_captions, D)
    model = load_model_source(model_dir, device, prepared.table["caption"].tolist(), vectors)
    data_key = data_fingerprint(prepared_dir, embeddings_dir)
    ctx = EvalContext(prepared.table, prepared.images, vectors, model.source, params, device, data_key)
    results: list[MetricResult] = run_metrics(ctx)
    grids = {"samples.png": samples_grid(ctx)}
    facts = {"model step": model.config.get("step"), "encoder": (model.config.get("encoder") or {}).get("name"),
             "resolution": prepared.resolution, "device": str(device),
             "seconds": round(time.perf_counter() - t0, 1)}
    paths = write_outputs(out_dir, results, grids, facts)
    flat = flat_metrics(results)
    if track:
        log_to_mlflow(model_dir, flat, grids, paths, int(model.config.get("step") or 0))
    return flat


def log_to_mlflow(model_dir: Path, flat: dict[str, float], grids: dict[str, Image.Image],
                  paths: dict[str, Path], step: int) -> None:
    """Everything evaluate wrote goes to the MLflow run that trained the model."""
    info_file = model_dir / "mlflow_run.json"
    if not info_file.is_file():
        log.warning("no %s: evaluation not logged to MLflow", info_file)
        return
    from t2i import tracking

    run = tracking.resume_run(json.loads(info_file.read_text(encoding="utf-8")))
    try:
        run.log_metrics({f"eval/{k}": v for k, v in flat.items() if np.isfinite(v)}, step=step)
        for name, image in grids.items():
            run.log_image(image, key=f"eval/{Path(name).stem}", step=step)
        for path in paths.values():
            run.log_artifact(path, "eval/plots" if path.parent.name == "plots" else "eval")
        run.set_tags({"evaluated": "true"})
    finally:
        run.end()
