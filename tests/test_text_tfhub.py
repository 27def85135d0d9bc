"""The `tfhub` encoder for real: the embed stage loads, through `hub.load`, a SavedModel built here.

The model has USE's signature (a batch of strings in, (n, 512) floats out); its vectors are a
deterministic function of each string's hash, so the test knows what the stage must write.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_hub")

from t2i.text import EncoderError, encoder_from_info  # noqa: E402
from t2i.text.embed_table import load_embeddings  # noqa: E402
from t2i.text.tfhub import TfHubEncoder  # noqa: E402
from test_embed_stage import CAPTIONS, run_stage, write_table  # noqa: E402


class TinyUse(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        self.basis = tf.Variable(tf.random.stateless_normal([64, 512], seed=[1, 2]))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, texts: tf.Tensor) -> tf.Tensor:
        bucket = tf.strings.to_hash_bucket_fast(texts, 64)  # (n,)
        return tf.gather(self.basis, bucket) * 3.0  # (n, 512), deliberately not unit norm


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny_use")
    tf.saved_model.save(TinyUse(), str(path))
    return path


def expected(texts: list[str]) -> np.ndarray:
    module = TinyUse()
    v = module(tf.constant(texts)).numpy()
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_stage_runs_tfhub_through_hub_load(tmp_path, saved_model):
    write_table(tmp_path / "data" / "prepared", CAPTIONS)
    proc = run_stage(tmp_path, {"encoder": "tfhub", "handle": str(saved_model), "chunk_size": 4})
    assert proc.returncode == 0, proc.stderr
    emb, info = load_embeddings(tmp_path / "data" / "embeddings")
    assert info["name"] == "tfhub" and info["handle"] == str(saved_model) and info["dim"] == 512
    # USE SavedModels give sentence vectors only: encoder.json says so and no token file is written.
    assert info["token_states"] is False and not (tmp_path / "data" / "embeddings" / "tokens.npy").exists()
    assert emb.shape == (len(CAPTIONS), 512) and emb.dtype == np.float32
    np.testing.assert_allclose(emb, expected(CAPTIONS), atol=1e-6)
    rebuilt = encoder_from_info(info)  # what evaluate / `t2i generate` do
    np.testing.assert_allclose(rebuilt.encode(CAPTIONS[:3]), emb[:3], atol=1e-6)


def test_remote_handle_offline_says_what_to_do(tmp_path, monkeypatch):
    # .invalid never resolves (RFC 2606), so this fails as it does offline, even on a machine
    # with network access, and never downloads anything.
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path))  # nothing cached: hub.load must download
    with pytest.raises(EncoderError) as err:
        TfHubEncoder("https://tfhub.invalid/google/universal-sentence-encoder/4")
    msg = str(err.value)
    assert "offline" in msg and "embed.handle" in msg and "saved_model.pb" in msg


def test_bad_handles(tmp_path):
    with pytest.raises(EncoderError, match="needs embed.handle"):
        TfHubEncoder(None)
    with pytest.raises(EncoderError, match="saved_model.pb"):
        TfHubEncoder(str(tmp_path))
    with pytest.raises(EncoderError, match="no such directory"):
        TfHubEncoder(str(tmp_path / "missing"))
