"""Sentence-vector whitening (t2i/models/text_norm.py): fitted on training captions, it makes a
word-order swap far more visible to G and D, and it travels with the saved generator."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from t2i.models import GANConfig, Generator, load_generator, save_generator
from t2i.models.text_norm import TextNorm


def alike_captions(n: int, dim: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit vectors sharing a large common direction (as one dataset's captions do), and a
    "swap" of each that differs only in a small role direction."""
    g = torch.Generator().manual_seed(seed)
    common = F.normalize(torch.randn(dim, generator=g), dim=0) * 3.0
    content = torch.randn(n, 4, generator=g) @ torch.randn(4, dim, generator=g) * 0.3  # few directions
    role = F.normalize(torch.randn(dim, generator=g), dim=0)
    sign = torch.randint(0, 2, (n, 1), generator=g).float() * 2 - 1
    a = common + content + 0.3 * sign * role
    b = common + content - 0.3 * sign * role
    return F.normalize(a, dim=1), F.normalize(b, dim=1)


def test_whiten_centres_rescales_and_separates_swaps() -> None:
    a, b = alike_captions(2000)
    scale, whiten = TextNorm(64, "scale"), TextNorm(64, "whiten")
    whiten.fit(a)
    wa, wb = whiten(a), whiten(b)
    assert wa.mean(0).abs().max() < 1e-4                          # centred on the training captions
    assert abs(wa.pow(2).sum(1).mean().item() / 64 - 1.0) < 0.02   # mean |x|^2 = D, like `scale`
    cos_scale = F.cosine_similarity(scale(a), scale(b)).mean()
    cos_whiten = F.cosine_similarity(wa, wb).mean()
    assert cos_scale > 0.9 and cos_whiten < cos_scale - 0.2, (cos_scale, cos_whiten)


def test_smaller_whitening_eps_shows_a_weak_role_direction_more() -> None:
    """eps damps directions under eps * the largest eigenvalue: a role difference that small
    (template 8's in USE, tuning log 2026-12-02, 1baf2c6) only stands out when eps is smaller."""
    g = torch.Generator().manual_seed(1)
    dim, n = 64, 3000
    basis, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))  # orthonormal columns
    content = (torch.randn(n, 16, generator=g) * torch.linspace(1.0, 0.2, 16)) @ basis[:, :16].T  # what varies most
    content = content + 0.003 * torch.randn(n, dim, generator=g)  # and a little everywhere
    role = basis[:, 16]  # a direction of its own, 0.02 / 1.0 of the largest spread
    sign = torch.randint(0, 2, (n, 1), generator=g).float() * 2 - 1
    a, b = F.normalize(content + 0.02 * sign * role, dim=1), F.normalize(content - 0.02 * sign * role, dim=1)
    cos = {}
    for eps in (1e-1, 1e-2, 1e-4):
        norm = TextNorm(dim, "whiten", eps)
        norm.fit(a)
        cos[eps] = F.cosine_similarity(norm(a), norm(b)).mean().item()
    assert cos[1e-1] > cos[1e-2] > cos[1e-4], cos
    assert cos[1e-2] - cos[1e-4] > 0.03, cos  # measured: 0.994 against 0.926
    with pytest.raises(ValueError, match="eps"):
        TextNorm(dim, "whiten", 0.0)


def test_whiten_is_fp32_under_bf16_autocast() -> None:
    a, _ = alike_captions(500)
    norm = TextNorm(64, "whiten")
    norm.fit(a)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(a[:8])
    assert out.dtype == torch.float32
    assert torch.allclose(out, norm(a[:8]))


def test_whitening_saved_with_generator(tmp_path) -> None:  # type: ignore[no-untyped-def]
    a, _ = alike_captions(500)
    cfg = GANConfig(text_dim=64, z_dim=4, g_width=32, attention=(), text_norm="whiten")
    g = Generator(cfg).eval()
    g.text_norm.fit(a)
    save_generator(tmp_path, g, {"model": cfg.to_dict()})
    g2, _ = load_generator(tmp_path)
    assert g2.config.text_norm == "whiten"
    assert torch.equal(g2.text_norm.whiten, g.text_norm.whiten) and not torch.equal(g2.text_norm.whiten, torch.eye(64))
    z = torch.randn(3, 4)
    with torch.no_grad():
        assert torch.allclose(g(z, a[:3]), g2(z, a[:3]), atol=1e-5)


def test_config_without_text_norm_loads_as_scale() -> None:
    """Generators saved before the key existed keep their behaviour."""
    d = GANConfig().to_dict()
    d.pop("text_norm")
    d["text_scale"] = True  # the old key is ignored
    assert GANConfig.from_dict(d).text_norm == "scale"
