"""User-caused failures are one line naming the file, key or URI, a non-zero exit and no traceback.

Real processes throughout (the stages and the CLI as a user runs them); ``--debug`` and
``T2I_DEBUG=1`` bring the traceback back.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from t2i.errors import UserError, disk_full, run_main

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = dict(steps=4, batch_size=8, checkpoint_every=2, sample_every=1000, log_every=1, precision="fp32",
                  model=dict(z_dim=8, g_width=32, d_width=16, attention=[8], caption_code=False), loss=dict(matcher_weight=0.0))


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    if "T2I_DEBUG" not in env:
        full.pop("T2I_DEBUG", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=300)


def one_line(proc: subprocess.CompletedProcess, prefix: str, rc: int = 2) -> str:
    assert proc.returncode == rc, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"{prefix}: error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_train_params_errors_are_one_message_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("train: [\n", encoding="utf-8")  # invalid YAML
    proc = run(["-m", "stages.train", "--no-tracking"], tmp_path)
    assert "params.yaml is not valid YAML" in proc.stderr
    one_line(proc, "train")  # the YAML error's own lines (position, caret) follow in the same message
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {**TINY_TRAIN, "steps": "abc"}}))
    proc = run(["-m", "stages.train", "--no-tracking"], tmp_path)
    one_line(proc, "train")
    assert "train.steps" in proc.stderr  # the message lists each bad key on a line of its own
    for debug in (run(["-m", "stages.train", "--no-tracking", "--debug"], tmp_path),
                  run(["-m", "stages.train", "--no-tracking"], tmp_path, T2I_DEBUG="1")):
        assert debug.returncode == 2 and "Traceback" in debug.stderr and "train.steps" in debug.stderr


def test_train_says_too_few_captions_for_the_batch(tmp_path: Path) -> None:
    from test_train_fixtures import make_dataset

    make_dataset(tmp_path, n_images=3)  # 6 captions < batch_size 8
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": TINY_TRAIN, "train_runtime": {"threads": 1}}))
    line = one_line(run(["-m", "stages.train", "--no-tracking"], tmp_path), "train")
    assert "batch_size 8" in line


def test_train_with_the_mlflow_server_down_names_the_uri(tmp_path: Path) -> None:
    from test_train_fixtures import make_dataset

    make_dataset(tmp_path, n_images=16)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": TINY_TRAIN, "train_runtime": {"threads": 1}}))
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{s.getsockname()[1]}"
    proc = run(["-m", "stages.train"], tmp_path, MLFLOW_TRACKING_URI=uri)
    line = one_line(proc, "train", rc=1)
    assert uri in line and "mlflow server" in proc.stderr
    assert not (tmp_path / "models").exists()


def test_cli_names_a_foreign_model_file(tmp_path: Path) -> None:
    from test_cli_generate import save_tiny

    model = save_tiny(tmp_path / "models")
    (model / "generator.safetensors").write_bytes(b"<html><body>404 Not Found</body></html>")
    line = one_line(run(["-m", "t2i.cli", "generate", "a red flower", "--model", str(model), "-o",
                         str(tmp_path / "x.png"), "--device", "cpu"], tmp_path), "t2i generate")
    assert "generator.safetensors" in line and "HTML" in line
    assert not (tmp_path / "x.png").exists()


def test_evaluate_names_a_pickled_model_file(tmp_path: Path) -> None:
    from test_cli_generate import save_tiny

    model = save_tiny(tmp_path / "models")
    (model / "generator.safetensors").write_bytes(b"\x80\x04\x95" + b"\x00" * 64)  # a pickle's first bytes
    (tmp_path / "params.yaml").write_text("evaluate: {}\n", encoding="utf-8")
    line = one_line(run(["-m", "stages.evaluate", "--no-tracking"], tmp_path), "evaluate")
    assert "models/generator.safetensors" in line and "pickle" in line
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("content, expect", [
    (b"", "is empty"),
    ("caption,petal_color\nune fleur rouge,rouge\n".encode("latin-1") + b"\xe9t\xe9\n", "not UTF-8"),
    (b"caption,petal_color\na chartreuse flower,chartreuse\n", "unknown petal_color value(s) ['chartreuse']"),
])
def test_probe_rejects_bad_csv_files(tmp_path: Path, content: bytes, expect: str) -> None:
    csv = tmp_path / "probe.csv"
    csv.write_bytes(content)
    line = one_line(run(["-m", "t2i.cli", "probe", str(csv), "--model", str(tmp_path / "none")], tmp_path), "t2i probe")
    assert expect in line and str(csv) in line
    if "chartreuse" in expect:
        assert "red, orange, yellow" in line  # the valid values are listed


def test_generate_n_has_an_upper_bound_checked_before_work(tmp_path: Path) -> None:
    from t2i.cli import MAX_N
    from t2i.pipeline import GenerationPipeline

    assert MAX_N == GenerationPipeline.max_per_caption  # the CLI's bound is the pipeline's
    proc = run(["-m", "t2i.cli", "generate", "a red flower", "-n", "100000", "--model", str(tmp_path / "none")], tmp_path)
    line = one_line(proc, "t2i generate")
    assert f"between 1 and {MAX_N}" in line and "100000" in line  # not "no model": checked before loading
    assert f"1 to {MAX_N}" in run(["-m", "t2i.cli", "generate", "-h"], tmp_path).stdout


def test_run_main_keeps_the_traceback_of_a_bug(capsys: pytest.CaptureFixture[str]) -> None:
    def bug(argv: list[str]) -> int:
        raise KeyError("not a user error")

    with pytest.raises(KeyError):
        run_main(bug, "x", [])
    assert run_main(lambda a: (_ for _ in ()).throw(UserError("fix this")), "x", []) == 2
    assert capsys.readouterr().err == "x: error: fix this\n"


def test_disk_full_is_recognised_in_safetensors_text_and_chained_errors() -> None:
    rust = RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })')
    assert disk_full(rust, "checkpoints/") is not None and "checkpoints/" in str(disk_full(rust, "checkpoints/"))
    try:
        try:
            raise OSError(28, "No space left on device", "data/x.npy")
        except OSError as inner:
            raise ValueError("wrapped") from inner
    except ValueError as outer:
        assert "data/x.npy" in str(disk_full(outer))
    assert disk_full(ValueError("no")) is None
