"""The evaluate stage's work: load model and data, run every metric, write and log the outputs.

``stages/evaluate.py`` only parses arguments and calls ``evaluate``. Images come from the one
generation pipeline (t2i/pipeline.py), as they do for `t2i generate` and `t2i probe`: captions of
the table and their swaps from the embed stage's vectors and token states, exactly as training saw
them; the hand-written probe captions (t2i/data/probe_captions.csv) through the model's encoder.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from t2i.config import EvaluateParams
from t2i.device import pick_device
from t2i.digest import file_digest
from t2i.eval import cache
from t2i.eval.classifier import COLOR_ROLES, JUDGE_DIR, attributes_in, mentions, save_classifier, save_no_classifier
from t2i.eval.context import SCORED_SPLITS, EvalContext
from t2i.eval.registry import MetricResult, run_metrics
from t2i.eval.report import flat_metrics, write_outputs
from t2i.eval.sampling import split_seeds, swap_pairs
from t2i.grids import caption_grid
from t2i.pipeline import GenerationPipeline
from t2i.text.embed_table import EMBEDDINGS_FILE, load_text_features
from t2i.text.token_store import TokenStore

log = logging.getLogger(__name__)
GRID_PAIRS = 2  # swapped pairs per split in eval/samples.png
SWAP_DIR = "swap"  # data/embeddings/swap: the swap_caption column, embedded by the embed stage


def _token_store(pipe: GenerationPipeline, info: dict[str, Any], path: Path) -> TokenStore | None:
    """The stored token states, when the model reads tokens and the embed stage kept them."""
    return TokenStore(path) if pipe.uses_tokens and info.get("token_states") else None


def remember_embeddings(pipe: GenerationPipeline, table: pd.DataFrame, embeddings_dir: Path) -> np.ndarray:
    """Tell the pipeline the embed stage's sentence vectors and token states for the table's
    captions and their swaps (exactly the text training saw); captions it does not know, such as
    the probe set, it encodes itself. Returns the (n_captions, D) sentence vectors (a memmap)."""
    features = load_text_features(embeddings_dir, tokens=False)
    data_encoder, model_encoder = features.info.get("name"), (pipe.saved.get("encoder") or {}).get("name")
    if data_encoder and model_encoder and data_encoder != model_encoder:
        raise ValueError(f"data/embeddings was made with {data_encoder!r} but the model was trained on "
                         f"{model_encoder!r} vectors: run `dvc repro`")
    if len(features.sentence) != len(table):
        raise ValueError(f"{embeddings_dir} has {len(features.sentence)} rows for {len(table)} captions: "
                         "data/embeddings is stale; run `dvc repro embed`")
    pipe.remember(table["caption"].tolist(), features.sentence, _token_store(pipe, features.info, embeddings_dir))
    swap_dir = embeddings_dir / SWAP_DIR
    if "swap_caption" in table.columns and (swap_dir / EMBEDDINGS_FILE).is_file():
        swap = load_text_features(swap_dir, tokens=False)
        if len(swap.sentence) == len(table):
            pipe.remember(table["swap_caption"].tolist(), swap.sentence, _token_store(pipe, swap.info, swap_dir))
        else:
            log.warning("%s has %d rows for %d captions: swaps are encoded again", swap_dir,
                        len(swap.sentence), len(table))
    return features.sentence


def data_fingerprint(prepared_dir: Path, embeddings_dir: Path) -> str:
    """Cache key of the judges: the bytes they are trained on (shared by stage and `t2i probe`)."""
    return cache.fingerprint(*(file_digest(p) for p in (
        prepared_dir / "captions.parquet", prepared_dir / "images.npy", embeddings_dir / EMBEDDINGS_FILE)))


def _stated_colours(row: pd.Series, said: set[str]) -> dict[str, str]:
    return {a: str(row[a]) for a in COLOR_ROLES if a in said and a in row.index and pd.notna(row[a])}


def grid_captions(ctx: EvalContext) -> tuple[list[str], list[dict[str, str]]]:
    """Captions of eval/samples.png and the colours each states: swapped pairs (adjacent) from
    every scored split, or plain test captions on data without swaps."""
    captions: list[str] = []
    truth: list[dict[str, str]] = []
    for split in SCORED_SPLITS:
        pairs = swap_pairs(ctx.rows(split), GRID_PAIRS)
        for a, b, petal, stem in zip(pairs["caption_a"], pairs["caption_b"], pairs["a_petal"], pairs["a_stem"]):
            captions += [a, b]
            truth += [{"petal_color": petal, "stem_color": stem}, {"petal_color": stem, "stem_color": petal}]
    if not captions:
        rows = ctx.rows("test").drop_duplicates("caption").head(2 * GRID_PAIRS)
        captions = rows["caption"].tolist()
        truth = [_stated_colours(row, said) for (_, row), said in zip(rows.iterrows(), mentions(rows))]
    return captions, truth


def samples_grid(ctx: EvalContext) -> Image.Image:
    """Rows: the grid captions; columns: ``noise_samples`` noise vectors, the same in every row.
    On data with ground truth each row says how many samples the judge reads as stated."""
    captions, truth = grid_captions(ctx)
    k = ctx.params.noise_samples
    seeds = split_seeds(ctx.params.seed, "grid", k).tolist()
    images = np.stack([ctx.source([c] * k, seeds) for c in captions])  # (rows, k, R, R, 3)
    marks = None
    if ctx.has_attributes:
        clf = ctx.classifier()
        marks = []
        for stated, row in zip(truth, images):
            if not stated:
                marks.append("")
                continue
            pred = clf.predict(row)
            ok = np.ones(k, bool)
            for a, v in stated.items():  # colours: what the judge reads reliably at any resolution
                ok &= pred[a] == v
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
    vectors = remember_embeddings(pipe, prepared.table, embeddings_dir)  # (n_captions, D) memmap
    data_key = data_fingerprint(prepared_dir, embeddings_dir)
    extra = probe_split(prepared.table)
    ctx = EvalContext(prepared.table, prepared.images, vectors, pipe.generate_with_seeds, params, device, data_key,
                      extra_splits=extra)
    results: list[MetricResult] = run_metrics(ctx)
    grids = {"samples.png": samples_grid(ctx)}
    facts = {"model step": pipe.step, "encoder": pipe.encoder_name, "resolution": prepared.resolution,
             "word attention": list(pipe.config.word_attention) or "none (sentence vector only)",
             "probe captions": len(extra.get("probe", [])),
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


def probe_split(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``{"probe": the hand-written captions}`` on data the judge can score (the synthetic
    attributes), else nothing: probe captions state palette colours only."""
    if not attributes_in(table):
        return {}
    from t2i.data.probe import load_probe

    return {"probe": load_probe()}


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
