"""What the text features can carry: read petal and stem colour straight from them, no images.

    python benchmarks/text_ceiling.py [--images 4000] [--captions-per-image 4] [--epochs 6] [--matcher data/matcher]

About 2-3 minutes on 2 busy cores (1 thread), most of it encoding ~14k captions and training.

No generator can follow a caption better than a classifier can read its attributes from the same
text features. Two classifiers are trained on the grammar's ``train`` captions (synthetic.py
splits, default ingest params) and scored "both petal and stem right" per split:

* ``sentence_mlp``: the pooled sentence vector (standardised), a 2-layer MLP, one head per colour;
* ``token_attention``: the per-token states under it, one learned attention query per attribute
  over the caption's tokens (masked softmax), then a linear head.

With ``--matcher DIR`` (the `matcher` stage's output) a third reads the matcher's caption code
(t2i/models/caption_code.py), the frozen text features the GAN conditions on:

* ``matcher_code_mlp``: the same 2-layer MLP on the standardised code.

Scored on ``test`` (trained frames, held-out images), ``novel_wording`` (frames and words never
trained on; also split into ``novel_frame_only`` and ``novel_words``), ``probe`` (the
hand-written captions) and ``probe_swap`` (their hand-written swaps, truth reversed).
``wrong_way`` is the fraction predicting the two colours exchanged. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from t2i.config import IngestParams  # noqa: E402
from t2i.data import grammar, synthetic  # noqa: E402
from t2i.data.flowers import COLORS  # noqa: E402
from t2i.data.probe import load_probe  # noqa: E402
from t2i.models.matcher import Matcher  # noqa: E402
from t2i.text import get_encoder  # noqa: E402
from t2i.text.base import pad_tokens  # noqa: E402

ROLES = ("petal_color", "stem_color")


def caption_sets(images: int, per_image: int, seed: int) -> dict[str, pd.DataFrame]:
    """Distinct captions per split of the grammar's table, plus the probe and its swaps."""
    params = IngestParams(num_images=images, captions_per_image=per_image, seed=seed)
    flowers = synthetic.sample_flowers(images, seed)
    novel = synthetic.novel_frames(seed, synthetic.NOVEL_FRACTION)
    trained = [f for f in range(len(grammar.FRAMES)) if f not in novel]
    held = synthetic.held_out_combos(seed, params.unseen_fraction, trained)
    table = synthetic.caption_table(flowers, params, held, novel).drop_duplicates("caption")
    sets = {s: table[table["split"] == s] for s in ("train", "test", "novel_wording")}
    nw = sets["novel_wording"]
    sets["novel_frame_only"] = nw[nw["novelty"] == "frame"]  # new sentence shape, known words
    sets["novel_words"] = nw[nw["novelty"].str.contains("words")]  # a colour word/noun never trained
    probe = load_probe()
    sets["probe"] = probe
    sets["probe_swap"] = probe.assign(caption=probe["swap_caption"], petal_color=probe["stem_color"],
                                      stem_color=probe["petal_color"])
    return sets


class SentenceMLP(nn.Module):
    def __init__(self, dim: int, hidden: int = 512) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.1),
                                 nn.Linear(hidden, hidden), nn.GELU())
        self.heads = nn.ModuleList(nn.Linear(hidden, len(COLORS)) for _ in ROLES)

    def forward(self, s: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        h = self.net(s)  # (B, hidden)
        return [head(h) for head in self.heads]


class TokenAttention(nn.Module):
    """One query per attribute attends over the caption's token states (AttnGAN's word attention)."""

    def __init__(self, dim: int, width: int = 128) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.key = nn.Linear(dim, width)
        self.value = nn.Linear(dim, width)
        self.queries = nn.Parameter(torch.randn(len(ROLES), width) / width**0.5)  # (A, W)
        self.heads = nn.ModuleList(nn.Sequential(nn.GELU(), nn.Linear(width, len(COLORS))) for _ in ROLES)

    def forward(self, s: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        x = self.norm(tokens)  # (B, T, D)
        k, v = self.key(x), self.value(x)  # (B, T, W)
        logits = torch.einsum("aw,btw->bat", self.queries, k) / k.shape[-1] ** 0.5  # (B, A, T)
        attn = logits.masked_fill(~mask[:, None, :], float("-inf")).softmax(-1)
        pooled = torch.einsum("bat,btw->baw", attn, v)  # (B, A, W)
        return [head(pooled[:, a]) for a, head in enumerate(self.heads)]


def features(encoder, captions: list[str]) -> tuple[torch.Tensor, ...]:
    """Sentence (n, D) float32, tokens (n, T, D) float16, mask (n, T): as the embed stage stores them."""
    flat = encoder.encode_tokens_flat(captions)
    tokens, mask = pad_tokens(flat.tokens.astype(np.float16), flat.lengths)
    return torch.from_numpy(flat.sentence), torch.from_numpy(tokens), torch.from_numpy(mask)


@torch.no_grad()
def matcher_codes(matcher: Matcher, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """(n, E) caption codes of the matcher for (sentence, tokens, mask) features."""
    s, tok, mask = feats
    out = []
    for b in torch.arange(len(s)).split(1024):
        reduced = matcher.reduce_tokens(tok[b]) if matcher.uses_tokens else None
        out.append(matcher.embed_text(s[b], reduced, mask[b] if reduced is not None else None))
    return torch.cat(out)


def labels(rows: pd.DataFrame) -> torch.Tensor:
    return torch.tensor([[COLORS.index(r[c]) for c in ROLES] for _, r in rows.iterrows()])  # (n, 2)


def train(model: nn.Module, data: tuple[torch.Tensor, ...], y: torch.Tensor, epochs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    s, tok, mask = data
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
    steps = epochs * ((len(y) + 127) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    model.train()
    for _ in range(epochs):
        for b in torch.randperm(len(y)).split(128):
            out = model(s[b], tok[b].float(), mask[b])
            loss = sum(nn.functional.cross_entropy(o, y[b, a]) for a, o in enumerate(out))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def score(model: nn.Module, data: tuple[torch.Tensor, ...], y: torch.Tensor) -> dict[str, float]:
    s, tok, mask = data
    pred = torch.stack([torch.cat([o.argmax(1) for o in [model(s[b], tok[b].float(), mask[b])[a]
                                                          for b in torch.arange(len(y)).split(512)]])
                        for a in range(len(ROLES))], 1)  # (n, 2)
    both = (pred == y).all(1).float().mean().item()
    wrong_way = (pred == y.flip(1)).all(1).float().mean().item()
    return {"both": round(both, 3), "petal": round((pred[:, 0] == y[:, 0]).float().mean().item(), 3),
            "stem": round((pred[:, 1] == y[:, 1]).float().mean().item(), 3), "wrong_way": round(wrong_way, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--captions-per-image", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--matcher", type=Path, default=None, help="also score the matcher's caption code (data/matcher)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    start = time.perf_counter()
    sets = caption_sets(args.images, args.captions_per_image, args.seed)
    encoder = get_encoder("use", device="cpu", threads=args.threads)
    train_feats = features(encoder, sets["train"]["caption"].tolist())
    feats = {k: features(encoder, v["caption"].tolist()) for k, v in sets.items() if k != "train"}
    # Standardise sentence vectors with train statistics ("scaled", as the table).
    mu, sd = train_feats[0].mean(0), train_feats[0].std(0) + 1e-6
    norm = lambda f: ((f[0] - mu) / sd, f[1], f[2])  # noqa: E731
    encoded = time.perf_counter() - start
    y_train = labels(sets["train"])
    out: dict[str, object] = {"captions": {k: len(v) for k, v in sets.items()}, "frames": len(grammar.FRAMES)}
    for name, model in (("sentence_mlp", SentenceMLP(512)), ("token_attention", TokenAttention(512))):
        train(model, norm(train_feats), y_train, args.epochs, args.seed)
        out[name] = {k: score(model, norm(feats[k]), labels(sets[k])) for k in feats}
    if args.matcher is not None:
        matcher = Matcher.load(args.matcher)
        code = {k: matcher_codes(matcher, f) for k, f in [("train", train_feats), *feats.items()]}
        cmu, csd = code["train"].mean(0), code["train"].std(0) + 1e-6
        as_input = lambda c: ((c - cmu) / csd, c[:, :1, None], torch.ones(len(c), 1, dtype=torch.bool))  # noqa: E731
        model = SentenceMLP(code["train"].shape[1])
        train(model, as_input(code["train"]), y_train, args.epochs, args.seed)
        out["matcher_code_mlp"] = {k: score(model, as_input(code[k]), labels(sets[k])) for k in feats}
    out["seconds"] = {"encode": round(encoded, 1), "total": round(time.perf_counter() - start, 1)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
