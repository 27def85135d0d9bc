"""The learning-rate schedule: constant, then linear to 0; the loop applies it to both optimisers."""

from __future__ import annotations

from pathlib import Path

import pytest

from t2i.train import Outputs, load_train_data, train
from t2i.train.checkpoint import load_checkpoint
from t2i.train.schedule import lr_factor
from test_train_fixtures import make_dataset, small_params


def test_lr_factor_is_constant_then_linear_to_zero() -> None:
    assert [lr_factor(s, 10, 1.0) for s in range(10)] == [1.0] * 10
    assert [lr_factor(s, 10, 0.5) for s in range(10)] == pytest.approx([1, 1, 1, 1, 1, 1.0, 0.8, 0.6, 0.4, 0.2])
    assert [lr_factor(s, 4, 0.0) for s in range(4)] == pytest.approx([1.0, 0.75, 0.5, 0.25])


def test_train_loop_decays_both_rates_and_resume_keeps_the_schedule(tmp_path: Path) -> None:
    data = load_train_data(*make_dataset(tmp_path))
    params = small_params(steps=6, checkpoint_every=3, lr_decay_from=0.5, lr_g=1e-3, lr_d=2e-3)
    outs = Outputs(tmp_path / "models", tmp_path / "checkpoints", tmp_path / "losses.csv")
    train(params, data, outs, stop_after=3)  # steps 0-2 run at the full rate
    ck = load_checkpoint(tmp_path / "checkpoints")
    assert ck is not None and ck.step == 3
    lrs = [ck.meta["optim"][k]["param_groups"][0]["lr"] for k in ("opt_g", "opt_d")]
    assert lrs == pytest.approx([1e-3, 2e-3])
    train(params, data, outs)  # resumes at 3; the last step (5) runs at (6 - 5) / (6 - 3) of the rate
    ck = load_checkpoint(tmp_path / "checkpoints")
    assert ck is not None and ck.step == 6
    lrs = [ck.meta["optim"][k]["param_groups"][0]["lr"] for k in ("opt_g", "opt_d")]
    assert lrs == pytest.approx([1e-3 / 3, 2e-3 / 3])
