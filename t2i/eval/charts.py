"""Charts for eval/report.html as inline SVG: nothing fetched, nothing to run in the page.

Two charts: attribute accuracy per attribute, one bar per split (whatever columns the
attribute table has: test, unseen, novel_wording, probe, real_test), and the training losses
from the train stage's ``plots/train/losses.csv``. Hand-written SVG rather than a plotting
library: a few dozen shapes, readable in any browser, and every data mark carries its values
(``class="mark"``, ``data-series``, ``data-value`` and a ``<title>`` tooltip) so a test or a
reader can check what was drawn.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

LOSS_COLUMNS = ("loss_d", "loss_g")  # the curves dvc.yaml plots for training
MAX_POINTS = 400                      # per curve: a long run is thinned, not drawn point by point
PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d", "#bab0ac")
WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 48, 130, 28, 44  # margins: y labels, legend, title, x labels


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if raw <= m * step)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _frame(title: str, y_lo: float, y_hi: float, body: list[str], legend: Sequence[str]) -> str:
    """The SVG around a chart body: title, horizontal grid with y labels, legend on the right."""
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" role="img" aria-label="{_esc(title)}">',
             f'<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{_esc(title)}</text>']
    for t in _ticks(y_lo, y_hi):
        y = TOP + plot_h * (1 - (t - y_lo) / ((y_hi - y_lo) or 1))
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{LEFT - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{t:g}</text>')
    parts += body
    for i, name in enumerate(legend):
        y = TOP + 16 * i
        parts.append(f'<rect x="{WIDTH - RIGHT + 12}" y="{y}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
                     f'<text x="{WIDTH - RIGHT + 28}" y="{y + 9}" font-size="11">{_esc(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(frame: pd.DataFrame, category: str, title: str) -> str:
    """Grouped bars in [0, 1]: one group per row of ``frame[category]``, one bar per other
    column (a missing value draws no bar)."""
    series = [c for c in frame.columns if c != category]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    group_w = plot_w / max(len(frame), 1)
    bar_w = group_w * 0.8 / max(len(series), 1)
    body = []
    for g, (_, row) in enumerate(frame.iterrows()):
        x0 = LEFT + g * group_w + group_w * 0.1
        body.append(f'<text x="{x0 + group_w * 0.4:.1f}" y="{HEIGHT - BOTTOM + 16}" font-size="11" '
                    f'text-anchor="middle">{_esc(row[category])}</text>')
        for s, name in enumerate(series):
            value = row[name]
            if value is None or not np.isfinite(float(value)):
                continue
            h = plot_h * min(max(float(value), 0.0), 1.0)
            body.append(f'<rect class="mark" data-series="{_esc(name)}" data-category="{_esc(row[category])}" '
                        f'data-value="{float(value):.4f}" x="{x0 + s * bar_w:.1f}" y="{TOP + plot_h - h:.1f}" '
                        f'width="{bar_w * 0.92:.1f}" height="{h:.1f}" fill="{PALETTE[s % len(PALETTE)]}">'
                        f'<title>{_esc(name)} {_esc(row[category])}: {float(value):.4f}</title></rect>')
    return _frame(title, 0.0, 1.0, body, series)


def line_chart(frame: pd.DataFrame, x: str, title: str) -> str:
    """One polyline per column other than ``x``; y from the data's range."""
    series = [c for c in frame.columns if c != x]
    if len(frame) > MAX_POINTS:
        frame = frame.iloc[np.linspace(0, len(frame) - 1, MAX_POINTS).round().astype(int)]
    values = frame[series].to_numpy(dtype=float)  # (points, series)
    finite = values[np.isfinite(values)]
    y_lo, y_hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    pad = (y_hi - y_lo) * 0.05 or 0.5
    y_lo, y_hi = y_lo - pad, y_hi + pad
    xs = frame[x].to_numpy(dtype=float)
    x_lo, x_hi = float(xs.min()), float(xs.max())
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    px = LEFT + plot_w * (xs - x_lo) / ((x_hi - x_lo) or 1)
    body = [f'<text x="{px_:.1f}" y="{HEIGHT - BOTTOM + 16}" font-size="11" text-anchor="middle">{t:g}</text>'
            for t in _ticks(x_lo, x_hi) for px_ in [LEFT + plot_w * (t - x_lo) / ((x_hi - x_lo) or 1)]]
    body.append(f'<text x="{LEFT + plot_w / 2:.0f}" y="{HEIGHT - 6}" font-size="11" text-anchor="middle">{_esc(x)}</text>')
    for s, name in enumerate(series):
        ok = np.isfinite(values[:, s])
        py = TOP + plot_h * (1 - (values[ok, s] - y_lo) / (y_hi - y_lo))
        if not ok.any():
            continue
        d = "M" + " L".join(f"{a:.1f},{b:.1f}" for a, b in zip(px[ok], py))
        last = values[ok, s][-1]
        body.append(f'<path class="mark" data-series="{_esc(name)}" data-points="{int(ok.sum())}" '
                    f'data-value="{last:.4f}" d="{d}" fill="none" stroke="{PALETTE[s % len(PALETTE)]}" '
                    f'stroke-width="1.5"><title>{_esc(name)}: last {last:.4f}</title></path>')
    return _frame(title, y_lo, y_hi, body, series)


def read_losses(path: Path | None) -> pd.DataFrame | None:
    """``step`` and the loss columns of the train stage's losses CSV; None when there is no
    file or no loss in it (a model trained elsewhere, an older run)."""
    if path is None or not Path(path).is_file():
        return None
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return None
    columns = [c for c in LOSS_COLUMNS if c in frame.columns]
    if "step" not in frame.columns or not columns or frame.empty:
        return None
    return frame[["step", *columns]].apply(pd.to_numeric, errors="coerce")


def charts_html(attributes: pd.DataFrame | None, losses_csv: Path | None) -> str:
    """The report's chart section ("" when there is nothing to draw)."""
    parts = []
    if attributes is not None and "attribute" in attributes.columns and len(attributes.columns) > 1:
        parts.append(bar_chart(attributes, "attribute", "Attribute accuracy per split (real_test: the judge on real images)"))
    losses = read_losses(losses_csv)
    if losses is not None:
        parts.append(line_chart(losses, "step", f"Training losses ({Path(losses_csv).name})"))  # type: ignore[arg-type]
    return f'<h2>Charts</h2><div class="charts">{"".join(parts)}</div>' if parts else ""
