"""What word attention (G) and the word-region score (D) cost per training iteration, printed as JSON.

    python benchmarks/word_attention_cost.py [--batch-size 64] [--steps 3] [--rounds 3] [--rows 3,163]

Images/s of forward + backward through G and D (a hinge D step on real and fake images, then a G
step through D), at params.yaml's architecture (32 px), for the sentence-only network (baseline)
and the same network with word attention at `--word-attention` and D's word match, in one process
with the same threads, rounds interleaved so load on a shared machine hits both alike. Timed in
this process's CPU time (one thread by default): images per CPU-second, which other processes on
a shared machine do not distort as they do wall time; `wall` gives the wall-clock figures too.

`--rows`: captions D scores per image. 3 = real/true, real/mismatched, fake/its caption; the
default training config scores ~163 (hard-negative pool and 32+5 contrastive candidates for each of
4 captions per image), ~49 with contrastive_captions=1; the word score's cost grows with that
count while the convolutions' does not. Random tensors stand in for images and the encoder's token states (T tokens, 512-d).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from t2i.models.config import GANConfig  # noqa: E402
from t2i.models.discriminator import Discriminator  # noqa: E402
from t2i.models.generator import Generator  # noqa: E402


def base_config() -> GANConfig:
    # params.yaml's train section at 32 px (g_width 128 floored at 16, d_width 16, attention [8]).
    return GANConfig(resolution=32, text_dim=512, z_dim=32, g_width=128, g_min_width=16, d_width=16, attention=(8,))


def iteration(g: Generator, d: Discriminator, opt: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
              rows: int, words: bool) -> None:
    """One D step on (B x rows) scored captions, one G step scoring each fake with up to 38 of them
    (its caption and 37 candidates, as the default contrastive_g does): forward + backward."""
    b = batch["z"].shape[0]
    tok = (batch["tokens"], batch["mask"]) if words else (None, None)
    index = torch.cat([torch.arange(2 * b), torch.arange(b).repeat(rows - 2)])  # real, fake, then real again
    n = len(index)
    text = batch["text"][torch.arange(n) % b]  # (N, D)
    tokens = None if tok[0] is None else tok[0][torch.arange(n) % b]  # (N, T, 512)
    mask = None if tok[1] is None else tok[1][torch.arange(n) % b]
    fake = g(batch["z"], batch["text"], *tok)
    out = d(torch.cat([batch["real"], fake.detach()]), text, index, tokens, mask)  # (N,)
    loss_d = F.relu(1 - out[:b]).mean() + F.relu(1 + out[b:]).mean()
    opt.zero_grad(set_to_none=True)
    loss_d.backward()
    d.requires_grad_(False)
    g_rows = min(rows - 2, 38)
    g_index = torch.arange(b).repeat(g_rows)
    g_tok = [None if x is None else x[g_index] for x in tok]
    loss_g = -d(fake, batch["text"][g_index], g_index, *g_tok).mean()
    loss_g.backward()
    d.requires_grad_(True)
    opt.step()


def make_batch(b: int, t: int, cfg: GANConfig) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(t // 2, t + 1, (b,), generator=g)
    return {"z": torch.randn(b, cfg.z_dim, generator=g), "text": torch.randn(b, cfg.text_dim, generator=g),
            "real": torch.rand(b, 3, cfg.resolution, cfg.resolution, generator=g) * 2 - 1,
            "tokens": torch.randn(b, t, cfg.token_dim, generator=g).half(),
            "mask": torch.arange(t)[None] < lengths[:, None]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=16, help="T: token states per caption (padded)")
    ap.add_argument("--token-dim", type=int, default=512,
                    help="token state size (512: USE's; less: a table reduced once, e.g. by PCA, before training)")
    ap.add_argument("--steps", type=int, default=3, help="timed iterations per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rows", default="3,49,163", help="captions D scores per image, comma-separated")
    ap.add_argument("--word-attention", default="8,16", help="G resolutions with word attention")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--wall", action="store_true", help="time in wall-clock seconds instead of CPU seconds")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.wall else time.process_time
    torch.set_flush_denormal(True)  # denormals slow small conv nets on x86 2-10x (NOTES.md)
    torch.manual_seed(0)
    base = base_config()
    worded = GANConfig.from_dict({**base.to_dict(), "word_attention": [int(r) for r in args.word_attention.split(",")],
                                  "d_word_match": True, "token_dim": args.token_dim})
    nets = {}
    for name, cfg in (("baseline", base), ("word", worded)):
        g, d = Generator(cfg), Discriminator(cfg)
        nets[name] = (g, d, torch.optim.Adam([*g.parameters(), *d.parameters()], lr=1e-4))
    batch = make_batch(args.batch_size, args.tokens, worded)
    result: dict[str, object] = {"batch_size": args.batch_size, "tokens": args.tokens, "token_dim": args.token_dim,
                                 "resolution": base.resolution,
                                 "word_attention": list(worded.word_attention), "threads": torch.get_num_threads(),
                                 "machine": platform.processor() or platform.machine(), "precision": "fp32",
                                 "clock": "wall" if args.wall else "process CPU time"}
    for rows in (int(r) for r in args.rows.split(",")):
        times: dict[str, list[float]] = {"baseline": [], "word": []}
        for name, (g, d, opt) in nets.items():  # warm-up
            iteration(g, d, opt, batch, rows, name == "word")
        for _ in range(args.rounds):
            for name, (g, d, opt) in nets.items():
                start = clock()
                for _ in range(args.steps):
                    iteration(g, d, opt, batch, rows, name == "word")
                times[name].append(args.steps * args.batch_size / (clock() - start))
        base_ips, word_ips = statistics.median(times["baseline"]), statistics.median(times["word"])
        result[f"rows_{rows}"] = {"baseline_img_s": round(base_ips, 1), "word_img_s": round(word_ips, 1),
                                  "word_over_baseline": round(word_ips / base_ips, 3),
                                  "rounds_img_s": {k: [round(v, 1) for v in vs] for k, vs in times.items()}}
    result["params"] = {name: sum(p.numel() for m in net[:2] for p in m.parameters()) for name, net in nets.items()}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
