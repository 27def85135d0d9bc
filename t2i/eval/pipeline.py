"""The evaluate stage's work: load model and data, run every metric, write and log the outputs.

``stages/evaluate.py`` only parses arguments and calls ``evaluate``. Images come from the one
generation pipeline (t2i/pipeline.py), as they do for `t2i generate` and `t2i probe`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from t2i.config import EvaluateParams
from t2i.device import pick_device
from t2i.digest import file_digest
from t2i.eval import cache
from t2i.eval.classifier import COLOR_ROLES, JUDGE_DIR, save_classifier, save_no_classifier
from t2i.eval.context import EvalContext
from t2i.eval.registry import MetricResult, run_metrics
from t2i.eval.report import flat_metrics, write_outputs
from t2i.eval.sampling import split_seeds, swap_pairs
from t2i.grids import caption_grid
from t2i.pipeline import GenerationPipeline
from t2i.text.embed_table import EMBEDDINGS_FILE, load_embeddings

log = logging.getLogger(__name__)
GRID_PAIRS = 3  # swapped pairs per split in eval/samples.png


def use_stored_vectors(pipe: GenerationPipeline, captions: list[str], vectors: np.ndarray,
                       encoder_info: dict[str, Any]) -> None:
    """Tell the pipeline the embed stage's vectors for the table's captions (exactly the text
    training saw); captions it does not know, such as swapped ones, it encodes itself."""
    data_encoder, model_encoder = encoder_info.get("name"), (pipe.saved.get("encoder") or {}).get("name")
    if data_encoder and model_encoder and data_encoder != model_encoder:
        raise ValueError(f"data/embeddings was made with {data_encoder!r} but the model was trained on "
                         f"{model_encoder!r} vectors: run `dvc repro`")
    pipe.remember(captions, vectors)


def data_fingerprint(prepared_dir: Path, embeddings_dir: Path) -> str:
    """Cache key of the judges: the bytes they are trained on (shared by stage and `t2i probe`)."""
    return cache.fingerprint(*(file_digest(p) for p in (
        prepared_dir / "captions.parquet", prepared_dir / "images.npy", embeddings_dir / EMBEDDINGS_FILE)))


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
             out_dir: Path, track: bool = True, losses_csv: Path | None = None) -> dict[str, float]:
    """Run every registered metric and write eval/; returns the flat metrics. ``losses_csv``
    (the train stage's per-step losses) is charted in the report when it exists."""
    from t2i.data.prepared import load_prepared

    t0 = time.perf_counter()
    device = pick_device(params.device, key="evaluate.device")
    pipe = GenerationPipeline.from_pretrained(model_dir, device)  # a missing model fails first, by name
    prepared = load_prepared(prepared_dir)
    vectors, encoder_info = load_embeddings(embeddings_dir)  # (n_captions, D) memmap
    use_stored_vectors(pipe, prepared.table["caption"].tolist(), vectors, encoder_info)
    data_key = data_fingerprint(prepared_dir, embeddings_dir)
    ctx = EvalContext(prepared.table, prepared.images, vectors, pipe.generate_with_seeds, params, device, data_key)
    results: list[MetricResult] = run_metrics(ctx)
    grids = {"samples.png": samples_grid(ctx)}
    facts = {"model step": pipe.step, "encoder": pipe.encoder_name, "resolution": prepared.resolution,
             "device": str(device), "seconds": round(time.perf_counter() - t0, 1)}
    paths = write_outputs(out_dir, results, grids, facts, losses_csv)
    # The judge `t2i serve` shows beside each image: the classifier these metrics were read with.
    judge = (save_classifier(ctx.classifier(), out_dir / JUDGE_DIR) if ctx.has_attributes
             else save_no_classifier(out_dir / JUDGE_DIR, "the dataset has no ground-truth attributes"))
    paths.update({f"{JUDGE_DIR}/{f.name}": f for f in judge})
    flat = flat_metrics(results)
    if track:
        log_to_mlflow(model_dir, flat, grids, paths, int(pipe.step or 0))
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
            run.log_artifact(path, f"eval/{path.parent.name}" if path.parent.name in ("plots", JUDGE_DIR) else "eval")
        run.set_tags({"evaluated": "true"})
        _register(run, flat)
    finally:
        run.end()


def _register(run: Any, flat: dict[str, float]) -> None:
    """A new version of the registered generator; the `champion` alias moves only on a better
    headline metric (t2i/champion.py says which)."""
    from t2i.champion import register_run

    run.flush()  # the registry reads the run's tags and metrics
    try:
        decision = register_run(run.run_id, flat, tracking_uri=run.tracking_uri)
    except LookupError as exc:  # no pyfunc model in the run (trained with tracking off, or a gone server)
        log.warning("%s", exc)
        return
    log.info("registered %s v%s: %s", decision.model_name, decision.version, decision.reason)
    run.set_tags({"t2i.champion": f"v{decision.version} promoted={decision.promoted}: {decision.reason}"})
