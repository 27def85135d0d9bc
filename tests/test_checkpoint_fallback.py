"""Checkpoints: the last two are kept; a damaged or foreign newest file falls back to the older
one and says so; a damaged model file is an error that names it; killed writers' temp files go."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from t2i.safe_load import DamagedFileError, load_safetensors_checked, read_header
from t2i.train.checkpoint import FILE, PREV, load_checkpoint, restore, save_checkpoint
from test_train_fixtures import make_dataset, outputs_in, small_params


def _state(seed: int) -> SimpleNamespace:
    """The parts of a GANState a checkpoint holds, as small real modules and Adam optimisers."""
    torch.manual_seed(seed)
    g, d = torch.nn.Linear(4, 3), torch.nn.Linear(3, 1)
    ema = torch.nn.Linear(4, 3)
    opt_g, opt_d = torch.optim.Adam(g.parameters()), torch.optim.Adam(d.parameters())
    for opt, m in ((opt_g, g), (opt_d, d)):  # one step so Adam has state tensors
        m(torch.randn(2, m.in_features)).sum().backward()
        opt.step()
    return SimpleNamespace(g_raw=g, d_raw=d, ema=ema, opt_g=opt_g, opt_d=opt_d)


def _truncate(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


def test_save_keeps_last_two(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, _state(0), 10, {})
    assert not (tmp_path / PREV).exists()
    save_checkpoint(tmp_path, _state(1), 20, {})
    save_checkpoint(tmp_path, _state(2), 30, {})
    assert load_checkpoint(tmp_path).step == 30
    # prev is the one before last, a full copy (a hard link to the old inode), not the same file.
    os.unlink(tmp_path / FILE)
    messages: list[str] = []
    ck = load_checkpoint(tmp_path, say=messages.append)
    assert ck is not None and ck.step == 20 and ck.path == tmp_path / PREV
    assert "missing" in messages[0] and "falling back" in messages[0]


@pytest.mark.parametrize("damage", ["truncate_header", "truncate_data", "bitflip", "foreign", "pickle"])
def test_damaged_last_falls_back_to_prev_saying_so(tmp_path: Path, damage: str) -> None:
    save_checkpoint(tmp_path, _state(0), 10, {"fingerprint": "x"})
    save_checkpoint(tmp_path, _state(1), 20, {"fingerprint": "x"})
    last = tmp_path / FILE
    size = last.stat().st_size
    if damage == "truncate_header":
        _truncate(last, 100)
    elif damage == "truncate_data":
        _truncate(last, size - 7)
    elif damage == "bitflip":
        data = bytearray(last.read_bytes())
        data[-3] ^= 0x10  # inside the last tensor's bytes: the framing stays valid
        last.write_bytes(bytes(data))
    elif damage == "foreign":
        save_file({"w": torch.zeros(2)}, str(last))  # valid safetensors, not a t2i checkpoint
    else:
        torch.save({"w": torch.zeros(2)}, last)  # a zip-pickle: must be refused, never loaded
    messages: list[str] = []
    ck = load_checkpoint(tmp_path, say=messages.append)
    assert ck is not None and ck.step == 10 and ck.path == tmp_path / PREV
    assert len(messages) == 1 and str(last) in messages[0] and "falling back to the older" in messages[0]
    state = _state(5)
    restore(state, ck)
    assert torch.equal(state.g_raw.weight, _state(0).g_raw.weight)

    # The next save must not push the damaged file over the good prev.
    save_checkpoint(tmp_path, _state(2), 11, {"fingerprint": "x"})
    assert load_checkpoint(tmp_path).step == 11
    os.unlink(last)
    assert load_checkpoint(tmp_path, say=messages.append).step == 10


def test_both_damaged_starts_fresh_naming_both(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, _state(0), 10, {})
    save_checkpoint(tmp_path, _state(1), 20, {})
    _truncate(tmp_path / FILE, 50)
    _truncate(tmp_path / PREV, 0)
    messages: list[str] = []
    assert load_checkpoint(tmp_path, say=messages.append) is None
    assert str(tmp_path / FILE) in messages[0] and str(tmp_path / PREV) in messages[0]
    assert "starting from step 0" in messages[0]


@pytest.mark.parametrize("content,expect", [
    (b"", "empty or cut off"),
    (b"\x80\x04\x95" + b"\x00" * 64, "pickle"),
    (b"<html>not found</html>" * 4, "text/HTML"),
    (b"\xff" * 64, "does not fit"),
])
def test_foreign_weights_name_the_file(tmp_path: Path, content: bytes, expect: str) -> None:
    path = tmp_path / "generator.safetensors"
    path.write_bytes(content)
    with pytest.raises(DamagedFileError, match=expect) as info:
        load_safetensors_checked(path)
    assert str(path) in str(info.value)


def test_valid_file_loads_and_header_checks_pass(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.arange(6.0).view(2, 3), "b": torch.zeros(0)}, str(path))
    assert set(read_header(path)) >= {"a", "b"}
    assert torch.equal(load_safetensors_checked(path)["a"], torch.arange(6.0).view(2, 3))


def test_killed_writer_leftovers_are_removed_by_next_save(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # exited: its pid is free
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f".{FILE}.tmp-{dead_pid}-abcd1234"
        legacy = tmp_path / f".{FILE}.k2j4_x9a"  # the pid-less name older code wrote
        busy = tmp_path / f".{FILE}.tmp-{live.pid}-abcd1234"
        for p in (stale, legacy, busy):
            p.write_bytes(b"partial")
        save_checkpoint(tmp_path, _state(0), 1, {})
        assert not stale.exists() and not legacy.exists()
        assert busy.exists()  # a live writer's file is never touched
    finally:
        live.kill()
        live.wait()


def test_real_loop_resumes_from_prev_when_last_is_truncated(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    from t2i.train import load_train_data, train

    data = load_train_data(tmp_path / "data/prepared", tmp_path / "data/embeddings")
    params = small_params(steps=6, checkpoint_every=2, loss={"matcher_weight": 0.0})
    out = outputs_in(tmp_path)
    train(params, data, out, stop_after=4)  # checkpoints at 2 and 4
    _truncate(out.checkpoints / FILE, 1000)
    result = train(params, data, out)
    assert result.resumed_from == 2 and result.step == 6


IO_PY = Path(__file__).resolve().parents[1] / "t2i" / "models" / "io.py"


@pytest.mark.skipif("load_safetensors_checked" not in IO_PY.read_text(),
                    reason="t2i/models/io.py does not load through t2i.safe_load yet (docs/reliability.md, fault 2)")
def test_load_generator_names_a_damaged_weights_file(tmp_path: Path) -> None:
    from t2i.models import GANConfig, load_generator, save_generator
    from t2i.models.generator import Generator

    cfg = GANConfig(resolution=32, text_dim=8, z_dim=4, g_width=16, d_width=8, attention=(8,))
    save_generator(tmp_path, Generator(cfg), {"model": cfg.to_dict()})
    weights = tmp_path / "generator.safetensors"
    _truncate(weights, weights.stat().st_size // 2)
    with pytest.raises(DamagedFileError, match="generator.safetensors") as info:
        load_generator(tmp_path)
    assert str(weights) in str(info.value)


def test_fingerprint_covers_steps_and_code() -> None:
    """A run of another length is another experiment: it never resumes this one's checkpoint."""
    from t2i.train import checkpoint

    base = {"steps": 40, "seed": 0, "log_every": 5}
    fp = checkpoint.fingerprint(base, "data", 1)
    assert checkpoint.fingerprint({**base, "steps": 50}, "data", 1) != fp
    assert checkpoint.fingerprint({**base, "log_every": 10}, "data", 1) == fp  # cadence only
    assert len(checkpoint.code_identity()) == 16
