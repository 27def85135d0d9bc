"""GenerationPipeline: loaded from models/, a runs:/ URI or a registered model, called with
captions, a seed and a count; clear errors for every way a source can be unusable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from t2i.models import GANConfig, Generator, save_generator
from t2i.pipeline import GenerationPipeline

CAPTIONS = ["a red flower with a yellow stem", "a yellow flower with a red stem"]


def save_tiny(directory: Path, encoder: dict | None = None) -> Path:
    torch.manual_seed(0)
    config = GANConfig(resolution=32, text_dim=16, z_dim=8, g_width=32, attention=())
    info = {"model": config.to_dict(), "step": 7}
    if encoder is not None:
        info["encoder"] = encoder
    save_generator(directory, Generator(config), info)
    return directory


def with_vectors(pipe: GenerationPipeline, captions: list[str]) -> GenerationPipeline:
    """Stored 16-d vectors stand in for an encoder (the bundled USE is 512-d)."""
    vectors = np.random.default_rng(0).standard_normal((len(captions), 16)).astype(np.float32)
    pipe.remember(captions, vectors)
    return pipe


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("models"), {"name": "use", "dim": 16})


def test_call_returns_caption_major_images_repeatable_by_seed(model: Path) -> None:
    pipe = with_vectors(GenerationPipeline.from_pretrained(model, device="cpu"), CAPTIONS)
    assert pipe.resolution == 32 and isinstance(pipe.config, GANConfig) and pipe.encoder_name == "use"
    images = pipe(CAPTIONS, seed=3, n=2)
    assert len(images) == 4 and all(isinstance(i, Image.Image) and i.size == (32, 32) for i in images)
    arr = pipe.generate_array(CAPTIONS, seed=3, n=2)
    assert arr.shape == (4, 32, 32, 3) and arr.dtype == np.uint8
    assert np.array_equal(np.stack([np.asarray(i) for i in images]), arr)
    # Caption-major, and each caption's images do not depend on the other captions in the call.
    assert np.array_equal(arr[2:], pipe.generate_array(CAPTIONS[1:], seed=3, n=2))
    assert not np.array_equal(arr[0], arr[1])  # two noise draws of one caption
    assert not np.array_equal(arr[0], arr[2])  # two captions, the same noise
    assert not np.array_equal(arr, pipe.generate_array(CAPTIONS, seed=4, n=2))
    again = with_vectors(GenerationPipeline.from_pretrained(model / "generator.safetensors", device="cpu"), CAPTIONS)
    assert np.array_equal(arr, again.generate_array(CAPTIONS, seed=3, n=2))


def test_limits_and_bad_requests_are_value_errors(model: Path) -> None:
    pipe = with_vectors(GenerationPipeline.from_pretrained(model, device="cpu"), CAPTIONS)
    with pytest.raises(ValueError, match="at most 256"):
        pipe.generate_array(CAPTIONS * 3, n=64)
    with pytest.raises(ValueError, match="between 1 and 64"):
        pipe(CAPTIONS[:1], n=65)
    with pytest.raises(ValueError, match="caption is empty"):
        pipe(["  "])
    with pytest.raises(TypeError, match="not one string"):
        pipe(CAPTIONS[0])


def test_encodes_new_captions_with_the_encoder_in_the_config(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = GANConfig(resolution=32, text_dim=512, z_dim=8, g_width=32, attention=())
    save_generator(tmp_path, Generator(config), {"model": config.to_dict()})  # no encoder: the bundled USE
    pipe = GenerationPipeline.from_pretrained(tmp_path, device="cpu")
    assert pipe.encoder_name == "use"
    text = pipe.encode(CAPTIONS)
    assert text.shape == (2, 512) and np.allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-4)
    pipe.remember(CAPTIONS[:1], 2 * text[:1])  # stored vectors win for the captions they cover
    assert np.allclose(pipe.encode(CAPTIONS), np.stack([2 * text[0], text[1]]), atol=1e-5)


def test_unusable_sources_name_the_source_and_what_is_missing(model: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothing.*dvc repro"):
        GenerationPipeline.from_pretrained(tmp_path / "nothing")
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_bytes((model / "config.json").read_bytes())
    with pytest.raises(FileNotFoundError, match="generator.safetensors"):
        GenerationPipeline.from_pretrained(half)
    (half / "generator.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"half/generator.safetensors: not a valid safetensors file"):
        GenerationPipeline.from_pretrained(half)
    other = save_tiny(tmp_path / "other")
    cfg = GANConfig(resolution=32, text_dim=16, z_dim=8, g_width=64, attention=()).to_dict()
    (other / "config.json").write_text(json.dumps({"model": cfg}), encoding="utf-8")
    with pytest.raises(ValueError, match="does not match the architecture"):
        GenerationPipeline.from_pretrained(other)
    wrong = save_tiny(tmp_path / "wrong", {"name": "use", "dim": 512})
    with pytest.raises(ValueError, match=r"encoder dim 512 != generator text_dim 16"):
        GenerationPipeline.from_pretrained(wrong)


def test_loads_from_a_run_and_a_registered_model(model: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    from mlflow import MlflowClient

    from t2i import tracking

    run = tracking.start_run("t2i", None, {}, {})
    for name in ("generator.safetensors", "config.json"):  # what the train stage logs
        run.log_artifact(model / name, "generator_files")
    run.end()
    expected = with_vectors(GenerationPipeline.from_pretrained(model, "cpu"), CAPTIONS).generate_array(CAPTIONS, 1, 2)
    client = MlflowClient(tracking.tracking_uri())
    client.create_registered_model("t2i-generator")
    artifacts = client.get_run(run.run_id).info.artifact_uri
    version = client.create_model_version("t2i-generator", f"{artifacts}/generator_files", run_id=run.run_id)
    client.set_registered_model_alias("t2i-generator", "champion", version.version)
    for uri in (f"runs:/{run.run_id}", f"runs:/{run.run_id}/generator_files",
                f"models:/t2i-generator/{version.version}", "models:/t2i-generator@champion"):
        pipe = with_vectors(GenerationPipeline.from_pretrained(uri, "cpu"), CAPTIONS)
        assert np.array_equal(pipe.generate_array(CAPTIONS, 1, 2), expected), uri
    with pytest.raises(FileNotFoundError, match=r"runs:/.*/nothing_here"):
        GenerationPipeline.from_pretrained(f"runs:/{run.run_id}/nothing_here")
    with pytest.raises(FileNotFoundError, match="models:/no-such-model/1"):
        GenerationPipeline.from_pretrained("models:/no-such-model/1")
