"""How fast can a discriminator learn to check each colour? D alone, no generator.

    python benchmarks/d_proxy.py [--project DIR] [--steps 600] [--near-miss 1] [--pool 1] \
        [--centre-only] [--oracle-text] [--lr 1e-3] [--model '{"d_width": 32}'] \
        [--contrastive 1.0] [--candidates 8]

Trains only D, with the training loss's matching half: real images with their caption
(positives) against the same images with wrong captions drawn as in training (word-order swap,
one-word miss, another caption: `t2i.train.negatives.hard_mismatch`), hinge loss, one thread. Then
prints `benchmarks/d_probe.py`'s figures: how often D prefers the true caption over a petal /
stem / centre miss on real test images. ~100 s per 600 steps here, against ~20 min for a GAN
run, so it screens D-side ideas (docs/results/tuning.md). PROJECT holds
data/prepared and data/embeddings of the synthetic dataset (a finished `dvc repro`).

--centre-only trains on the captions that name a centre colour only; --oracle-text replaces
the sentence vectors by one-hot petal / stem / centre colours (what a perfect text encoder
would give), to tell text-side from image-side limits. --contrastive W adds the training loss's
cross-entropy of each caption against --candidates one-word misses (train.loss.contrastive_d).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from d_probe import probe  # noqa: E402

from t2i.data.flowers import COLORS  # noqa: E402
from t2i.models import Discriminator, GANConfig  # noqa: E402
from t2i.models.text_norm import TextNorm  # noqa: E402
from t2i.text import encoder_from_info  # noqa: E402
from t2i.train.data import TrainData, load_train_data  # noqa: E402
from t2i.train.losses import candidate_ce  # noqa: E402
from t2i.train.runtime import cpu_has_fast_bf16  # noqa: E402
from t2i.config import LossParams  # noqa: E402
from t2i.train.negatives import hard_mismatch  # noqa: E402


def one_hot_colours(attrs: list[dict[str, Any]], dim: int) -> torch.Tensor:
    """(N, dim): petal, stem and (if named) centre colour one-hot in three blocks of 10, scaled
    to the whitened vectors' typical norm."""
    out = torch.zeros(len(attrs), dim)
    for i, a in enumerate(attrs):
        out[i, COLORS.index(a["petal_color"])] = 1.0
        out[i, len(COLORS) + COLORS.index(a["stem_color"])] = 1.0
        if a.get("center_color"):
            out[i, 2 * len(COLORS) + COLORS.index(a["center_color"])] = 1.0
    return out * 8.0


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--project", type=Path, default=ROOT)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--near-miss", type=float, default=1.0, help="train.loss.near_miss: weight of one-word misses")
    ap.add_argument("--pool", type=int, default=1, help="train.loss.near_miss_pool: hard negatives among this many")
    ap.add_argument("--centre-only", action="store_true")
    ap.add_argument("--oracle-text", action="store_true")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--model", default="{}", help="GANConfig overrides as JSON (d_width, d_conditioning, attention)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--contrastive", type=float, default=0.0, help="train.loss.contrastive_d")
    ap.add_argument("--candidates", type=int, default=8, help="train.loss.contrastive_candidates")
    return ap.parse_args()


def d_step(d: Discriminator, data: TrainData, rows: torch.Tensor, sentence: Any, gen: torch.Generator,
           args: argparse.Namespace) -> torch.Tensor:
    """The matching half of D's training loss on real images (B = rows) and drawn wrong captions."""
    batch = data.batch(rows, torch.device("cpu"), channels_last=False)
    real, text = batch.images, batch.text  # (B, 3, R, R), (B, D)

    def rank(candidates: torch.Tensor) -> torch.Tensor:  # (B, K, D) -> (B, K)
        with torch.no_grad():
            return d.rank_texts(real, sentence(candidates.flatten(0, 1)).view_as(candidates)).float()

    drawn = LossParams(near_miss=args.near_miss, near_miss_pool=args.pool)
    wrong = hard_mismatch(data.relations, data.text, rows, gen, drawn, rank)
    b, k = len(rows), args.candidates
    texts, index = [sentence(text), sentence(wrong)], [torch.arange(b), torch.arange(b)]
    if args.contrastive > 0:
        cand_rows, valid = data.relations.near.draw(rows, k, gen)  # (B, K)
        texts.append(sentence(data.text[cand_rows.flatten()]))
        index.append(torch.arange(b).repeat_interleave(k))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_has_fast_bf16()):  # what train.precision=auto picks
        out = d(real, torch.cat(texts), torch.cat(index)).float()  # (2B [+ B*K],)
    loss = F.relu(1.0 - out[:b]).mean() + F.relu(1.0 + out[b : 2 * b]).mean()
    if args.contrastive > 0:
        loss = loss + args.contrastive * candidate_ce(out[:b], out[2 * b :].view(b, k), valid)
    return loss


def text_inputs(data: TrainData, oracle: bool) -> tuple[Any, torch.Tensor]:
    """What D reads a caption through, and the centre-naming mask of the train captions. With
    ``oracle`` the sentence vectors of ``data`` are replaced by one-hot colours."""
    train_table = data.table[data.table["split"] == "train"].reset_index(drop=True)  # row i = data.text[i]
    named = torch.from_numpy(train_table["mentions"].str.contains("center_color").to_numpy())
    if oracle:
        attrs = [{**r, "center_color": r["center_color"] if n else None} for r, n in
                 zip(train_table[["petal_color", "stem_color", "center_color"]].to_dict("records"), named.tolist())]
        data.text = one_hot_colours(attrs, data.text_dim)
        return torch.nn.Identity(), named  # the one-hot vectors are used as they are
    sentence = TextNorm(data.text_dim, "whiten")
    sentence.fit(data.text)
    return sentence, named


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # denormals in small conv nets cost 2-10x at random
    torch.manual_seed(args.seed)
    prepared_dir, emb_dir = args.project / "data" / "prepared", args.project / "data" / "embeddings"
    data = load_train_data(prepared_dir, emb_dir)
    sentence, named = text_inputs(data, args.oracle_text)
    pool_rows = torch.nonzero(named).flatten() if args.centre_only else torch.arange(len(data.text))
    cfg = GANConfig(**{"resolution": data.resolution, "text_dim": data.text_dim, "d_width": 16, "attention": (8,),
                       "text_norm": "whiten", **json.loads(args.model)})
    d = Discriminator(cfg)
    opt = torch.optim.Adam(d.parameters(), lr=args.lr, betas=(0.0, 0.9))
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    for _ in tqdm(range(args.steps), desc="d_proxy", unit="step", mininterval=5.0):
        rows = pool_rows[torch.randint(0, len(pool_rows), (args.batch_size,), generator=gen)]
        loss = d_step(d, data, rows, sentence, gen, args)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0

    if args.oracle_text:
        def vectors(captions: list[str], attrs: list[dict[str, Any]]) -> torch.Tensor:
            return one_hot_colours(attrs, data.text_dim)
    else:
        encoder = encoder_from_info(json.loads((emb_dir / "encoder.json").read_text(encoding="utf-8")))

        def vectors(captions: list[str], attrs: list[dict[str, Any]]) -> torch.Tensor:
            return sentence(torch.from_numpy(encoder.encode(captions)).float())

    result = probe(d, vectors, data.table, data.images.numpy())  # the full table and images, already in RAM
    print(json.dumps({"steps": args.steps, "near_miss": args.near_miss, "pool": args.pool, "centre_only": args.centre_only,
                      "oracle_text": args.oracle_text, "lr": args.lr,
                      "contrastive": args.contrastive, "candidates": args.candidates, "model": json.loads(args.model),
                      "train_seconds": round(seconds), "bf16": cpu_has_fast_bf16(), **result}))


if __name__ == "__main__":
    main()
