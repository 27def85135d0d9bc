"""Is a generated centre colour real, or only real to the judge? A second, differently built judge.

    python benchmarks/judge_cross_check.py RUN [RUN ...] [--project DIR] [--runs-dir /tmp/t2i-tune]

G's matcher term (train.matcher_weight) pulls G through a frozen CNN of the evaluation judges'
architecture. Adversarial features transfer best between networks built and trained alike, so
the attribute classifier's centre-colour figure could rise without a visible centre. This
trains another centre-colour classifier (5x5 convolutions, max pooling, global max pool, no
BatchNorm, flips and noise) on the real train images of PROJECT's data/prepared, and prints as
JSON its accuracy on real test images and on each RUN's generated images (RUNS_DIR/RUN/models,
as `benchmarks/tune_train.py` writes them) for the first 300 test captions that name a centre,
four noise draws each. Compare it with the run's own `test.center_color`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from t2i.data.flowers import COLORS  # noqa: E402
from t2i.data.prepared import load_prepared  # noqa: E402
from t2i.models.trunk import to_input, to_work_resolution  # noqa: E402
from t2i.models import load_generator  # noqa: E402
from t2i.text.embed_table import load_embeddings  # noqa: E402


def other_judge() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 24, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(24, 48, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(48, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(64, len(COLORS)),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--project", type=Path, default=ROOT)
    ap.add_argument("--runs-dir", type=Path, default=Path("/tmp/t2i-tune"))
    ap.add_argument("--steps", type=int, default=1500)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    prepared = load_prepared(args.project / "data" / "prepared")
    table, images = prepared.table, np.asarray(prepared.images)
    if "center_color" not in table:
        raise SystemExit("no center_color column: the cross-check needs the synthetic dataset")
    embeddings, _ = load_embeddings(args.project / "data" / "embeddings")

    train = table[table["split"] == "train"].drop_duplicates("image_index")
    x, y = to_input(images[train["image_index"].to_numpy()], cpu), torch.tensor([COLORS.index(c) for c in train["center_color"]])
    net, gen = other_judge(), torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(args.steps):
        pick = torch.randint(0, len(x), (64,), generator=gen)
        xb = x[pick].flip(3) if bool(torch.rand(1, generator=gen) < 0.5) else x[pick]
        loss = F.cross_entropy(net(xb + 0.05 * torch.randn(xb.shape, generator=gen)), y[pick])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()

    test = table[(table["split"] == "test") & table["mentions"].str.contains("center_color")].head(300)
    want = np.array([COLORS.index(c) for c in test["center_color"]])
    out: dict[str, float] = {}
    with torch.no_grad():
        out["real test images"] = round(float((net(to_input(images[test["image_index"].to_numpy()], cpu)).argmax(1).numpy() == want).mean()), 3)
        text = torch.from_numpy(np.asarray(embeddings[test.index.to_numpy()])).float()  # (N, D) raw vectors
        for run in args.runs:
            g, _ = load_generator(args.runs_dir / run / "models", "cpu")
            g.eval()
            hits = [(net(to_work_resolution(g(torch.randn(len(text), g.config.z_dim, generator=torch.Generator().manual_seed(k)), text)))
                     .argmax(1).numpy() == want).mean() for k in range(4)]
            out[run] = round(float(np.mean(hits)), 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
