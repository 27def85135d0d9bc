"""Evaluate's outputs: eval/metrics.json, eval/plots/, eval/samples.png, eval/report.html.

Every file goes through ``t2i.atomic.atomic_write``, so an interrupted run never leaves a
half-written metrics file for ``dvc metrics show`` to read.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from t2i.atomic import atomic_write
from t2i.eval.charts import charts_html
from t2i.eval.context import SCORED_SPLITS
from t2i.eval.registry import MetricResult
from t2i.grids import png_bytes
from t2i.nesting import nest

PLOTS_DIR = "plots"
ATTRIBUTE_PLOT = "attribute_accuracy.csv"
CAPTION_KIND_PLOT = "caption_kinds.csv"
TEMPLATE_PLOT = "templates.csv"
NOVELTY_PLOT = "novelty.csv"
SPLIT_PLOT = "splits.csv"


def _round(v: float) -> float | None:
    return None if math.isnan(v) else round(float(v), 4)


def flat_metrics(results: list[MetricResult]) -> dict[str, float]:
    """``{"test/attr_all": 0.93, "diversity": 0.61, ...}`` over the metrics that ran."""
    out: dict[str, float] = {}
    for r in results:
        if not r.skipped:
            out.update(r.values)
    return out


def nested_metrics(results: list[MetricResult]) -> dict[str, Any]:
    """metrics.json: flat keys split on '/' into sections (``test``, ``unseen``, ``judge``)."""
    return nest({k: _round(v) for k, v in flat_metrics(results).items()}, sep="/")


def attribute_table(results: list[MetricResult]) -> pd.DataFrame | None:
    """Rows = attributes (+ attr_all), columns = test / unseen / real_test, for dvc plots."""
    for r in results:
        table = r.extra.get("per_attribute")
        if r.name == "attribute_accuracy" and isinstance(table, dict):
            frame = pd.DataFrame(table).round(4)
            frame.index.name = "attribute"
            return frame.reset_index()
    return None


def group_table(results: list[MetricResult], key: str, index: str) -> pd.DataFrame | None:
    """Rows = caption groups (``per_caption_kind``: which attributes a caption states;
    ``per_template``: its sentence form), columns = captions and attr_all per split: which
    captions the generator gets wrong."""
    for r in results:
        groups = r.extra.get(key)
        if r.name == "attribute_accuracy" and isinstance(groups, dict) and any(groups.values()):
            columns = {f"{split}_{field}": {g: v[field] for g, v in per_group.items()}
                       for split, per_group in groups.items() if per_group for field in ("captions", "attr_all")}
            frame = pd.DataFrame(columns).round(4)
            frame.index.name = index
            return frame.reset_index()
    return None


GROUP_TABLES = {  # extra key -> (index column, plot file, report heading)
    "per_caption_kind": ("caption_kind", CAPTION_KIND_PLOT, "All-attributes accuracy per caption kind"),
    "per_template": ("template", TEMPLATE_PLOT, "All-attributes accuracy per sentence frame"),
    "per_novelty": ("novelty", NOVELTY_PLOT, "novel_wording: all-attributes accuracy per kind of novelty"),
}


def split_table(results: list[MetricResult]) -> pd.DataFrame | None:
    """Rows = scored splits (and novel_wording per novelty), columns = attr_all, swap, and how many
    captions / pairs each rests on: how far the model follows wordings it never trained on."""
    flat = flat_metrics(results)
    samples = {k: v for r in results if not r.skipped for k, v in r.samples.items()}
    names = [s for s in SCORED_SPLITS if f"{s}/attr_all" in flat or f"{s}/swap" in flat]
    names += sorted({k.rsplit("/", 1)[0] for k in flat if k.startswith("novel_wording/novelty/")})
    if not names:
        return None
    rows = [{"split": name.replace("/novelty/", ": "), "attr_all": flat.get(f"{name}/attr_all"),
             "swap": flat.get(f"{name}/swap"), "swap_single": flat.get(f"{name}/swap_single"),
             "captions": samples.get(f"{name} captions"), "pairs": samples.get(f"{name} pairs")}
            for name in names]
    return pd.DataFrame(rows).round(4)


def _img_tag(image: Image.Image, alt: str) -> str:
    data = base64.b64encode(png_bytes(image)).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def render_html(results: list[MetricResult], grids: dict[str, Image.Image], title: str,
                facts: dict[str, Any], losses_csv: Path | None = None) -> str:
    """Self-contained report: every image inlined as base64, charts as inline SVG
    (t2i/eval/charts.py), no external CSS or scripts."""
    rows = []
    for r in results:
        if r.skipped:
            rows.append(f"<tr class=skip><td>{html.escape(r.name)}</td><td colspan=3>skipped: "
                        f"{html.escape(r.note or '')}</td></tr>")
            continue
        values = "<br>".join(f"{html.escape(k)} = {v:.4f}" for k, v in r.values.items())
        samples = "<br>".join(f"{html.escape(k)}: {v}" for k, v in r.samples.items())
        note = f"<br><b>note:</b> {html.escape(r.note)}" if r.note else ""
        rows.append(f"<tr><td>{html.escape(r.name)}<br><small>{r.seconds:.1f} s</small></td>"
                    f"<td>{values}</td><td>{samples}</td><td>{html.escape(r.what)}{note}</td></tr>")
    attr = attribute_table(results)
    attr_html = attr.to_html(index=False, na_rep="-") if attr is not None else ""
    splits = split_table(results)
    split_html = "" if splits is None else (
        "<h2>Splits: test, unseen, novel wordings, hand-written probe</h2>" + splits.to_html(index=False, na_rep="-"))
    kind_html = ""
    for key, (index, _, heading) in GROUP_TABLES.items():
        frame = group_table(results, key, index)
        if frame is not None:
            kind_html += f"<h2>{html.escape(heading)}</h2>" + frame.to_html(index=False, na_rep="-")
    fact_html = "".join(f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>" for k, v in facts.items())
    grid_html = "".join(f"<h2>{html.escape(name)}</h2>{_img_tag(img, name)}" for name, img in grids.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top}} tr.skip{{color:#888}}
img{{image-rendering:pixelated;max-width:100%}}</style></head><body>
<h1>{html.escape(title)}</h1><ul>{fact_html}</ul>
{charts_html(attr, losses_csv)}
<h2>Metrics</h2><table><tr><th>metric</th><th>values</th><th>samples</th><th>what it measured</th></tr>
{''.join(rows)}</table>
{split_html}
<h2>Attribute accuracy per attribute</h2>{attr_html}
{kind_html}
{grid_html}
</body></html>
"""


def write_outputs(out_dir: Path, results: list[MetricResult], grids: dict[str, Image.Image],
                  facts: dict[str, Any], losses_csv: Path | None = None) -> dict[str, Path]:
    """Write every evaluate output; returns {name: path} for logging. ``losses_csv``: the train
    stage's per-step losses, charted in the report when the file exists."""
    paths = {"metrics": out_dir / "metrics.json", "report": out_dir / "report.html"}
    metrics = nested_metrics(results)
    atomic_write(paths["metrics"], (json.dumps(metrics, indent=2, sort_keys=True) + "\n").encode())
    # Always one file, so the eval/plots directory out exists on datasets without attributes.
    paths["summary_plot"] = out_dir / PLOTS_DIR / "summary.csv"
    summary = pd.DataFrame([{"metric": k, "value": _round(v)} for k, v in flat_metrics(results).items()])
    atomic_write(paths["summary_plot"], summary.to_csv(index=False).encode())
    splits = split_table(results)
    if splits is not None:
        paths["split_plot"] = out_dir / PLOTS_DIR / SPLIT_PLOT
        atomic_write(paths["split_plot"], splits.to_csv(index=False).encode())
    attr = attribute_table(results)
    if attr is not None:
        paths["attribute_plot"] = out_dir / PLOTS_DIR / ATTRIBUTE_PLOT
        atomic_write(paths["attribute_plot"], attr.to_csv(index=False).encode())
    for key, (index, file_name, _) in GROUP_TABLES.items():
        frame = group_table(results, key, index)
        if frame is not None:
            paths[f"{index}_plot"] = out_dir / PLOTS_DIR / file_name
            atomic_write(paths[f"{index}_plot"], frame.to_csv(index=False).encode())
    for name, image in grids.items():
        paths[name] = out_dir / name
        atomic_write(paths[name], png_bytes(image))
    page = render_html(results, grids, "t2i evaluation", facts, losses_csv)
    atomic_write(paths["report"], page.encode("utf-8"))
    return paths
