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

from model_fixtures import save_word_model

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


# -- word attention: tokens reach the generator; sentence-only models are untouched -------------------

WORDS = ["a red flower with a yellow stem", "a yellow flower with a red stem", "Crimson petals, blue stalk!"]
USE_INFO = {"name": "use", "dim": 512, "token_states": True, "max_tokens": 64}


def direct(pipe: GenerationPipeline, seeds: list[int], sentence: np.ndarray, tokens=None, mask=None) -> np.ndarray:
    """What the generator draws when called by hand: the reference the pipeline must match."""
    from t2i.pipeline import noise, to_uint8

    words = {} if tokens is None else {"tokens": torch.from_numpy(tokens), "token_mask": torch.from_numpy(mask)}
    with torch.no_grad():
        return to_uint8(pipe.generator(noise(seeds, pipe.config.z_dim), torch.from_numpy(sentence), **words))


def no_encoder():
    raise AssertionError("a sentence-only model with stored vectors must not build an encoder")


def test_sentence_only_model_draws_exactly_what_its_generator_draws(model: Path) -> None:
    from t2i.models.io import read_config, read_generator

    config = read_config(model)
    pipe = GenerationPipeline(read_generator(model, config, torch.device("cpu")), config, torch.device("cpu"),
                              encoder_factory=no_encoder)
    with_vectors(pipe, CAPTIONS)
    assert not pipe.uses_tokens
    text = pipe.encode_text(CAPTIONS)
    assert text.tokens is None and text.mask is None  # never computed, never asked of an encoder
    seeds = [5, 9]
    assert np.array_equal(pipe.generate_with_seeds(CAPTIONS, seeds), direct(pipe, seeds, text.sentence))


@pytest.fixture(scope="module")
def word_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_word_model(tmp_path_factory.mktemp("word_model"), USE_INFO)


def test_word_attention_model_gets_the_encoders_tokens(word_model: Path) -> None:
    pipe = GenerationPipeline.from_pretrained(word_model, device="cpu")
    assert pipe.uses_tokens and pipe.token_width == 64
    text = pipe.encode_text(WORDS)
    assert text.tokens.shape == (3, 64, 512) and text.tokens.dtype == np.float16 and text.mask.shape == (3, 64)
    states = pipe._get_encoder().encode_tokens(WORDS, max_tokens=64)
    assert np.array_equal(text.mask.sum(1), states.mask.sum(1))
    assert np.allclose(text.sentence, pipe.encode(WORDS), atol=1e-5) and np.array_equal(text.sentence, states.sentence)
    seeds = [1, 2, 3]
    images = pipe.generate_with_seeds(WORDS, seeds)
    assert np.array_equal(images, direct(pipe, seeds, text.sentence, text.tokens, text.mask))
    # The words matter: the same sentence vectors without tokens draw other images.
    assert np.abs(images.astype(int) - direct(pipe, seeds, text.sentence).astype(int)).mean() > 1.0
    # Encoded alone, a caption's states differ from those of a batch in the last float bits (the
    # encoder's batching), so its image may move by one level; stored states are exact (below).
    alone = pipe.generate_with_seeds(WORDS[2:], seeds[2:]).astype(int)
    assert np.abs(images[2:] - alone).max() <= 1


def test_stored_token_states_draw_what_the_encoder_would(word_model: Path, tmp_path: Path) -> None:
    import pandas as pd

    from t2i.text import get_encoder
    from t2i.text.embed_table import embed_table, load_text_features
    from t2i.text.token_store import TokenStore

    pd.DataFrame({"caption": WORDS[:2]}).to_parquet(tmp_path / "captions.parquet")
    embed_table(tmp_path / "captions.parquet", tmp_path / "emb", get_encoder("use"), progress=False)
    features = load_text_features(tmp_path / "emb", tokens=False)
    fresh = GenerationPipeline.from_pretrained(word_model, device="cpu")
    stored = GenerationPipeline(fresh.generator, fresh.saved, fresh.device, encoder_factory=no_encoder)
    stored.remember(WORDS[:2], features.sentence, TokenStore(tmp_path / "emb"))
    a, b = stored.encode_text(WORDS[:2]), fresh.encode_text(WORDS[:2])
    assert np.array_equal(a.mask, b.mask)
    assert np.abs(a.tokens.astype(np.float32) - b.tokens.astype(np.float32)).max() < 1e-2
    seeds = [7, 8]
    images = stored.generate_with_seeds(WORDS[:2], seeds)
    assert np.abs(images.astype(int) - fresh.generate_with_seeds(WORDS[:2], seeds)).max() <= 1  # float16 rounding
    # A caption's image does not depend on the other captions of the call (one token width for all).
    assert np.array_equal(images[1:], stored.generate_with_seeds(WORDS[1:2], seeds[1:]))
    assert np.array_equal(stored.generate_array(WORDS[1:2], seed=4, n=2), stored.generate_array(WORDS[:2], seed=4, n=2)[2:])
    # A caption nobody stored is encoded (sentence and tokens) by the pipeline's own encoder.
    both = GenerationPipeline(fresh.generator, fresh.saved, fresh.device)
    both.remember(WORDS[:2], features.sentence, TokenStore(tmp_path / "emb"))
    mixed = both.generate_with_seeds(WORDS, [7, 8, 9])
    assert np.array_equal(mixed[:2], images)
    assert np.array_equal(mixed[2], fresh.generate_with_seeds(WORDS[2:], [9])[0])
    with pytest.raises(ValueError, match="stale"):
        stored.remember(WORDS, np.zeros((3, 512), np.float32), TokenStore(tmp_path / "emb"))


class SentenceOnlyUse:
    """The bundled USE behind a sentence-only face, as a tfhub model without token outputs is."""

    token_states = False

    def __init__(self) -> None:
        from t2i.text import get_encoder

        self.inner = get_encoder("use")
        self.dim = self.inner.dim

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.inner.encode(texts)


def test_word_model_falls_back_to_the_sentence_with_a_sentence_only_encoder(word_model: Path) -> None:
    pipe = GenerationPipeline.from_pretrained(word_model, device="cpu")
    only = GenerationPipeline(pipe.generator, pipe.saved, pipe.device, encoder_factory=SentenceOnlyUse)
    with pytest.warns(UserWarning, match="sentence-only"):
        images = only.generate_with_seeds(WORDS, [1, 2, 3])
    assert np.array_equal(images, direct(pipe, [1, 2, 3], pipe.encode(WORDS)))


def test_caption_code_model_reads_a_new_sentences_tokens(tmp_path: Path) -> None:
    """A model conditioned on the caption code (no word attention) still needs the tokens: the
    pipeline computes them for any sentence, and they change the image."""
    torch.manual_seed(0)
    config = GANConfig(resolution=32, text_dim=512, z_dim=8, g_width=32, attention=(), caption_code=True,
                       code_token_dim=512)
    g = Generator(config)
    with torch.no_grad():  # a code that the words move: the untrained pool's output map scaled up
        g.caption_code.pool.out.weight.mul_(20.0)
    save_generator(tmp_path, g, {"model": config.to_dict(), "encoder": USE_INFO, "step": 1})
    pipe = GenerationPipeline.from_pretrained(tmp_path, device="cpu")
    assert pipe.uses_tokens and not pipe.config.word_attention
    text = pipe.encode_text(WORDS)
    assert text.tokens.shape[:2] == text.mask.shape and text.mask.sum(1).min() > 0
    seeds = [1, 2, 3]
    images = pipe.generate_with_seeds(WORDS, seeds)
    assert np.array_equal(images, direct(pipe, seeds, text.sentence, text.tokens, text.mask))
    assert np.abs(images.astype(int) - direct(pipe, seeds, text.sentence).astype(int)).mean() > 1.0
