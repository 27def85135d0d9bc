"""The embed stage: dedupe, chunked aligned writing, atomic output, and `python -m stages.embed`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from t2i.text import SentenceEncoder, get_encoder
from t2i.text.embed_table import encode_unique, embed_table, load_embeddings

ROOT = Path(__file__).resolve().parents[1]
CAPTIONS = [
    "a red flower with a yellow stem", "a yellow flower with a red stem", "",
    "a red flower with a yellow stem", "this flower has white petals and a green stem",
    "🌸 emoji 🌸", "赤い花", "a yellow flower with a red stem", "a blue flower", "",
    "a red flower with a yellow stem",
]


class Recording(SentenceEncoder):
    """The real `use` encoder, recording every caption it is asked to encode."""

    def __init__(self) -> None:
        self.inner = get_encoder("use", device="cpu", threads=1)
        self.name, self.dim, self.version = "use", self.inner.dim, self.inner.version
        self.seen: list[str] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.seen.extend(texts)
        return self.inner.encode(texts)


@pytest.fixture(scope="module")
def recording() -> Recording:
    return Recording()


def write_table(path: Path, captions: list[str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    n = len(captions)
    pd.DataFrame({
        "image_index": np.arange(n, dtype=np.int64), "split": ["train"] * n,
        "caption": captions, "class": ["flower"] * n,
    }).to_parquet(path / "captions.parquet", index=False)
    return path / "captions.parquet"


def test_identical_captions_are_encoded_once(recording):
    recording.seen.clear()
    vectors, distinct = encode_unique(recording, CAPTIONS)
    assert distinct == len(set(CAPTIONS)) == len(recording.seen)
    assert sorted(recording.seen) == sorted(set(CAPTIONS))
    direct = recording.inner.encode(CAPTIONS)
    np.testing.assert_allclose(vectors, direct, atol=1e-5)
    assert np.array_equal(vectors[0], vectors[3]) and np.array_equal(vectors[2], vectors[9])


def test_chunked_writing_is_aligned_with_rows(tmp_path, recording):
    captions = CAPTIONS * 3 + [f"a flower with {i} petals" for i in range(20)]
    table = write_table(tmp_path / "prepared", captions)
    recording.seen.clear()
    summary = embed_table(table, tmp_path / "emb", recording, chunk_size=4, progress=False)
    # chunk_size=4: dedupe is per chunk, so nothing bigger than a chunk is ever encoded at once
    assert summary["captions"] == len(captions) and len(recording.seen) == summary["distinct_per_chunk"]
    assert len(recording.seen) < len(captions)
    emb, info = load_embeddings(tmp_path / "emb")
    assert emb.shape == (len(captions), 512) and emb.dtype == np.float32
    np.testing.assert_allclose(emb, recording.inner.encode(captions), atol=1e-5)
    assert info == recording.info()
    assert sorted(os.listdir(tmp_path)) == ["emb", "prepared"]  # no temp dirs left behind


def test_failed_run_keeps_the_previous_output(tmp_path, recording):
    table = write_table(tmp_path / "prepared", CAPTIONS)
    embed_table(table, tmp_path / "emb", recording, progress=False)
    before = np.load(tmp_path / "emb" / "embeddings.npy")

    class Broken(Recording):
        def encode(self, texts: list[str]) -> np.ndarray:
            raise RuntimeError("encoder died")

    with pytest.raises(RuntimeError, match="encoder died"):
        embed_table(table, tmp_path / "emb", Broken(), progress=False)
    assert np.array_equal(np.load(tmp_path / "emb" / "embeddings.npy"), before)
    assert sorted(os.listdir(tmp_path)) == ["emb", "prepared"]


def run_stage(cwd: Path, embed_params: dict) -> subprocess.CompletedProcess:
    import yaml

    (cwd / "params.yaml").write_text(yaml.safe_dump({"embed": embed_params}), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "stages.embed"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("encoder", ["use", "bow"])
def test_stage_subprocess(tmp_path, encoder):
    write_table(tmp_path / "data" / "prepared", CAPTIONS)
    proc = run_stage(tmp_path, {"encoder": encoder, "chunk_size": 5, "device": "cpu"})
    assert proc.returncode == 0, proc.stderr
    emb, info = load_embeddings(tmp_path / "data" / "embeddings")
    assert info["name"] == encoder and info["dim"] == 512 and emb.shape == (len(CAPTIONS), 512)
    direct = get_encoder(encoder, device="cpu").encode(CAPTIONS)
    np.testing.assert_allclose(emb, direct, atol=1e-5)
    assert "caption/s" in proc.stderr  # the tqdm bar reports throughput
    assert json.loads(proc.stdout.strip().splitlines()[-1])["captions"] == len(CAPTIONS)
    same = np.array_equal(emb[0], emb[1])  # the swapped pair
    assert same == (encoder == "bow")


def test_stage_rejects_unknown_encoder(tmp_path):
    write_table(tmp_path / "data" / "prepared", CAPTIONS)
    proc = run_stage(tmp_path, {"encoder": "word2vec"})
    assert proc.returncode == 2 and "embed.encoder" in proc.stderr
    assert not (tmp_path / "data" / "embeddings").exists()
