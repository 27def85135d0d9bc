"""Residual attention module, generator and discriminator shapes at 32 and 64 px."""

from __future__ import annotations

import pytest
import torch

from t2i.models import Discriminator, GANConfig, Generator, ResidualAttention, load_generator, save_generator
from t2i.models.discriminator import WORD_MATCH_DIM


@pytest.mark.parametrize("res", [4, 8, 16, 32])
def test_residual_attention_keeps_shape_and_mask_in_range(res: int) -> None:
    m = ResidualAttention(8, res)
    x = torch.randn(2, 8, res, res)
    assert m(x).shape == x.shape
    mask = m.mask(x)
    assert bool(((mask > 0) & (mask < 1)).all())
    # (1 + M) * T: with the trunk's residual branch zeroed, output = (1 + M) * x, never below x.
    torch.nn.init.zeros_(m.trunk.c2.weight)
    torch.nn.init.zeros_(m.trunk.c2.bias)
    out = m(x.abs())
    assert bool((out >= x.abs()).all())


@pytest.mark.parametrize("res", [32, 64])
@pytest.mark.parametrize("cond,dcond,attn", [("cbn", "projection", (8, 16)), ("affine", "concat", (4, 32)), ("cbn", "projection", ())])
def test_generator_and_discriminator_shapes(res: int, cond: str, dcond: str, attn: tuple[int, ...]) -> None:
    cfg = GANConfig(resolution=res, text_dim=24, z_dim=8, g_width=32, d_width=8, attention=attn,
                    conditioning=cond, d_conditioning=dcond)  # type: ignore[arg-type]
    g, d = Generator(cfg), Discriminator(cfg)
    with torch.no_grad():
        img = g(torch.randn(3, 8), torch.randn(3, 24))
    assert img.shape == (3, 3, res, res)
    assert float(img.abs().max()) <= 1.0
    assert d(img, torch.randn(3, 24)).shape == (3,)
    assert len(g.attn) == len([r for r in attn if 8 <= r <= res])


def test_save_load_generator_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = GANConfig(text_dim=16, z_dim=4, g_width=32)
    g = Generator(cfg).eval()
    save_generator(tmp_path, g.to(memory_format=torch.channels_last), {"model": cfg.to_dict(), "step": 3})
    g2, info = load_generator(tmp_path / "generator.safetensors")
    assert info["step"] == 3 and not g2.training
    for k, v in g.state_dict().items():
        assert torch.equal(v, g2.state_dict()[k]), k
    z, s = torch.randn(2, 4), torch.randn(2, 16)
    with torch.no_grad():  # channels_last vs contiguous kernels may differ in the last bits
        assert torch.allclose(g(z, s), g2(z, s), atol=1e-5)


def test_cond_layers_deepen_the_condition_mlp_and_one_layer_keeps_old_keys(tmp_path) -> None:  # type: ignore[no-untyped-def]
    one = Generator(GANConfig(text_dim=16, z_dim=4, g_width=32))
    assert {k for k in one.state_dict() if k.startswith("cond.")} == {"cond.0.weight", "cond.0.bias"}
    cfg = GANConfig(text_dim=16, z_dim=4, g_width=32, cond_layers=3, cond_dim=24)
    g = Generator(cfg).eval()
    assert [m.out_features for m in g.cond if isinstance(m, torch.nn.Linear)] == [24, 24, 24]
    save_generator(tmp_path, g, {"model": cfg.to_dict(), "step": 0})
    g2, _ = load_generator(tmp_path / "generator.safetensors")
    assert g2.config.cond_layers == 3 and len(g2.cond) == 6
    with pytest.raises(ValueError, match="cond_layers"):
        GANConfig(cond_layers=0)


def test_d_text_layers_make_the_projection_embedding_an_mlp() -> None:
    cfg = GANConfig(text_dim=16, z_dim=4, g_width=32, d_width=8, attention=(8,), d_text_layers=2)
    d = Discriminator(cfg)
    assert [m.in_features for m in d.embed if isinstance(m, torch.nn.Linear)] == [16, d.embed[-1].out_features]
    assert isinstance(Discriminator(GANConfig(text_dim=16, d_width=8)).embed, torch.nn.Linear)  # 1: as before
    x, t = torch.randn(3, 3, 32, 32), torch.randn(3, 16)
    assert d(x, t).shape == (3,) and d.rank_texts(x, t[:, None].expand(3, 5, 16)).shape == (3, 5)


@pytest.mark.parametrize("floor", [16, 32])  # both sides of any default: the key must reach G
def test_train_g_min_width_sets_the_generator_floor_and_survives_save_load(tmp_path, floor: int) -> None:  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    from t2i.config import load_section, updated
    from t2i.train.loop import model_config

    from pathlib import Path

    params = updated(load_section("train", Path(__file__).resolve().parents[1] / "params.yaml"),
                     {"model": {"g_width": 128, "g_min_width": floor}})
    cfg = model_config(params, SimpleNamespace(resolution=32, text_dim=16, tokens=None))  # type: ignore[arg-type]
    assert [cfg.g_channels(r) for r in (4, 8, 16, 32)] == [128, 64, 32, floor]
    g = Generator(cfg).eval()
    assert g.blocks[-1].conv2.out_channels == floor
    save_generator(tmp_path, g, {"model": cfg.to_dict(), "step": 0})
    g2, _ = load_generator(tmp_path / "generator.safetensors")
    assert g2.config.g_min_width == floor and g2.blocks[-1].conv2.out_channels == floor


def test_d_attention_overrides_the_discriminators_modules_only() -> None:
    cfg = GANConfig(text_dim=16, z_dim=4, g_width=32, d_width=8, attention=(8,), d_attention=[])
    g, d = Generator(cfg), Discriminator(cfg)
    assert list(g.attn) == ["8"] and len(d.attn) == 0
    assert list(Discriminator(GANConfig(text_dim=16, d_width=8, attention=(8,))).attn) == ["8"]  # None: as G
    assert GANConfig.from_dict(cfg.to_dict()).d_attention == ()
    with torch.no_grad():
        assert d(g(torch.randn(2, 4), torch.randn(2, 16)), torch.randn(2, 16)).shape == (2,)


@pytest.mark.parametrize("res", [32, 64])
@pytest.mark.parametrize("dcond", ["projection", "concat"])
def test_word_attention_and_word_match_shapes(res: int, dcond: str) -> None:
    cfg = GANConfig(resolution=res, text_dim=24, z_dim=8, g_width=32, d_width=8, attention=(8,),
                    d_conditioning=dcond, word_attention=(8, 16), token_dim=20, d_word_match=True)  # type: ignore[arg-type]
    g, d = Generator(cfg), Discriminator(cfg)
    assert sorted(g.word_attn) == ["16", "8"]
    tokens = torch.randn(3, 7, 20).half()  # the embed stage stores float16
    mask = torch.arange(7)[None] < torch.tensor([[7], [2], [0]])  # (3, 7); caption 2 has no token
    img = g(torch.randn(3, 8), torch.randn(3, 24), tokens, mask)
    assert img.shape == (3, 3, res, res) and bool(torch.isfinite(img).all())
    out = d(img, torch.randn(3, 24), None, tokens, mask)
    assert out.shape == (3,) and bool(torch.isfinite(out).all())
    out.sum().backward()  # one graph through D's word match into G's word attention
    assert g.word_attn["8"].gate.grad is not None
    regions = d.word_regions(img.detach())
    assert regions.shape == (3, min(cfg.d_channels(8), WORD_MATCH_DIM), 64)
    assert d.word_match(regions, tokens, mask, matrix=True).shape == (3, 3)


def test_save_load_generator_with_word_attention(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = GANConfig(text_dim=16, z_dim=4, g_width=32, word_attention=(16, 8), token_dim=10)
    g = Generator(cfg).eval()
    for m in g.word_attn.values():
        torch.nn.init.constant_(m.gate, 0.5)
    save_generator(tmp_path, g, {"model": cfg.to_dict(), "step": 1})
    g2, _ = load_generator(tmp_path / "generator.safetensors")
    assert sorted(g2.word_attn) == ["16", "8"] and g2.config.token_dim == 10
    z, s, t = torch.randn(2, 4), torch.randn(2, 16), torch.randn(2, 5, 10)
    with torch.no_grad():
        assert torch.allclose(g(z, s, t), g2(z, s, t), atol=1e-6)
        assert not torch.allclose(g2(z, s, t), g2(z, s))
