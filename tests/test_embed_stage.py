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
from t2i.text.base import FlatTokens
from t2i.text.embed_table import encode_unique, embed_table, load_embeddings, load_text_features
from t2i.text.token_store import TOKENS_FILE, TokenStore

ROOT = Path(__file__).resolve().parents[1]
CAPTIONS = [
    "a red flower with a yellow stem", "a yellow flower with a red stem", "",
    "a red flower with a yellow stem", "this flower has white petals and a green stem",
    "🌸 emoji 🌸", "赤い花", "a yellow flower with a red stem", "a blue flower", "",
    "a red flower with a yellow stem",
]


class Recording(SentenceEncoder):
    """The real `use` encoder, recording every caption it is asked to encode."""

    token_states = True

    def __init__(self) -> None:
        self.inner = get_encoder("use", device="cpu", threads=1)
        self.name, self.dim, self.version = "use", self.inner.dim, self.inner.version
        self.seen: list[str] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.seen.extend(texts)
        return self.inner.encode(texts)

    def encode_tokens_flat(self, texts: list[str], max_tokens: int = 64) -> FlatTokens:
        self.seen.extend(texts)
        return self.inner.encode_tokens_flat(texts, max_tokens)


class SentenceOnly(Recording):
    token_states = False


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
    assert info.items() >= recording.info().items() and info["token_states"] is True
    assert sorted(os.listdir(tmp_path)) == ["emb", "prepared"]  # no temp dirs left behind
    # Token states: row-aligned across chunk boundaries, identical captions share one range.
    feats = load_text_features(tmp_path / "emb")
    direct = recording.inner.encode_tokens(captions)
    assert feats.tokens.dtype == np.float16 and feats.tokens.shape == direct.tokens.shape
    assert np.array_equal(feats.mask, direct.mask)
    np.testing.assert_allclose(feats.tokens.astype(np.float32), direct.tokens, atol=2e-2, rtol=1e-2)
    store = TokenStore(tmp_path / "emb")
    assert all(store.pieces(i) == direct.pieces[i] for i in range(len(captions)))
    assert store.offsets[0, 0] == store.offsets[3, 0]  # same chunk, same caption: stored once
    assert info["token_rows"] == len(np.load(tmp_path / "emb" / TOKENS_FILE)) < direct.mask.sum()
    # Any rows, any order; pooled the network's way they give the stored sentence vectors.
    rows = [40, 3, 0, 17]
    some = load_text_features(tmp_path / "emb", rows=rows, mmap=False)
    assert np.array_equal(some.tokens, feats.tokens[rows]) and np.array_equal(some.sentence, emb[rows])
    pooled = recording.inner.pool_tokens(some.tokens, some.mask)
    assert np.sum(pooled * some.sentence, axis=1).min() > 0.9999


def test_sentence_only_encoder_writes_no_token_files(tmp_path):
    table = write_table(tmp_path / "prepared", CAPTIONS)
    embed_table(table, tmp_path / "emb", SentenceOnly(), progress=False)
    assert sorted(os.listdir(tmp_path / "emb")) == ["embeddings.npy", "encoder.json"]
    feats = load_text_features(tmp_path / "emb")
    assert feats.info["token_states"] is False and feats.tokens is None and feats.mask is None
    assert feats.sentence.shape == (len(CAPTIONS), 512)


def test_failed_run_keeps_the_previous_output(tmp_path, recording):
    table = write_table(tmp_path / "prepared", CAPTIONS)
    embed_table(table, tmp_path / "emb", recording, progress=False)
    before = np.load(tmp_path / "emb" / "embeddings.npy")

    class Broken(Recording):
        def encode(self, texts: list[str]) -> np.ndarray:
            raise RuntimeError("encoder died")

        def encode_tokens_flat(self, texts: list[str], max_tokens: int = 64) -> FlatTokens:
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
    feats = load_text_features(tmp_path / "data" / "embeddings")
    assert feats.info["token_states"] is True and feats.tokens.shape[:2] == feats.mask.shape
    # bow's tokens are its words, use's the pieces with BOS/EOS around them.
    pieces = TokenStore(tmp_path / "data" / "embeddings").pieces(0)
    assert pieces == (CAPTIONS[0].split() if encoder == "bow" else ["<s>", *(f"\u2581{w}" for w in CAPTIONS[0].split()), "</s>"])


def test_stage_embeds_swap_captions_when_the_table_has_them(tmp_path):
    path = write_table(tmp_path / "data" / "prepared", CAPTIONS[:2])
    pd.read_parquet(path).assign(swap_caption=CAPTIONS[1::-1]).to_parquet(path, index=False)
    proc = run_stage(tmp_path, {"encoder": "use", "device": "cpu"})
    assert proc.returncode == 0, proc.stderr
    main = load_text_features(tmp_path / "data" / "embeddings")
    swap = load_text_features(tmp_path / "data" / "embeddings" / "swap")
    np.testing.assert_allclose(swap.sentence, main.sentence[::-1], atol=1e-6)
    assert np.array_equal(swap.mask, main.mask[::-1])


def test_stage_rejects_unknown_encoder(tmp_path):
    write_table(tmp_path / "data" / "prepared", CAPTIONS)
    proc = run_stage(tmp_path, {"encoder": "word2vec"})
    assert proc.returncode == 2 and "embed.encoder" in proc.stderr
    assert not (tmp_path / "data" / "embeddings").exists()


def test_another_text_column_embeds_the_same_way(tmp_path, recording):
    path = write_table(tmp_path / "prepared", CAPTIONS[:4])
    table = pd.read_parquet(path).assign(swap_caption=["x one", "x two", "x one", ""])
    table.to_parquet(path, index=False)
    embed_table(path, tmp_path / "swap", recording, progress=False, column="swap_caption")
    feats = load_text_features(tmp_path / "swap")
    np.testing.assert_allclose(feats.sentence, recording.inner.encode(list(table["swap_caption"])), atol=1e-5)
    assert TokenStore(tmp_path / "swap").pieces(1) == ["<s>", "\u2581x", "\u2581two", "</s>"]
    with pytest.raises(ValueError, match="'nope'"):
        embed_table(path, tmp_path / "bad", recording, progress=False, column="nope")
