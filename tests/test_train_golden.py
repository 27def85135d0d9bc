"""Behaviour pinned: 30 CPU fp32 steps on the tiny fixture give the recorded losses, bit for bit.

tests/golden/train_losses.json holds every per-step figure of two runs (the defaults, and a
variant that turns the other switches: BCE, MA-GP, no hard negatives or extra captions, no
attention, affine / concat conditioning, scale text_norm), recorded on an AVX2 CPU before the
training code was split into negatives / step / loop. A refactor that keeps the random draws in
the same order reproduces them exactly; a change of what training computes does not.

Bit for bit holds only on one instruction set: ATen and oneDNN pick other kernels on an AVX-512
CPU, the first step's G loss differs in its last bit, and the hard-negative ranking amplifies
that within a few steps. An AVX-512 CPU with AMX tiles (Intel Sapphire Rapids and later) gets
other oneDNN kernels again, even in fp32: its D loss differs in the last bit at step 1. So each CPU
kind (`cpu_kind()`: the capability, plus AMX) has its own recording: train_losses.<KIND>.json,
made by this test with T2I_RECORD_GOLDEN=1 from code that reproduces an existing recording on its
own CPU kind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from t2i.train import load_train_data, train
from test_train_fixtures import ONE_THREAD, make_dataset, outputs_in, small_params

GOLDEN_DIR = Path(__file__).parent / "golden"
RECORDED_ON = "AVX2"  # train_losses.json's CPU capability


def cpu_kind() -> str:
    """ATen's CPU capability (AVX2, AVX512, ...), with _AMX where the CPU has AMX tiles."""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return torch.backends.cpu.get_cpu_capability() + ("_AMX" if amx else "")


def golden_path(capability: str) -> Path:
    return GOLDEN_DIR / ("train_losses.json" if capability == RECORDED_ON else f"train_losses.{capability}.json")

# The recorded runs predate the word-order swap as a contrastive candidate (train.loss.swap_candidate):
# it is off here, so the pinned figures still check everything else the step computes. The fixture's
# encoder stores no token states, so word attention is off by itself (model_config).
RUNS: dict[str, dict[str, Any]] = {
    "defaults": dict(loss=dict(swap_candidate=False)),
    "variant": dict(
        seed=3,
        model=dict(z_dim=4, attention=[], conditioning="affine", d_conditioning="concat", text_norm="scale"),
        loss=dict(kind="bce", ma_gp_weight=2.0, ma_gp_every=2, near_miss_pool=1, near_miss=2.0, contrastive_captions=1,
                  contrastive_word_order=0, diversity_weight=0.0, mismatch_weight=0.5, contrastive_g=0.0,
                  contrastive_candidates=4, swap_candidate=False),
        optim=dict(lr_g=2e-4, beta1=0.5, ema_decay=0.99),
    ),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_thirty_steps_give_the_recorded_losses(tmp_path: Path, name: str) -> None:
    data = load_train_data(*make_dataset(tmp_path))
    params = small_params(steps=30, checkpoint_every=30, sample_every=1000, log_every=1, **RUNS[name])
    result = train(params, data, outputs_in(tmp_path / name), runtime=ONE_THREAD)
    got = [{k: v for k, v in row.items() if k != "images_per_s"} for row in result.history]
    path = golden_path(cpu_kind())
    if os.environ.get("T2I_RECORD_GOLDEN") == "1":
        recorded = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        path.write_text(json.dumps({**recorded, name: got}, indent=0) + "\n", encoding="utf-8")
    if not path.is_file():
        pytest.skip(f"no recording for this CPU kind: {path.name} (record it with T2I_RECORD_GOLDEN=1 "
                    f"from code that passes on an {RECORDED_ON} CPU)")
    want = json.loads(path.read_text(encoding="utf-8"))[name]
    assert len(got) == len(want) == 30
    for g, w in zip(got, want):
        assert g == w, f"step {w['step']}: {g} != {w}"
