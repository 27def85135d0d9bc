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
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Protocol

import torch
from tqdm import tqdm

from t2i.atomic import atomic_path, atomic_write
from t2i.config import TrainParams, TrainRuntimeParams
from t2i.models import GANConfig, save_generator
from t2i.models.matcher import Matcher, matcher_digest
from t2i.train.checkpoint import architecture, fingerprint, load_checkpoint, restore, save_checkpoint
from t2i.train.data import ShardedSampler, TrainData
from t2i.train.distributed import DistContext, any_rank, sync_buffers
from t2i.train.runtime import Runtime, ThreadGovernor, seed_everything, setup_runtime
from t2i.train.samples import SampleSet, make_sample_set, render_grid
from t2i.train.step import CodeSource, GANState, StepConfig, build_state, train_step


class Tracker(Protocol):
    """The part of t2i.tracking.Run the loop uses."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_image(self, image: Any, key: str, step: int) -> None: ...
    def log_artifact(self, path: Any, artifact_path: str | None = None) -> None: ...
    def log_generator(self, generator: torch.nn.Module, z_dim: int, text_dim: int) -> None: ...
    def log_with(self, what: str, log: Callable[[str, str], Any]) -> None: ...
    def end(self, status: str = "FINISHED") -> None: ...
    def to_json(self) -> dict[str, Any]: ...


class NullTracker:
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_image(self, image: Any, key: str, step: int) -> None: ...
    def log_artifact(self, path: Any, artifact_path: str | None = None) -> None: ...
    def log_generator(self, generator: torch.nn.Module, z_dim: int, text_dim: int) -> None: ...
    def log_with(self, what: str, log: Callable[[str, str], Any]) -> None: ...
    def end(self, status: str = "FINISHED") -> None: ...
    def to_json(self) -> dict[str, Any]:
        return {}


class NonFiniteLossError(RuntimeError):
    """A loss or weight became NaN/inf; the last good checkpoint is left untouched."""


class TrainingInterrupted(RuntimeError):
    def __init__(self, signum: int, step: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint written")
        self.signum, self.step = signum, step


# MLflow's UI orders chart sections by the metric name's prefix: per-step values under "batch/"
# come before the evaluation's "eval/" figures (t2i.mlflow_model.train_metric_key reads them).
METRIC_SECTION = "batch"


@dataclass(frozen=True)
class Outputs:
    models: Path = Path("models")
    checkpoints: Path = Path("checkpoints")
    losses_csv: Path = Path("plots/train/losses.csv")
    sample_dir: Path = Path("plots/train/samples")  # one grid per sample_every steps: dvc plots' images


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
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys or ["step", "loss_d", "loss_g"])
    w.writeheader()
    w.writerows(rows)
    atomic_write(path, buf.getvalue().encode("utf-8"))


def _finite(state: GANState) -> bool:
    return all(bool(torch.isfinite(p).all()) for m in (state.g_raw, state.d_raw) for p in m.parameters())


def model_config(params: TrainParams, data: TrainData) -> GANConfig:
    """The networks' config: `train.model` by keyword, the data's resolution and text size. The
    word modules are left out where the data has no token states (a sentence-only encoder)."""
    model = params.model.model_dump()
    # The caption code pools the tokens where there are any (a sentence-only encoder: the sentence).
    model["code_token_dim"] = data.token_dim if model["caption_code"] and data.tokens is not None else 0
    if data.tokens is None or not (model["word_attention"] or model["d_word_match"]):
        model.update(word_attention=(), d_word_match=False, token_pca=0)
        return GANConfig(resolution=data.resolution, text_dim=data.text_dim, **model)
    model["token_pca"] = min(model["token_pca"], data.token_dim)
    return GANConfig(resolution=data.resolution, text_dim=data.text_dim, token_dim=data.token_dim, **model)


def code_source(cfg: GANConfig, data: TrainData, matcher: Matcher | None, seed: int) -> CodeSource | None:
    """The matcher's caption code and up to 4,096 train captions to fit G's code whitening on
    (None: a model without the code)."""
    if not cfg.caption_code:
        return None
    if matcher is None:
        raise ValueError("train.model.caption_code needs the matcher: run the `matcher` stage "
                         "(dvc repro matcher) or set train.model.caption_code=false")
    if matcher.token_dim != cfg.code_token_dim:
        raise ValueError(f"the matcher reads {matcher.token_dim}-dim token states, the data has "
                         f"{cfg.code_token_dim}: data/matcher is from other embeddings; run `dvc repro matcher`")
    n = len(data.text)
    rows = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:4096].sort().values
    tokens = data.tokens.gather(rows) if data.tokens is not None and cfg.code_token_dim else None
    return CodeSource(matcher.caption, data.text[rows], tokens)


@dataclass
class _Run:
    """One call of `train`: what its steps, checkpoints and logs share."""
    params: TrainParams
    data: TrainData
    outputs: Outputs
    ctx: DistContext
    runtime: Runtime
    state: GANState
    sampler: ShardedSampler
    fingerprint: str
    tracker: Tracker = field(default_factory=NullTracker)
    tracker_info: dict[str, Any] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    governor: ThreadGovernor | None = None  # CPU threads follow the free cores (train_runtime.threads null)

    def say(self, message: str) -> None:
        if self.ctx.is_main:
            print(message)

    def checkpoint(self, step: int) -> None:
        if not self.ctx.is_main:
            return
        if not _finite(self.state):
            raise NonFiniteLossError(f"weights are NaN/inf at step {step}; kept the last good checkpoint in {self.outputs.checkpoints}")
        save_checkpoint(self.outputs.checkpoints, self.state, step, {
            "fingerprint": self.fingerprint, "sampler": self.sampler.state(), "history": self.history,
            "mlflow": self.tracker.to_json() or self.tracker_info, "model": self.state.g_raw.config.to_dict(),
        })

    def resume(self) -> int:
        """Restore the checkpoint of this run's fingerprint, if any: the step to start from."""
        ckpt = load_checkpoint(self.outputs.checkpoints, say=self.say)
        where = self.outputs.checkpoints
        if ckpt is not None and ckpt.meta.get("fingerprint") == self.fingerprint:
            restore(self.state, ckpt)
            self.sampler.load_state(ckpt.meta["sampler"])
            self.history, self.tracker_info = ckpt.meta.get("history", []), ckpt.meta.get("mlflow")
            self.say(f"train: resuming from {where} at step {ckpt.step}")
            return ckpt.step
        if ckpt is not None:
            self.say(f"train: {where} is from other params, data or code (fingerprint "
                     f"{ckpt.meta.get('fingerprint')} != {self.fingerprint}); starting fresh from step 0")
        return 0


def _start(params: TrainParams, data: TrainData, outputs: Outputs, ctx: DistContext, rt_params: TrainRuntimeParams,
           matcher: Matcher | None) -> _Run:
    """Runtime, networks, sampler and the checkpoint fingerprint of a run."""
    runtime = setup_runtime(rt_params.device, params.precision, params.channels_last, rt_params.threads, ctx.local_rank)
    seed_everything(params.seed)
    cfg = model_config(params, data)
    fit_tokens = data.tokens.fit_sample(4096, params.seed) if data.tokens is not None and cfg.token_pca else None
    state = build_state(cfg, params.optim, runtime, ctx.enabled, data.text, fit_tokens,
                        code_source(cfg, data, matcher, params.seed))
    fingerprinted = params.model_dump()
    if params.loss.matcher_weight > 0:
        if matcher is None:
            raise ValueError("train.loss.matcher_weight > 0 needs the matcher: run the `matcher` stage "
                             "(dvc repro matcher) or set train.loss.matcher_weight=0")
        state.matcher = matcher.to(runtime.device).eval().requires_grad_(False)
    if matcher is not None and (cfg.caption_code or params.loss.matcher_weight > 0):
        # G's condition or loss reads the matcher: a checkpoint trained against another is not resumed.
        fingerprinted["matcher_digest"] = matcher_digest(matcher)
    sampler = ShardedSampler(len(data.text), params.batch_size, params.seed, ctx.rank, ctx.world_size)
    fp = fingerprint(fingerprinted, data.identity, ctx.world_size, architecture(state))
    # One process choosing its own threads: it re-decides as neighbours start or end. A torchrun
    # worker keeps its share (default_threads) so the processes of a host do not compete.
    governor = ThreadGovernor() if runtime.device.type == "cpu" and rt_params.threads is None and not ctx.enabled else None
    return _Run(params, data, outputs=outputs, ctx=ctx, runtime=runtime, state=state, sampler=sampler, fingerprint=fp,
                governor=governor)


def _step(run: _Run, step: int, cfg: StepConfig, halt_signal: int) -> tuple[dict[str, float], bool]:
    """One step and its NaN check; returns its figures and whether any rank was signalled."""
    stats = train_step(run.state, run.data, run.sampler.next(), step, cfg)
    vals = {k: float(v) for k, v in stats.items()}
    bad = not all(math.isfinite(v) for v in vals.values())
    halt, bad = any_rank([halt_signal != 0, bad], run.ctx, run.runtime.device)
    if bad:
        raise NonFiniteLossError(
            f"non-finite loss at step {step + 1} ({', '.join(f'{k}={v:.4g}' for k, v in vals.items())}); "
            f"training stopped, the last good checkpoint in {run.outputs.checkpoints} is kept. "
            f"Try lower train.optim.lr_d/lr_g, train.precision=fp32 or a larger train.loss.ma_gp_weight")
    return vals, halt


def _loop(run: _Run, start: int, end: int, samples: SampleSet) -> tuple[int, int]:
    """Steps start..end-1 with logging, sample grids and checkpoints: (last step, images seen)."""
    p, ctx = run.params, run.ctx
    cfg = StepConfig(p.loss, p.optim.ema_decay, run.runtime, p.seed, ctx.rank)
    step, window, t0, n_img = start, [], time.perf_counter(), 0
    bar = tqdm(total=p.steps, initial=start, disable=not ctx.is_main, mininterval=1.0, desc="train", unit="step")
    try:
        with _StopFlag() as stop:
            while step < end:
                vals, halt = _step(run, step, cfg, stop.signum)
                step += 1
                n_img += p.batch_size * ctx.world_size
                window.append(vals)
                bar.update(1)
                if run.governor is not None and (threads := run.governor.check()) is not None:
                    bar.write(f"train: {threads} CPU threads from step {step} (the free cores changed)")
                if step % p.log_every == 0 or step == end:
                    ips = n_img / max(time.perf_counter() - t0, 1e-9)
                    row = {"step": step, **{k: sum(w[k] for w in window) / len(window) for k in window[-1]}, "images_per_s": ips}
                    run.history.append(row)
                    window = []
                    bar.set_postfix(loss_d=f"{row['loss_d']:.3f}", loss_g=f"{row['loss_g']:.3f}", img_s=f"{ips:.0f}")
                    if ctx.is_main:
                        _write_csv(run.outputs.losses_csv, run.history)
                        run.tracker.log_metrics({f"{METRIC_SECTION}/{k}": v for k, v in row.items() if k != "step"}, step)
                if ctx.is_main and step % p.sample_every == 0:
                    grid = render_grid(run.state.ema, samples, run.runtime.device)
                    with atomic_path(run.outputs.sample_dir / f"{step:06d}.png") as tmp:
                        grid.save(tmp, format="PNG")
                    run.tracker.log_image(grid, "samples", step)
                if halt:
                    run.checkpoint(step)
                    raise TrainingInterrupted(stop.signum or signal.SIGTERM, step)
                if step % p.checkpoint_every == 0 or step == p.steps:
                    run.checkpoint(step)
    finally:
        bar.close()
    return step, n_img


def train(
    params: TrainParams,
    data: TrainData,
    outputs: Outputs = Outputs(),
    ctx: DistContext = DistContext(),
    open_tracker: OpenTracker | None = None,
    stop_after: int | None = None,   # tests: return after this many steps of this call
    matcher: Matcher | None = None,  # the `matcher` stage's network: needed when train.loss.matcher_weight > 0
    runtime: TrainRuntimeParams = TrainRuntimeParams(),
) -> TrainResult:
    run = _start(params, data, outputs, ctx, runtime, matcher)
    # Which precision `auto` resolved to matters for speed by up to 10x (bf16 on an AVX2 CPU).
    threads = f", {torch.get_num_threads()} threads" if run.runtime.device.type == "cpu" else ""
    run.say(f"train: {run.runtime.device}, {run.runtime.precision} (train.precision={params.precision}){threads}")
    start = run.resume()
    if open_tracker is not None and ctx.is_main:
        run.tracker = open_tracker(run.tracker_info)
    samples = make_sample_set(data.table, data.all_text, params.model.z_dim, params.seed)
    end = params.steps if stop_after is None else min(params.steps, start + stop_after)
    status, t0, step, n_img, loop_seconds = "FAILED", time.perf_counter(), start, 0, 0.0
    try:
        step, n_img = _loop(run, start, end, samples)
        loop_seconds = time.perf_counter() - t0  # images/s excludes the final export below
        sync_buffers([run.state.g_raw, run.state.d_raw, run.state.ema], ctx)
        if ctx.is_main and step >= params.steps:
            _write_csv(outputs.losses_csv, run.history)  # DVC removed it; a resume may run no step
            config = {"model": run.state.g_raw.config.to_dict(), "encoder": data.encoder, "train": params.model_dump(),
                      "data_identity": data.identity, "sample_captions": samples.captions, "step": step}
            _finish(outputs, run.state, samples, config, run.tracker, run.runtime.device)
        status = "FINISHED"
    except TrainingInterrupted:
        status = "KILLED"
        raise
    finally:
        if ctx.is_main:
            run.tracker.end(status)
    return TrainResult(step=step, resumed_from=start, images_per_s=n_img / max(loop_seconds, 1e-9),
                       history=run.history, state=run.state)


def _finish(outputs: Outputs, state: GANState, samples: SampleSet, config: dict[str, Any], tracker: Tracker,
            device: torch.device) -> None:
    """Write models/ (EMA generator, config, run id, final grid) and log the model."""
    save_generator(outputs.models, state.ema, config)
    grid = render_grid(state.ema, samples, device)
    with atomic_path(outputs.models / "samples.png") as tmp:
        grid.save(tmp, format="PNG")
    tracker.log_image(grid, "samples", config["step"])
    run_info = tracker.to_json()
    atomic_write(outputs.models / "mlflow_run.json", (json.dumps(run_info, indent=2) + "\n").encode("utf-8"))
    tracker.log_artifact(outputs.models / "config.json")
    tracker.log_artifact(outputs.models / "generator.safetensors", "generator_files")
    tracker.log_artifact(outputs.models / "config.json", "generator_files")
    cfg = state.ema.config
    tracker.log_generator(state.ema, cfg.z_dim, cfg.text_dim)
    from t2i.mlflow_model import log_to_run  # imports mlflow: only a finishing run needs it

    tracker.log_with("log_pyfunc", lambda run_id, uri: log_to_run(outputs.models, run_id, uri))
