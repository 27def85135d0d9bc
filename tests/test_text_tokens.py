"""Word features: the per-token states under the sentence vector, for `use` (numpy, torch) and `bow`."""

from __future__ import annotations

import numpy as np
import pytest

from t2i.text import EncoderError
from t2i.text.base import SentenceEncoder
from t2i.text.use_torch import TorchUseForward
from t2i.text.use_weights import CachedTokenizer, load_weights

CAPTIONS = [
    "a red flower with a yellow stem", "a yellow flower with a red stem", "",
    "In this picture, the stalk is ivory and the petals are orange!", "🌸 a flower 😀", "赤い花",
    "here is a pretty bloom that has navy petals growing from an orange stalk",
]


@pytest.mark.parametrize("name", ["use", "bow"])
def test_pooling_the_tokens_reproduces_the_sentence_vector(name, use, bow):
    enc = {"use": use, "bow": bow}[name]
    out = enc.encode_tokens(CAPTIONS)
    n, t, d = out.tokens.shape
    assert (n, d) == (len(CAPTIONS), 512) and out.mask.shape == (n, t) and out.mask.dtype == bool
    assert [len(p) for p in out.pieces] == out.mask.sum(1).tolist()
    assert not out.tokens[~out.mask].any()  # zero padding
    assert np.sum(out.sentence * enc.encode(CAPTIONS), axis=1).min() > 0.9999
    for tokens in (out.tokens, out.tokens.astype(np.float16)):  # as computed and as stored
        pooled = enc.pool_tokens(tokens, out.mask)
        assert np.sum(pooled * out.sentence, axis=1).min() > 0.9999


def test_use_tokens_are_the_pieces_in_context(use):
    out = use.encode_tokens(CAPTIONS[:2])
    ids = CachedTokenizer().encode(CAPTIONS[0])
    assert out.mask[0].sum() == len(ids) and out.pieces[0][0] == "<s>" and out.pieces[0][-1] == "</s>"
    assert out.pieces[0][2] == "\u2581red" and out.pieces[1][2] == "\u2581yellow"
    # Contextual: "red" before "flower" and "red" before "stem" are different states, so the
    # swapped caption's states are not a permutation of the original's (unlike bow's words).
    red_petal, red_stem = out.tokens[0, 2], out.tokens[1, 6]
    assert out.pieces[1][6] == "\u2581red"
    cos = red_petal @ red_stem / np.linalg.norm(red_petal) / np.linalg.norm(red_stem)
    assert cos < 0.99


def test_max_tokens_truncates_the_states_not_the_sentence(use):
    long = " ".join(["petal"] * 200)
    full = use.encode([long])
    out = use.encode_tokens([long, "a red flower"], max_tokens=16)
    assert out.tokens.shape[1] == 16 and out.mask.sum(1).tolist() == [16, 5]
    assert np.allclose(out.sentence[0], full[0], atol=1e-5)


def test_bow_tokens_are_its_words(bow):
    out = bow.encode_tokens(CAPTIONS[:3])
    assert out.pieces[0] == CAPTIONS[0].split() and out.pieces[2] == [""]
    a, b = out.tokens[0][out.mask[0]], out.tokens[1][out.mask[1]]
    assert np.array_equal(np.sort(a, axis=0), np.sort(b, axis=0))  # same words, same vectors


def test_torch_forward_tokens_match_numpy(use):
    tok = CachedTokenizer()
    group = [tok.encode(c) for c in CAPTIONS]
    s_np, u_np = use.net.forward_tokens(group)
    net = TorchUseForward(load_weights(), device="cpu")
    s_t, u_t = net.forward_tokens(group)
    assert u_t.shape == u_np.shape == (sum(map(len, group)), 512)
    assert np.sum(s_t * s_np, axis=1).min() > 0.9999
    cos = np.sum(u_t * u_np, axis=1) / np.linalg.norm(u_t, axis=1) / np.linalg.norm(u_np, axis=1)
    assert cos.min() > 0.999
    out = use.encode_tokens(CAPTIONS)  # the torch pooling (the CUDA path) of the numpy states
    assert np.sum(net.pool(out.tokens, out.mask) * out.sentence, axis=1).min() > 0.9999


def test_sentence_only_encoders_say_so():
    class Plain(SentenceEncoder):
        name, dim, version = "plain", 4, "0"

        def encode(self, texts: list[str]) -> np.ndarray:
            return np.ones((len(texts), 4), np.float32) / 2

    enc = Plain()
    assert enc.info()["token_states"] is False
    with pytest.raises(EncoderError, match="sentence-only"):
        enc.encode_tokens(["a red flower"])
