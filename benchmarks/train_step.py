"""Train-step throughput of the default config, printed as JSON.

    python benchmarks/train_step.py [--steps 8] [--rounds 3] [--batch-size 64] [--threads N]
    python benchmarks/train_step.py --params configs/oxford102-gpu.yaml --epoch-images 7034   # on a GPU
    python benchmarks/train_step.py --contention [--steps 4 --rounds 3]   # quiet vs one core busy

For fp32 / bf16 autocast x channels_last on / off (all in one run, same process, same
threads): images/s of a full training iteration (D step with MA-GP, G step with the matcher term, EMA update), the
FLOPs of one iteration (torch.utils.flop_counter), and MFU = achieved FLOP/s divided by this
machine's dense matmul FLOP/s measured here in the same precision. `default` is what
train.precision resolves to on this machine, `default_is_fastest_precision` whether that is the
faster precision here (bf16 is ~10x slower than fp32 on an AVX2-only CPU). Random data stands in for
the prepared set (the loop reads it from one in-memory uint8 tensor either way), with swap
partners and one-word misses so the hard-negative ranking is timed too.

``--contention`` (see ``contention``) instead times the default config with the default thread
policy (``t2i.train.runtime.default_threads``, what the train stage uses when
``train_runtime.threads`` is null), quiet and with a busy loop holding one core, beside a fixed
thread count of every core: images/s each, and busy as a share of quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from t2i.config import TrainParams, load_section  # noqa: E402
from t2i.models import GANConfig  # noqa: E402
from t2i.models.matcher import Matcher  # noqa: E402
from t2i.train.data import TrainData  # noqa: E402
from t2i.train.loop import model_config  # noqa: E402
from t2i.train.negatives import CSR, CaptionRelations  # noqa: E402
from t2i.train.runtime import (  # noqa: E402
    Runtime, cpu_cores, cpu_has_fast_bf16, default_threads, pick_dtype, seed_everything, setup_runtime,
)
from t2i.train.step import CodeSource, GANState, StepConfig, build_state, train_step  # noqa: E402


def fake_data(n: int, res: int, dim: int, near_per_row: int = 13) -> TrainData:
    """Random stand-in for the prepared set, with the structure the loss draws on: half the
    rows have a word-order swap partner and every row `near_per_row` one-word misses (the
    synthetic set's median), so the hard-negative pool and swaps cost what they cost in training."""
    g = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)
    partner = torch.where(torch.rand(n, generator=g) < 0.5, torch.randint(0, n, (n,), generator=g), -1)
    near = CSR(torch.arange(n + 1) * near_per_row, torch.randint(0, n, (n * near_per_row,), generator=g))
    none = CSR(torch.zeros(n + 1, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    return TrainData(
        images=torch.randint(0, 256, (n, res, res, 3), dtype=torch.uint8, generator=g),
        image_index=torch.arange(n), text=text, relations=CaptionRelations(partner, near, none, none),
        table=pd.DataFrame(), all_text=text.numpy(), encoder={}, identity="bench",
    )


def matmul_gflops(dtype: torch.dtype, device: torch.device, seconds: float, n: int = 1024) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def stand_in_code(cfg: GANConfig, data: TrainData) -> CodeSource | None:
    """An unfitted matcher's caption code where the config reads one (train.model.caption_code):
    its weights do not change the cost."""
    if not cfg.caption_code:
        return None
    rows = torch.arange(min(len(data.text), 512))
    tokens = data.tokens.gather(rows) if cfg.code_token_dim and data.tokens is not None else None
    return CodeSource(Matcher(data.text_dim, token_dim=cfg.code_token_dim).caption, data.text[rows], tokens)


@dataclass
class Bench:
    """The config and stand-in data every variant is timed on."""
    p: TrainParams
    data: TrainData
    cfg: GANConfig
    batch: int
    base: Runtime

    def state(self, rt: Runtime) -> GANState:
        seed_everything(0)
        state = build_state(self.cfg, self.p.optim, rt, ddp=False, code=stand_in_code(self.cfg, self.data))
        # train.loss.matcher_weight > 0: the G step also runs the frozen matcher on its fakes. Its
        # weights do not change the cost, so an unfitted one stands in for the stage's.
        if self.p.loss.matcher_weight > 0:
            state.matcher = Matcher(self.data.text_dim).to(rt.device).eval().requires_grad_(False)
        return state

    def step(self, state: GANState, rt: Runtime, i: int) -> None:
        rows = torch.arange(i * self.batch, (i + 1) * self.batch) % len(self.data.text)
        train_step(state, self.data, rows, i, StepConfig(self.p.loss, self.p.optim.ema_decay, rt))

    def images_per_s(self, state: GANState, rt: Runtime, steps: int) -> float:
        sync = torch.cuda.synchronize if rt.device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        for i in range(steps):
            self.step(state, rt, i)
        sync()
        return steps * self.batch / (time.perf_counter() - t0)

    def flops(self) -> int:
        """FLOPs of one iteration (precision-independent count), counted once in fp32."""
        counter = FlopCounterMode(display=False)
        with counter:
            self.step(self.state(self.base), self.base, 0)
        return counter.get_total_flops()


def best_rates(bench: Bench, rounds: int, steps: int, peak: dict[str, float]) -> dict[tuple[str, bool], float]:
    """Best images/s per (precision, channels_last) over interleaved rounds: on a shared machine a
    neighbour's burst then hits every variant alike instead of whichever ran during it. The
    matmul reference in ``peak`` is re-measured every round too (best of all): a peak measured
    during a burst would inflate MFU past 1."""
    runtimes = {(prec, cl): Runtime(device=bench.base.device, dtype=None if prec == "fp32" else torch.bfloat16, channels_last=cl)
                for prec in ("fp32", "bf16") for cl in (False, True)}
    states = {k: bench.state(rt) for k, rt in runtimes.items()}
    for k, rt in runtimes.items():
        for i in range(2):  # warm-up: allocator, oneDNN kernel selection
            bench.step(states[k], rt, i)
    best = {k: 0.0 for k in runtimes}
    for _ in range(rounds):
        for k, rt in runtimes.items():
            best[k] = max(best[k], bench.images_per_s(states[k], rt, steps))
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            peak[name] = max(peak[name], matmul_gflops(dtype, bench.base.device, 1.0))
    return best


def variants(best: dict[tuple[str, bool], float], flops_step: int, batch: int, peak: dict[str, float],
             native_bf16: bool) -> list[dict[str, Any]]:
    out = []
    for (precision, cl), ips in best.items():
        gflops = flops_step / batch * ips / 1e9
        out.append({"precision": precision, "channels_last": cl, "images_per_s": round(ips, 1),
                    "achieved_gflop_s": round(gflops, 1),
                    # Emulated bf16 (AVX2 CPUs) has no meaningful peak: its matmul is slower than the convs.
                    "mfu": None if precision == "bf16" and not native_bf16 else round(gflops / peak[precision], 3)})
    return out


BUSY = "while True: pass"  # one core's worth of someone else's work


def _timed(bench: Bench, state: GANState, rt: Runtime, steps: int, threads: int | None) -> tuple[int, float]:
    """(threads used, images/s); ``threads`` None: decided by the default policy right now, as
    the train stage would at its start under the same load."""
    n = threads or default_threads()
    torch.set_num_threads(n)
    bench.step(state, rt, 0)  # one untimed step: the pool resizes, kernels settle
    return n, bench.images_per_s(state, rt, steps)


def contention(bench: Bench, rt: Runtime, rounds: int, steps: int) -> dict[str, Any]:
    """Images/s of ``rt`` (the default precision and layout) quiet and with one core busy, for the
    default thread policy and for every core, in interleaved rounds (medians).

    A busy core is a second process spinning for the whole measurement: what a sweep's second
    job, a queued ``dvc exp run`` or a second user costs the train step."""
    state = bench.state(rt)
    policies = {"default_policy": None, "all_cores": cpu_cores()}
    runs: dict[str, dict[str, list[float]]] = {k: {"quiet": [], "busy": []} for k in policies}
    used: dict[str, dict[str, list[int]]] = {k: {"quiet": [], "busy": []} for k in policies}
    for _ in range(rounds):
        for condition in ("quiet", "busy"):
            busy = subprocess.Popen([sys.executable, "-c", BUSY]) if condition == "busy" else None
            try:
                time.sleep(0.5 if busy else 0.0)  # the busy loop is running before threads are chosen
                for name, threads in policies.items():
                    n, ips = _timed(bench, state, rt, steps, threads)
                    runs[name][condition].append(ips)
                    used[name][condition].append(n)
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
    out: dict[str, Any] = {}
    for name, by in runs.items():
        quiet, busy = statistics.median(by["quiet"]), statistics.median(by["busy"])
        out[name] = {"quiet_images_per_s": round(quiet, 1), "busy_images_per_s": round(busy, 1),
                     "busy_share_of_quiet": round(busy / quiet, 3), "threads": used[name],
                     "runs": {c: [round(x, 1) for x in v] for c, v in by.items()}}
    return out


def run_contention(args: argparse.Namespace) -> None:
    p = load_section("train", args.params)
    where = load_section("train_runtime", args.params)
    res = load_section("ingest", args.params).resolution
    rt = setup_runtime(where.device, p.precision, p.channels_last, where.threads)
    data = fake_data(1024, res, 512)
    bench = Bench(p, data, model_config(p, data), args.batch_size or p.batch_size, rt)
    print(json.dumps({
        "unit": "images/s of a full training iteration, default config; busy = another process spins on one core",
        "cpus": cpu_cores(), "device": str(rt.device), "precision": rt.precision, "channels_last": rt.channels_last,
        "batch_size": bench.batch, "resolution": res, "steps_per_measure": args.steps,
        "load_average_before": round(os.getloadavg()[0], 2),
        **contention(bench, rt, args.rounds, args.steps),
        "load_average_at_end": round(os.getloadavg()[0], 2),
    }, indent=1))


def words_on_off(p: TrainParams, base: Runtime, project: Path, steps: int, rounds: int,
                 precision: str = "fp32") -> dict[str, Any]:
    """images/s of the same step for each way of reading the words (``precision``): the sentence vector
    alone, the caption code, the code with word attention in G, and the code with both word
    modules. On the project's real prepared data and token states (the cost depends on the
    captions' lengths), interleaved: each round times `steps` steps of each after one untimed
    step (which builds D's caption and token tables once per run). The caption code is an
    unfitted matcher's: its weights do not change the cost."""
    from t2i.config import updated
    from t2i.train.data import load_train_data

    data = load_train_data(project / "data" / "prepared", project / "data" / "embeddings", verbose=False)
    if data.tokens is None:
        raise SystemExit(f"{project}/data/embeddings has no token states: run the embed stage with a token encoder")
    states, cfgs, n = {}, {}, 0
    variants = {
        "sentence": {"caption_code": False, "word_attention": [], "d_word_match": False},
        "code": {"caption_code": True, "word_attention": [], "d_word_match": False},
        "code+g_words": {"caption_code": True, "word_attention": [8, 16], "d_word_match": False},
        "code+words": {"caption_code": True, "word_attention": [8, 16], "d_word_match": True},
    }
    for name, model in variants.items():
        q = updated(p, {"precision": precision, "model": model, "loss": {"matcher_weight": 0.0}})
        cfg = model_config(q, data)
        fit = data.tokens.fit_sample(4096, q.seed) if cfg.token_pca else None
        seed_everything(q.seed)
        state = build_state(cfg, q.optim, base, False, data.text, fit, stand_in_code(cfg, data))
        states[name], cfgs[name] = state, StepConfig(q.loss, 0.999, base)
        train_step(states[name], data, torch.arange(q.batch_size), 0, cfgs[name])  # untimed
    best = {name: 0.0 for name in states}
    for _ in range(rounds):
        for name in states:
            t0 = time.perf_counter()
            for _ in range(steps):
                n += 1
                rows = torch.arange(n * p.batch_size, (n + 1) * p.batch_size) % len(data.text)
                train_step(states[name], data, rows, n, cfgs[name])
            best[name] = max(best[name], steps * p.batch_size / (time.perf_counter() - t0))
    return {"images_per_s": {k: round(v, 1) for k, v in best.items()},
            "over_sentence": {k: round(v / best["sentence"], 3) for k, v in best.items() if k != "sentence"},
            "token_pca": states["code+words"].g_raw.config.token_pca, "batch_size": p.batch_size,
            "dtype": str(base.dtype).removeprefix("torch.")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8, help="timed steps per variant per round (a multiple of train.loss.ma_gp_every)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best round counts")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: train_runtime.threads or all cores)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--epoch-images", type=int, default=None,
                    help="images per epoch (Oxford-102 trainval: 7034): also print seconds per epoch")
    ap.add_argument("--contention", action="store_true", help="quiet vs one busy core, default thread policy")
    ap.add_argument("--words", type=Path, default=None, metavar="PROJECT",
                    help="instead: sentence vs caption code vs word modules on PROJECT's data/prepared + data/embeddings")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16", "auto"],
                    help="with --words: the step's precision (auto: what train.precision=auto picks here)")
    args = ap.parse_args()
    if args.contention:
        run_contention(args)
        return
    p = load_section("train", args.params)
    where = load_section("train_runtime", args.params)
    res = load_section("ingest", args.params).resolution
    if args.words is not None:
        if args.batch_size:
            from t2i.config import updated
            p = updated(p, {"batch_size": args.batch_size})
        rt = setup_runtime(where.device, args.precision, p.channels_last, args.threads or where.threads)
        print(json.dumps({"threads": torch.get_num_threads(),
                          **words_on_off(p, rt, args.words, args.steps, args.rounds, args.precision),
                          "load_average": os.getloadavg()[0]}, indent=2))
        return
    base = setup_runtime(where.device, "fp32", False, args.threads or where.threads)
    data = fake_data(4096, res, 512)
    bench = Bench(p, data, model_config(p, data), args.batch_size or p.batch_size, base)
    flops_step = bench.flops()
    peak = {"fp32": max(matmul_gflops(torch.float32, base.device, 1.0) for _ in range(2)),
            "bf16": max(matmul_gflops(torch.bfloat16, base.device, 1.0) for _ in range(2))}
    rows = variants(best_rates(bench, args.rounds, args.steps, peak), flops_step, bench.batch, peak,
                    base.device.type == "cuda" or cpu_has_fast_bf16())
    # What train.precision resolves to here (auto: bf16 only where the CPU/GPU runs it natively),
    # and whether that is the faster of the two precisions measured above.
    picked = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[pick_dtype(p.precision, base.device)]
    default = next((v for v in rows if v["precision"] == picked and v["channels_last"] == p.channels_last),
                   {"precision": picked, "channels_last": p.channels_last, "images_per_s": None})
    same_layout = {v["precision"]: v["images_per_s"] for v in rows if v["channels_last"] == p.channels_last}
    st = bench.state(base)
    print(json.dumps({
        "device": str(base.device), "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "resolution": res, "batch_size": bench.batch,
        "params_g": sum(x.numel() for x in st.g_raw.parameters()), "params_d": sum(x.numel() for x in st.d_raw.parameters()),
        "gflop_per_step": round(flops_step / 1e9, 2), "gflop_per_image": round(flops_step / bench.batch / 1e9, 3),
        "matmul_gflop_s": {k: round(v, 1) for k, v in peak.items()},
        "default": default, "precision_param": p.precision,
        "default_is_fastest_precision": picked == max(same_layout, key=lambda k: same_layout[k]),
        "variants": rows,
        **({"epoch_images": args.epoch_images, "seconds_per_epoch": round(args.epoch_images / default["images_per_s"], 1)}
           if args.epoch_images and default["images_per_s"] else {}),
        "load_average": os.getloadavg()[0],
    }, indent=2))


if __name__ == "__main__":
    main()
