"""What `train.precision` resolves to: autocast only where it is fast."""

from __future__ import annotations

import pytest
import torch

from t2i.train.runtime import cpu_has_fast_bf16, pick_dtype

CPU = torch.device("cpu")


def test_auto_on_cpu_is_bf16_only_where_onednn_runs_it_natively() -> None:
    # On an AVX2-only CPU oneDNN emulates bf16 and a training step is ~10x slower than fp32
    # (benchmarks/train_step.py), so auto must fall back to fp32 (None = no autocast) there.
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert cpu_has_fast_bf16() == native
    assert pick_dtype("auto", CPU) == (torch.bfloat16 if native else None)


def test_explicit_precisions_are_honoured() -> None:
    assert pick_dtype("fp32", CPU) is None
    assert pick_dtype("bf16", CPU) == torch.bfloat16  # asked for: given, even where it is slow
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        pick_dtype("fp16", CPU)
