"""Word attention (G), word-region matching (D, DAMSM local score): masks, gates, order, learnability."""

from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

from t2i.models import Discriminator, GANConfig, Generator
from t2i.models.word_attention import WordAttention
from t2i.models.word_match import indexed_score, masked_softmax, region_word_score, similarity_matrix

DT = 12  # token size in these tests


def tokens_and_mask(b: int = 3, t: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(b, t, DT, generator=g)
    lengths = torch.tensor([t, 3, 1][:b] + [t] * max(0, b - 3))
    mask = torch.arange(t)[None] < lengths[:, None]  # (B, T): caption i has lengths[i] real tokens
    return tokens, mask


def opened(module: WordAttention) -> WordAttention:
    with torch.no_grad():
        module.gate.fill_(1.0)
    return module


def test_masked_softmax_gives_zero_not_nan_for_all_masked_rows_also_in_the_gradient() -> None:
    logits = torch.randn(2, 4, requires_grad=True)
    mask = torch.tensor([[True, False, True, False], [False] * 4])
    p = masked_softmax(logits, mask, dim=-1)
    p.sum().backward()
    p = p.detach()
    assert torch.allclose(p[0].sum(), torch.tensor(1.0)) and float(p[0, 1]) == 0.0
    assert torch.equal(p[1], torch.zeros(4))
    assert torch.isfinite(logits.grad).all()


def test_word_attention_respects_the_mask_and_reads_real_tokens() -> None:
    torch.manual_seed(0)
    m = opened(WordAttention(8, DT))
    h = torch.randn(3, 8, 4, 4)
    tokens, mask = tokens_and_mask()
    out = m(h, tokens, mask)
    assert out.shape == h.shape
    padded = tokens.clone()
    padded[1, 3:] = 100.0 * torch.randn(3, DT)  # caption 1 has 3 real tokens
    assert torch.equal(m(h, padded, mask), out)
    real = tokens.clone()
    real[1, 0] += 1.0
    changed = m(h, real, mask)
    assert not torch.allclose(changed[1], out[1]) and torch.equal(changed[0], out[0])


def test_all_masked_caption_gets_zero_context_and_no_nan() -> None:
    m = opened(WordAttention(8, DT))
    h = torch.randn(2, 8, 4, 4)
    tokens = torch.randn(2, 5, DT, requires_grad=True)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    context, weights = m.attention(h, tokens, mask)
    assert torch.equal(context, torch.zeros_like(context)) and torch.equal(weights, torch.zeros_like(weights))
    out = m(h, tokens, mask)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(tokens.grad).all()


def test_word_attention_reads_a_set_permuting_the_words_permutes_the_weights_only() -> None:
    # Order is the encoder's job (contextual token states): the module must not add its own,
    # or the order-blind `bow` control would stop being one.
    m = opened(WordAttention(8, DT))
    h = torch.randn(3, 8, 4, 4)
    tokens, mask = tokens_and_mask()
    perm = torch.tensor([5, 2, 0, 4, 1, 3])
    context, weights = m.attention(h, tokens, mask)
    context_p, weights_p = m.attention(h, tokens[:, perm], mask[:, perm])
    assert torch.allclose(weights_p, weights[:, :, perm], atol=1e-6)
    assert torch.allclose(context_p, context, atol=1e-5)
    # ... while the words themselves steer where each region looks: different words, different weights.
    other, _ = tokens_and_mask(seed=1)
    assert not torch.allclose(m.attention(h, other, mask)[1], weights, atol=1e-3)


def test_gradient_reaches_the_gate_at_init_and_the_token_projection_once_open() -> None:
    m = WordAttention(8, DT)
    h, (tokens, mask) = torch.randn(3, 8, 4, 4), tokens_and_mask()
    m(h, tokens, mask).pow(2).sum().backward()
    assert float(m.gate.grad.abs()) > 0
    opened(m).zero_grad()
    m(h, tokens, mask).pow(2).sum().backward()
    proj = m.words[0].weight.grad
    assert proj is not None and float(proj.abs().sum()) > 0


def small_config(**kw: object) -> GANConfig:
    base = dict(resolution=32, text_dim=16, z_dim=4, g_width=32, d_width=8, attention=(8,), token_dim=DT)
    return GANConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_tokens_none_and_a_closed_gate_both_give_the_sentence_only_generator() -> None:
    torch.manual_seed(0)
    plain = Generator(small_config()).eval()
    worded = Generator(small_config(word_attention=(8, 16))).eval()
    missing, unexpected = worded.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("word_attn.") for k in missing)
    z, s = torch.randn(3, 4), torch.randn(3, 16)
    tokens, mask = tokens_and_mask()
    with torch.no_grad():
        ref = plain(z, s)
        assert torch.equal(worded(z, s), ref)
        assert torch.equal(worded(z, s, tokens, mask), ref)  # fresh gates: exactly zero
        assert torch.equal(plain(z, s, tokens, mask), ref)   # a sentence-only model ignores tokens
        for m in worded.word_attn.values():
            opened(m)
        assert not torch.allclose(worded(z, s, tokens, mask), ref)


def test_word_attention_config_is_checked_and_old_configs_load_without_it() -> None:
    with pytest.raises(ValueError, match="word_attention"):
        Generator(small_config(word_attention=(64,)))
    with pytest.raises(ValueError, match="word_match_resolution"):
        Discriminator(small_config(d_word_match=True, word_match_resolution=32))
    g = Generator(small_config(word_attention=(8,)))
    with pytest.raises(ValueError, match="token_dim"):
        g(torch.randn(2, 4), torch.randn(2, 16), torch.randn(2, 5, DT + 1))
    old = {k: v for k, v in small_config().to_dict().items()
           if k not in ("word_attention", "token_dim", "d_word_match", "word_match_resolution")}
    cfg = GANConfig.from_dict(old)
    assert cfg.word_attention == () and not cfg.d_word_match
    Generator(cfg).load_state_dict(Generator(small_config()).state_dict())  # strict: the same keys


def test_region_word_score_matrix_and_indexed_pairs_agree_and_ignore_padding_and_order() -> None:
    g = torch.Generator().manual_seed(0)
    regions, words = torch.randn(3, 8, 10, generator=g), torch.randn(4, 5, 8, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1] * 5, [0] * 5, [1, 0, 0, 0, 0]], dtype=torch.bool)
    mat = similarity_matrix(regions, words, mask)  # (3, 4)
    one_by_one = torch.tensor([[float(region_word_score(regions[i : i + 1], words[None, j : j + 1], mask[None, j : j + 1]))
                                for j in range(4)] for i in range(3)])
    assert mat.shape == (3, 4) and torch.allclose(mat, one_by_one, atol=1e-5)
    assert bool((mat.abs() <= 1.0 + 1e-6).all()) and torch.equal(mat[:, 2], torch.zeros(3))
    # Caption n against image index[n], packed in chunks of 2 per image (image 1: 5 captions, 3 chunks).
    index = torch.tensor([1, 0, 1, 2, 1, 1, 0, 1])
    cap = torch.tensor([0, 1, 2, 3, 3, 1, 0, 2])
    for group in (1, 2, 16):
        got = indexed_score(regions, words[cap], mask[cap], index, group=group)
        assert torch.allclose(got, mat[index, cap], atol=1e-5), group
    padded = words.clone()
    padded[0, 3:] = 50.0
    assert torch.equal(similarity_matrix(regions, padded, mask), mat)
    perm = torch.tensor([2, 0, 4, 1, 3])
    assert torch.allclose(similarity_matrix(regions, words[:, perm], mask[:, perm]), mat, atol=1e-5)


def test_discriminator_word_match_joins_the_logit_and_agrees_across_calls() -> None:
    torch.manual_seed(0)
    d = Discriminator(small_config(d_word_match=True)).eval()  # eval: spectral norm's power step stays put
    x, s = torch.randn(3, 3, 32, 32), torch.randn(3, 16)
    tokens, mask = tokens_and_mask()
    with torch.no_grad():
        plain, worded = d(x, s), d(x, s, None, tokens, mask)
        regions = d.word_regions(x)  # (3, E, 64)
        word = d.word_match(regions, tokens, mask)  # (3,)
        assert torch.allclose(worded, plain + d.word_regions_head.gain * word, atol=1e-5)
        assert torch.allclose(d.word_match(regions, tokens, mask, matrix=True).diagonal(), word, atol=1e-5)
        index = torch.tensor([2, 0, 0, 1])
        t4, m4 = tokens[[0, 1, 2, 0]], mask[[0, 1, 2, 0]]
        by_index = d(x, s[[0, 1, 2, 0]], index, t4, m4)
        assert torch.allclose(by_index, d(x[index], s[[0, 1, 2, 0]], None, t4, m4), atol=1e-5)
        # rank_texts leaves out the image term (the same for every candidate): compare differences.
        other, other_mask = tokens_and_mask(seed=1)
        s2 = torch.randn(3, 16)
        ranked = d.rank_texts(x, torch.stack([s, s2], 1), torch.stack([tokens, other], 1),
                              torch.stack([mask, other_mask], 1))
        gap = worded - d(x, s2, None, other, other_mask)
        assert torch.allclose(ranked[:, 0] - ranked[:, 1], gap, atol=1e-5)
        padded = tokens.clone()
        padded[2, 1:] = 9.0  # caption 2 has one real token
        assert torch.equal(d(x, s, None, padded, mask), worded)


# --- learnability: two coloured parts, captions that name each part's colour in either order.
COLOURS = torch.tensor([[1, -1, -1], [1, 1, -1], [-1, -1, 1], [-1, 1, -1], [1, -1, 1], [1, 1, 1]], dtype=torch.float32)


class TwoPartToy:
    """32 px images: a disc (the "petal", colour a) over a bar (the "stem", colour b). Each caption
    is [filler, colour-of-part, colour-of-part] in a random listing order, tokens = colour vector +
    part vector (a contextual state in miniature), padding filled with junk. The word-order swap
    (petal b, stem a) has exactly the same token mean: a pooled sentence vector cannot tell it."""

    def __init__(self, seed: int = 1) -> None:
        g = torch.Generator().manual_seed(seed)
        self.colour = torch.randn(6, DT, generator=g)
        self.part, self.filler = torch.randn(2, DT, generator=g), torch.randn(DT, generator=g)
        yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
        self.disc = ((yy - 10) ** 2 + (xx - 16) ** 2 <= 36).float()  # (32, 32)
        self.bar = ((xx >= 14) & (xx < 18) & (yy >= 18) & (yy < 30)).float()

    def pairs(self, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        a = torch.randint(0, 6, (n,), generator=g)
        return a, (a + torch.randint(1, 6, (n,), generator=g)) % 6  # b != a: the swap is another caption

    def images(self, a: torch.Tensor, b: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        x = COLOURS[a][:, :, None, None] * self.disc + COLOURS[b][:, :, None, None] * self.bar  # (N, 3, 32, 32)
        return x + 0.1 * torch.randn(x.shape, generator=g)

    def captions(self, a: torch.Tensor, b: torch.Tensor, g: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tokens (N, 5, DT), mask (N, 5), pooled sentence (N, DT))."""
        n = len(a)
        tokens = 3.0 * torch.randn(n, 5, DT, generator=g)  # junk where the mask is False
        petal, stem = self.colour[a] + self.part[0], self.colour[b] + self.part[1]  # (N, DT) each
        flip = (torch.rand(n, generator=g) < 0.5)[:, None]
        tokens[:, 0] = self.filler
        tokens[:, 1], tokens[:, 2] = torch.where(flip, stem, petal), torch.where(flip, petal, stem)
        mask = torch.arange(5)[None].expand(n, 5) < 3
        return tokens, mask, (self.filler + petal + stem) / 3.0


def test_d_word_match_learns_what_the_pooled_sentence_cannot_tell() -> None:
    torch.manual_seed(0)
    toy, g = TwoPartToy(), torch.Generator().manual_seed(2)
    d = Discriminator(small_config(text_dim=DT, attention=(), d_word_match=True))
    opt = torch.optim.Adam(d.parameters(), lr=1e-3, betas=(0.0, 0.9))
    b = 32
    index = torch.arange(b).repeat(2)  # each image scored with its caption, then with the swap
    for _ in range(250):
        a, c = toy.pairs(b, g)
        (tt, mt, st), (ts, ms, ss) = toy.captions(a, c, g), toy.captions(c, a, g)
        out = d(toy.images(a, c, g), torch.cat([st, ss]), index, torch.cat([tt, ts]), torch.cat([mt, ms]))
        loss = F.cross_entropy(torch.stack([out[:b], out[b:]], 1), torch.zeros(b, dtype=torch.long))
        opt.zero_grad()
        loss.backward()
        opt.step()
    d.eval()  # spectral norm's power step would move the weights between the calls below
    g = torch.Generator().manual_seed(3)  # fresh images and captions
    a, c = toy.pairs(400, g)
    x = toy.images(a, c, g)
    (tt, mt, st), (ts, ms, ss) = toy.captions(a, c, g), toy.captions(c, a, g)
    with torch.no_grad():
        word_true, word_swap = d(x, st, None, tt, mt), d(x, ss, None, ts, ms)
        pooled_gap = (d(x, st) - d(x, ss)).abs().max()
    assert torch.allclose(st, ss, atol=1e-5)  # the pooled vectors are one vector ...
    assert float(pooled_gap) < 1e-3  # ... so the sentence score is a coin flip between them
    accuracy = float((word_true > word_swap).float().mean())
    assert accuracy >= 0.9, f"word-region score ranks the true caption above its swap only {accuracy:.2f} of the time"


def test_gradient_penalty_double_backward_runs_through_the_word_score() -> None:
    # The loss's MA-GP differentiates D's score w.r.t. the real image with create_graph=True.
    d = Discriminator(small_config(d_word_match=True))
    x = torch.randn(3, 3, 32, 32, requires_grad=True)
    tokens, mask = tokens_and_mask()
    out = d(x, torch.randn(3, 16), None, tokens, mask)
    (gx,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    gx.pow(2).sum().backward()
    grads = [p.grad for p in d.word_regions_head.words.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert float(sum(g.abs().sum() for g in grads)) > 0
