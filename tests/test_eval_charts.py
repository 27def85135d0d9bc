"""The report's inline SVG charts: every value drawn where it belongs, nothing fetched."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from t2i.eval.charts import MAX_POINTS, bar_chart, charts_html, line_chart, read_losses
from t2i.eval.registry import MetricResult
from t2i.eval.report import render_html

SVG = "{http://www.w3.org/2000/svg}"


def _marks(svg: str) -> list[ET.Element]:
    return [e for e in ET.fromstring(svg).iter() if e.get("class") == "mark"]


def _attributes() -> pd.DataFrame:
    return pd.DataFrame({"attribute": ["petal_color", "stem_color", "attr_all"],
                         "test": [0.9, 0.8, 0.7], "unseen": [0.6, 0.5, np.nan], "probe": [0.3, 0.2, 0.1]})


def test_bar_chart_draws_one_bar_per_value_scaled_to_its_value() -> None:
    marks = _marks(bar_chart(_attributes(), "attribute", "acc"))
    assert len(marks) == 8  # 3 x 3 values, one missing
    got = {(m.get("data-category"), m.get("data-series")): m for m in marks}
    assert ("attr_all", "unseen") not in got
    tall, short = got[("petal_color", "test")], got[("attr_all", "probe")]
    assert float(tall.get("data-value")) == 0.9
    assert float(tall.get("height")) == pytest.approx(9 * float(short.get("height")), rel=0.01)
    assert float(tall.get("y")) + float(tall.get("height")) == pytest.approx(
        float(short.get("y")) + float(short.get("height")))  # one baseline
    assert tall.find(f"{SVG}title").text == "test petal_color: 0.9000"


def test_line_chart_thins_long_runs_and_keeps_the_ends() -> None:
    steps = np.arange(5000)
    frame = pd.DataFrame({"step": steps, "loss_d": 2.0 - steps / 5000, "loss_g": 0.5 + steps / 10000})
    marks = _marks(line_chart(frame, "step", "losses"))
    assert [m.get("data-series") for m in marks] == ["loss_d", "loss_g"]
    assert all(int(m.get("data-points")) == MAX_POINTS for m in marks)
    assert float(marks[0].get("data-value")) == pytest.approx(2.0 - 4999 / 5000, abs=1e-4)
    first, *_, last = marks[0].get("d")[1:].split(" L")
    (x0, y0), (x1, y1) = map(float, first.split(",")), map(float, last.split(","))
    assert x0 < x1 and y0 < y1  # loss_d falls: later points sit lower on the chart (larger SVG y)


def test_read_losses_takes_the_loss_columns_or_nothing(tmp_path: Path) -> None:
    csv = tmp_path / "losses.csv"
    csv.write_text("step,loss_d,loss_g,img_s\n0,1.5,0.7,300\n10,1.2,0.9,310\n", encoding="utf-8")
    assert list(read_losses(csv).columns) == ["step", "loss_d", "loss_g"]  # type: ignore[union-attr]
    assert read_losses(tmp_path / "missing.csv") is None and read_losses(None) is None
    (tmp_path / "other.csv").write_text("step,img_s\n0,300\n", encoding="utf-8")
    assert read_losses(tmp_path / "other.csv") is None
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    assert read_losses(tmp_path / "empty.csv") is None


def test_report_carries_both_charts_and_no_external_reference(tmp_path: Path) -> None:
    csv = tmp_path / "losses.csv"
    csv.write_text("step,loss_d,loss_g\n0,1.5,0.7\n10,1.2,0.9\n20,1.1,1.0\n", encoding="utf-8")
    per_attr = _attributes().set_index("attribute").to_dict()
    results = [MetricResult("attribute_accuracy", {"test/attr_all": 0.7}, {"test": 9}, "accuracy",
                            extra={"per_attribute": per_attr})]
    page = render_html(results, {}, "t2i evaluation", {}, csv)
    charts = [s for s in page.split("<svg")[1:]]
    assert len(charts) == 2 and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert charts_html(None, None) == "" and "<svg" not in render_html(results[:0], {}, "t", {})
