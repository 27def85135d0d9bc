"""`t2i generate` / `t2i probe` end to end on a tiny randomly initialised generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from t2i.cli import main
from t2i.models import GANConfig, Generator, save_generator


def save_tiny(directory: Path, text_dim: int = 512, encoder_dim: int = 512) -> Path:
    torch.manual_seed(0)
    config = GANConfig(resolution=32, text_dim=text_dim, z_dim=8, g_width=32, attention=())
    encoder = {"name": "use", "dim": encoder_dim, "version": None, "handle": None}
    save_generator(directory, Generator(config), {"model": config.to_dict(), "encoder": encoder, "step": 0})
    return directory


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("models"))


def test_generate_writes_grid_and_is_repeatable(model: Path, tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    args = ["generate", "a red flower with a yellow stem", "-n", "3", "--model", str(model), "--device", "cpu"]
    assert main([*args, "-o", str(a), "--seed", "1"]) == 0
    assert main([*args, "-o", str(b), "--seed", "1"]) == 0
    assert main([*args, "-o", str(c), "--seed", "2"]) == 0
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    grid = np.asarray(Image.open(a))
    assert grid.shape[1] > 3 * 64  # caption strip + three upscaled samples


def test_generate_errors_are_clear(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = ["-o", str(tmp_path / "x.png"), "--device", "cpu"]
    assert main(["generate", "a red flower", "--model", str(tmp_path / "nothing"), *out]) == 2
    assert "dvc repro" in capsys.readouterr().err
    assert main(["generate", "   ", "--model", str(model), *out]) == 2
    assert "caption is empty" in capsys.readouterr().err
    wrong = save_tiny(tmp_path / "wrong", text_dim=16, encoder_dim=512)
    assert main(["generate", "a red flower", "--model", str(wrong), *out]) == 2
    err = capsys.readouterr().err
    assert "512" in err and "16" in err
    assert not (tmp_path / "x.png").exists()


def test_probe_rejects_bad_csv(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "probe.csv"
    csv.write_text("caption,petal_colour\na red flower,red\n", encoding="utf-8")
    assert main(["probe", str(csv), "--model", str(model)]) == 2
    assert "petal_colour" in capsys.readouterr().err
    csv.write_text("text\na red flower\n", encoding="utf-8")
    assert main(["probe", str(csv), "--model", str(model)]) == 2
    assert "'caption' column" in capsys.readouterr().err
    # Captions alone ask for nothing to check: an error, not a vacuous 1.00.
    csv.write_text("caption,stem_color\na red flower,\nblue petals,\n", encoding="utf-8")
    assert main(["probe", str(csv), "--model", str(model)]) == 2
    assert "no row states an attribute" in capsys.readouterr().err


def test_probe_scores_each_caption_and_writes_grid(model: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from t2i.config import IngestParams
    from t2i.data import synthetic
    from t2i.data.prepared import write_prepared

    ds = synthetic.read(IngestParams(num_images=120, workers=1))
    prepared = write_prepared(tmp_path / "prepared", ds.table, ds.images, ds.manifest)
    params = tmp_path / "params.yaml"
    params.write_text("evaluate:\n  classifier_steps: 20\n", encoding="utf-8")  # mechanics, not accuracy
    csv = tmp_path / "probe.csv"
    csv.write_text("caption,petal_color,stem_color\n"
                   "a crimson bloom on a yellow stalk,red,yellow\n"
                   "yellow petals and a red stem,yellow,red\n"
                   "just a flower,,\n", encoding="utf-8")
    out = tmp_path / "probe.png"
    rc = main(["probe", str(csv), "--model", str(model), "--prepared", str(prepared), "--params", str(params),
               "--embeddings", str(tmp_path / "none"), "-n", "2", "-o", str(out), "--device", "cpu"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "crimson bloom" in printed and "petal_color=red" in printed and "overall:" in printed
    assert "'just a flower'  (no attribute given: not scored)" in printed and "(2 scored captions" in printed
    assert Image.open(out).size[1] >= 3 * 64  # three caption rows, the unscored one drawn too
