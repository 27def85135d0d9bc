"""`python -m t2i.summary`: after `dvc repro`, say where everything is and how to look at it."""

from __future__ import annotations

import json
import os
from pathlib import Path


def _mlflow_store(root: Path) -> str:
    run_file = root / "models" / "mlflow_run.json"
    if run_file.exists():
        return json.loads(run_file.read_text(encoding="utf-8")).get("tracking_uri", "?")
    return os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")


def summary(root: Path = Path(".")) -> str:
    root = root.resolve()
    metrics_path = root / "eval" / "metrics.json"
    lines = ["", "t2i pipeline outputs:"]
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        lines.append(f"  metrics        {metrics_path.relative_to(root)}  (dvc metrics show)")
        for split in ("test", "unseen"):
            if isinstance(metrics.get(split), dict):
                shown = {k: v for k, v in metrics[split].items() if isinstance(v, (int, float))}
                text = ", ".join(f"{k}={v:.3f}" for k, v in list(shown.items())[:6])
                lines.append(f"    {split:<8} {text}")
    else:
        lines.append("  metrics        (none yet: eval/metrics.json is written by `dvc repro`)")
    for label, rel in [
        ("sample grid", "eval/samples.png"),
        ("report", "eval/report.html"),
        ("generator", "models/generator.safetensors"),
        ("loss plot", "plots/train/losses.csv"),
    ]:
        state = "" if (root / rel).exists() else "  (missing)"
        lines.append(f"  {label:<14} {rel}{state}")
    store = _mlflow_store(root)
    lines.append(f"  MLflow store   {store}")
    if store.startswith(("http://", "https://")):
        lines.append(f"  open the UI    {store} in a browser")
    else:
        lines.append(
            f"  open the UI    .venv/bin/mlflow ui --backend-store-uri {store} --workers 1"
            "  ->  http://127.0.0.1:5000"
        )
    lines.append("  compare        dvc exp show --md   |   dvc plots show")
    lines.append('  generate       t2i generate "a red flower with a yellow stem" -n 8 -o grid.png')
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary())
