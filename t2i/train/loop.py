"""The training loop: resume, step, log, sample, checkpoint, stop cleanly, write outs.

The pieces live elsewhere (networks in t2i.models, losses in losses.py, one iteration in
step.py, checkpoints in checkpoint.py); this module only sequences them. MLflow is reached
through a `Tracker` object the caller provides, so the loop runs (and is tested) without it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Protocol

import torch
from tqdm import tqdm

from t2i.models import GANConfig, save_generator
from t2i.models.matcher import Matcher, matcher_digest
from t2i.train.checkpoint import architecture, fingerprint, load_checkpoint, restore, save_checkpoint
from t2i.train.data import ShardedSampler, TrainData
from t2i.train.distributed import DistContext, any_rank, sync_buffers
from t2i.train.losses import LossConfig
from t2i.train.schedule import lr_factor, set_lr
from t2i.train.runtime import setup_runtime, seed_everything
from t2i.train.samples import make_sample_set, render_grid
from t2i.train.step import GANState, build_state, train_step


class Tracker(Protocol):
    """The part of t2i.tracking.Run the loop uses."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_image(self, image: Any, key: str, step: int) -> None: ...
    def log_artifact(self, path: Any, artifact_path: str | None = None) -> None: ...
    def log_generator(self, generator: torch.nn.Module, z_dim: int, text_dim: int) -> None: ...
    def end(self, status: str = "FINISHED") -> None: ...
    def to_json(self) -> dict[str, Any]: ...


class NullTracker:
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_image(self, image: Any, key: str, step: int) -> None: ...
    def log_artifact(self, path: Any, artifact_path: str | None = None) -> None: ...
    def log_generator(self, generator: torch.nn.Module, z_dim: int, text_dim: int) -> None: ...
    def end(self, status: str = "FINISHED") -> None: ...
    def to_json(self) -> dict[str, Any]:
        return {}


class NonFiniteLossError(RuntimeError):
    """A loss or weight became NaN/inf; the last good checkpoint is left untouched."""


class TrainingInterrupted(RuntimeError):
    def __init__(self, signum: int, step: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint written")
        self.signum, self.step = signum, step


@dataclass(frozen=True)
class Outputs:
    models: Path = Path("models")
    checkpoints: Path = Path("checkpoints")
    losses_csv: Path = Path("plots/train/losses.csv")


@dataclass
class TrainResult:
    step: int
    resumed_from: int
    images_per_s: float
    history: list[dict[str, float]] = field(default_factory=list)
    state: GANState | None = None   # the trained networks and optimisers (benchmarks, tests)


OpenTracker = Callable[[dict[str, Any] | None], Tracker]


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop checkpoints at the end of the current step."""

    def __init__(self) -> None:
        self.signum = 0
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread (e.g. inside a test runner thread)
                pass
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)


def _write_csv(path: Path, rows: list[dict[str, float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys or ["step", "loss_d", "loss_g"])
    w.writeheader()
    w.writerows(rows)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        f.write(buf.getvalue())
    os.replace(tmp, path)


def _finite(state: GANState) -> bool:
    return all(bool(torch.isfinite(p).all()) for m in (state.g_raw, state.d_raw) for p in m.parameters())


def model_config(params: Any, data: TrainData) -> GANConfig:
    return GANConfig(
        resolution=data.resolution, text_dim=data.text_dim, z_dim=params.z_dim,
        g_width=params.g_width, g_min_width=params.g_min_width, d_width=params.d_width, attention=tuple(params.attention),
        conditioning=params.conditioning, d_conditioning=params.d_conditioning,
        text_norm=params.text_norm, whiten_eps=params.whiten_eps,
    )


def loss_config(params: Any) -> LossConfig:  # params: t2i.config.TrainParams
    return LossConfig(params.loss, params.ma_gp_weight, params.ma_gp_power, params.ma_gp_every, params.mismatch_weight,
                      params.near_miss, params.near_miss_pool, params.diversity_weight,
                      params.contrastive_d, params.contrastive_g, params.contrastive_candidates,
                      diversity_pairs=params.diversity_pairs, contrastive_word_order=params.contrastive_word_order,
                      contrastive_captions=params.contrastive_captions, swap_all_orders=params.swap_all_orders,
                      matcher_weight=params.matcher_weight)


def train(
    params: Any,                 # t2i.config.TrainParams
    data: TrainData,
    outputs: Outputs = Outputs(),
    ctx: DistContext = DistContext(),
    open_tracker: OpenTracker | None = None,
    stop_after: int | None = None,   # tests: return after this many steps of this call
    matcher: Matcher | None = None,  # the `matcher` stage's network: needed when train.matcher_weight > 0
) -> TrainResult:
    runtime = setup_runtime(params.device, params.precision, params.channels_last, params.threads, ctx.local_rank)
    seed_everything(params.seed)
    cfg = model_config(params, data)
    state = build_state(cfg, params.lr_g, params.lr_d, (params.beta1, params.beta2), runtime, ctx.enabled, data.text)
    loss_cfg = loss_config(params)
    train_params = params.model_dump()
    if params.matcher_weight > 0:
        if matcher is None:
            raise ValueError("train.matcher_weight > 0 needs the matcher: run the `matcher` stage "
                             "(dvc repro matcher) or set train.matcher_weight=0")
        state.matcher = matcher.to(runtime.device).eval().requires_grad_(False)
        # A checkpoint trained against another matcher is not resumed against this one.
        train_params["matcher_digest"] = matcher_digest(matcher)
    sampler = ShardedSampler(len(data.text), params.batch_size, params.seed, ctx.rank, ctx.world_size)
    fp = fingerprint(train_params, data.identity, ctx.world_size, architecture(state))
    say = print if ctx.is_main else (lambda *a, **k: None)
    # Which precision `auto` resolved to matters for speed by up to 10x (bf16 on an AVX2 CPU).
    threads = f", {torch.get_num_threads()} threads" if runtime.device.type == "cpu" else ""
    say(f"train: {runtime.device}, {runtime.precision} (train.precision={params.precision}){threads}")

    start, history, tracker_info = 0, [], None
    ckpt = load_checkpoint(outputs.checkpoints)
    if ckpt is not None and ckpt.meta.get("fingerprint") == fp and ckpt.step > params.steps:
        # `steps` is not in the fingerprint (raising it continues a run), but a checkpoint past
        # the requested length cannot be wound back: train the shorter run from scratch.
        say(f"train: {outputs.checkpoints} is at step {ckpt.step}, past train.steps={params.steps}; "
            "starting fresh from step 0")
        ckpt = None
    if ckpt is not None and ckpt.meta.get("fingerprint") == fp:
        restore(state, ckpt)
        sampler.load_state(ckpt.meta["sampler"])
        start, history, tracker_info = ckpt.step, ckpt.meta.get("history", []), ckpt.meta.get("mlflow")
        say(f"train: resuming from {outputs.checkpoints} at step {start}")
    elif ckpt is not None:
        say(f"train: {outputs.checkpoints} is from other params or data (fingerprint "
            f"{ckpt.meta.get('fingerprint')} != {fp}); starting fresh from step 0")
    tracker: Tracker = (open_tracker(tracker_info) if open_tracker else NullTracker()) if ctx.is_main else NullTracker()
    samples = make_sample_set(data.table, data.all_text, cfg.z_dim, params.seed)
    config_dict = {"model": cfg.to_dict(), "encoder": data.encoder, "train": params.model_dump(),
                   "data_identity": data.identity, "sample_captions": samples.captions}

    def checkpoint(step: int) -> None:
        if not ctx.is_main:
            return
        if not _finite(state):
            raise NonFiniteLossError(f"weights are NaN/inf at step {step}; kept the last good checkpoint in {outputs.checkpoints}")
        save_checkpoint(outputs.checkpoints, state, step, {
            "fingerprint": fp, "sampler": sampler.state(), "history": history,
            "mlflow": tracker.to_json() or tracker_info, "model": cfg.to_dict(),
        })

    step, window, t0, n_img, status = start, [], time.perf_counter(), 0, "FAILED"
    loop_seconds = 0.0
    end = params.steps if stop_after is None else min(params.steps, start + stop_after)
    bar = tqdm(total=params.steps, initial=start, disable=not ctx.is_main, mininterval=1.0, desc="train", unit="step")
    try:
        with _StopFlag() as stop:
            while step < end:
                factor = lr_factor(step, params.steps, params.lr_decay_from)
                set_lr(state.opt_g, params.lr_g, factor)
                set_lr(state.opt_d, params.lr_d, factor)
                stats = train_step(state, data, sampler.next(), step, params.seed, ctx.rank, loss_cfg, params.ema_decay, runtime)
                vals = {k: float(v) for k, v in stats.items()}
                step += 1
                n_img += params.batch_size * ctx.world_size
                bad = not all(math.isfinite(v) for v in vals.values())
                halt, bad = any_rank([stop.signum != 0, bad], ctx, runtime.device)
                if bad:
                    raise NonFiniteLossError(
                        f"non-finite loss at step {step} ({', '.join(f'{k}={v:.4g}' for k, v in vals.items())}); "
                        f"training stopped, the last good checkpoint in {outputs.checkpoints} is kept. "
                        f"Try lower train.lr_d/lr_g, train.precision=fp32 or a larger train.ma_gp_weight")
                window.append(vals)
                ips = n_img / max(time.perf_counter() - t0, 1e-9)
                bar.update(1)
                if step % params.log_every == 0 or step == end:
                    row = {"step": step, **{k: sum(w[k] for w in window) / len(window) for k in window[-1]}, "images_per_s": ips}
                    history.append(row)
                    window = []
                    bar.set_postfix(loss_d=f"{row['loss_d']:.3f}", loss_g=f"{row['loss_g']:.3f}", img_s=f"{ips:.0f}")
                    if ctx.is_main:
                        _write_csv(outputs.losses_csv, history)
                        tracker.log_metrics({k: v for k, v in row.items() if k != "step"}, step)
                if ctx.is_main and step % params.sample_every == 0:
                    tracker.log_image(render_grid(state.ema, samples, runtime.device), "samples", step)
                if halt:
                    checkpoint(step)
                    raise TrainingInterrupted(stop.signum or signal.SIGTERM, step)
                if step % params.checkpoint_every == 0 or step == params.steps:
                    checkpoint(step)
        loop_seconds = time.perf_counter() - t0  # images/s excludes the final export below
        sync_buffers([state.g_raw, state.d_raw, state.ema], ctx)
        if ctx.is_main and step >= params.steps:
            _write_csv(outputs.losses_csv, history)  # DVC removed it; a resume may run no step
            _finish(outputs, state, samples, config_dict, step, tracker, runtime.device)
        status = "FINISHED"
    except TrainingInterrupted:
        status = "KILLED"
        raise
    finally:
        bar.close()
        if ctx.is_main:
            tracker.end(status)
    return TrainResult(step=step, resumed_from=start, images_per_s=n_img / max(loop_seconds, 1e-9), history=history, state=state)


def _finish(outputs: Outputs, state: GANState, samples: Any, config_dict: dict[str, Any], step: int, tracker: Tracker, device: torch.device) -> None:
    """Write models/ (EMA generator, config, run id, final grid) and log the model."""
    save_generator(outputs.models, state.ema, {**config_dict, "step": step})
    grid = render_grid(state.ema, samples, device)
    grid.save(outputs.models / "samples.png")
    tracker.log_image(grid, "samples", step)
    run_info = tracker.to_json()
    (outputs.models / "mlflow_run.json").write_text(json.dumps(run_info, indent=2) + "\n", encoding="utf-8")
    tracker.log_artifact(outputs.models / "config.json")
    tracker.log_artifact(outputs.models / "generator.safetensors", "generator_files")
    tracker.log_artifact(outputs.models / "config.json", "generator_files")
    cfg = state.ema.config
    tracker.log_generator(state.ema, cfg.z_dim, cfg.text_dim)
