"""benchmarks/order_experiment.py renders the README Results table from its own numbers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from t2i.config import read_params

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("order_experiment", ROOT / "benchmarks" / "order_experiment.py")
assert spec and spec.loader
order = importlib.util.module_from_spec(spec)
spec.loader.exec_module(order)


def row(name: str, swap: float, concurrent: int = 1) -> dict:
    values = {col: 0.5 for col in order.COLUMNS}
    values["test swap"] = swap
    return {"run": name, "overrides": {}, "seconds": 600.0, "concurrent": concurrent, **values}


def test_table_spread_and_verdicts() -> None:
    rows = [row("use-seed0", 0.9), row("use-seed1", 0.8, concurrent=2), row("bow", 0.2, concurrent=2)]
    spread = order.seed_spread(rows)
    assert spread["test swap"] == {"mean": 0.85, "min": 0.8, "max": 0.9, "n": 2}
    table = order.markdown(rows, spread)
    assert "| use-seed0 | defaults |" in table and "| 10.0 |" in table
    assert "| 10.0* |" in table and "ran alongside another run" in table  # concurrent minutes marked
    assert "0.850 [0.800, 0.900]" in table
    verdict = order.verdicts(rows)
    assert verdict["use-seed0: test swap >= 0.85"] and not verdict["use-seed1: test swap >= 0.85"]
    assert verdict["bow: test swap <= 0.30"]


def test_readme_command_leaves_out_the_workdir() -> None:
    shown = order.shown_command(["--jobs", "2", "--workdir", "/somewhere/local", "--write-readme", "--workdir=/x"])
    assert shown == "python benchmarks/order_experiment.py --jobs 2 --write-readme"


def test_provenance_comes_from_the_json_not_the_render_date() -> None:
    info = order.machine()
    assert info["cores"] >= 1 and info["cpu"] and info["cpu_precision"] in ("bf16", "fp32")
    recorded = {"date": "2026-11-25", "cpu": "Some CPU", "cores": 2, "cpu_precision": "bf16"}
    assert order.provenance(recorded) == "2026-11-25, 2-core Some CPU, training in bf16"
    assert "not recorded" in order.provenance(None)  # JSON written before the field existed
    defaults = read_params(ROOT / "params.yaml")
    assert order.provenance(recorded, defaults).endswith(f", default `train.steps={defaults['train']['steps']}`")
    assert order.provenance(recorded, None) == order.provenance(recorded)  # JSON without params


def test_caption_kinds_read_from_the_eval_plots(tmp_path: Path) -> None:
    assert order.eval_table(tmp_path, "caption_kinds.csv") == []  # real data: no kinds, no key error
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "caption_kinds.csv").write_text(
        "caption_kind,test_captions,test_attr_all,unseen_captions,unseen_attr_all\n"
        "center_color+petal_color+stem_color,141,0.3121,147,0.2857\npetal_color+stem_color,459,0.9434,,\n")
    kinds = order.eval_table(tmp_path, "caption_kinds.csv")
    assert kinds[0] == {"caption_kind": "center_color+petal_color+stem_color", "test_captions": 141.0,
                        "test_attr_all": 0.3121, "unseen_captions": 147.0, "unseen_attr_all": 0.2857}
    assert kinds[1]["unseen_attr_all"] is None
