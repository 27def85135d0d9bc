"""benchmarks/order_experiment.py renders the README Results table from its own numbers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from t2i.config import read_params

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("order_experiment", ROOT / "benchmarks" / "order_experiment.py")
assert spec and spec.loader
order = importlib.util.module_from_spec(spec)
spec.loader.exec_module(order)


def row(name: str, swap: float, concurrent: int = 1, overrides: dict | None = None, **figures: float) -> dict:
    values = {col: 0.5 for col in order.COLUMNS}
    values["test swap"] = swap
    values.update({k.replace("__", " "): v for k, v in figures.items()})
    return {"run": name, "overrides": overrides or {}, "seconds": 600.0, "concurrent": concurrent, **values}


def test_table_spread_and_verdicts() -> None:
    rows = [row("use-seed0", 0.9), row("use-seed1", 0.8, concurrent=2), row("bow", 0.2, concurrent=2)]
    spread = order.seed_spread(rows)
    assert spread["use"]["test swap"] == {"mean": 0.85, "min": 0.8, "max": 0.9, "n": 2}
    table = order.markdown(rows, spread)
    assert "| use-seed0 | defaults |" in table and "| 10.0 |" in table
    assert "| 10.0* |" in table and "ran alongside another run" in table  # concurrent minutes marked
    assert "| use (default: caption code), 2 seeds: mean [min, max] |" in table and "0.850 [0.800, 0.900]" in table
    verdict = order.verdicts(rows)
    assert verdict["use-seed0: test swap >= 0.85 (issue 7)"] and not verdict["use-seed1: test swap >= 0.85 (issue 7)"]
    assert verdict["bow: test swap <= 0.3 (issue 7)"]


def fake_runs() -> list[dict]:
    """What a full run of the script could return: 3 seeds of each group, bow, no-attention."""
    use = dict(test__attr_all=0.93, novel_wording__attr_all=0.87, novel_wording__swap=0.82, probe__attr_all=0.81,
               unseen__attr_all=0.8, unseen__swap=0.7, diversity=0.6)
    runs = [row(f"use-seed{k}", 0.9, **{**use, "probe__attr_all": 0.81 - 0.02 * k}) for k in range(3)]
    runs += [row(f"sentence-only-seed{k}", 0.88, overrides=order.SENTENCE_ONLY, novel_wording__attr_all=0.6 + 0.01 * k,
                 novel_wording__swap=0.55, probe__attr_all=0.1) for k in range(3)]
    runs += [row("bow", 0.1, novel_wording__swap=0.25), row("no-attention", 0.9)]
    return runs


def test_new_splits_ablation_and_issue_25_targets_in_the_table() -> None:
    rows = fake_runs()
    spread = order.seed_spread(rows)
    assert set(spread) == {"use", "sentence-only"}
    assert spread["sentence-only"]["novel_wording attr_all"] == {"mean": 0.61, "min": 0.6, "max": 0.62, "n": 3}
    table = order.markdown(rows, spread)
    header = table.splitlines()[0]
    for col in ("novel_wording attr_all", "novel_wording swap", "probe attr_all", "probe swap"):
        assert f" {col} |" in header
    # The ablation row, with its overrides as params.yaml spells them, and its own seed spread.
    line = next(x for x in table.splitlines() if x.startswith("| sentence-only-seed0 |"))
    assert "`train.model.word_attention=[]`, `train.model.d_word_match=false`" in line
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[2 + list(order.COLUMNS).index("novel_wording attr_all")] == "0.600"
    assert cells[2 + list(order.COLUMNS).index("probe attr_all")] == "0.100"
    assert "| sentence vector only, 3 seeds: mean [min, max] | | " in table and "0.610 [0.600, 0.620]" in table
    verdict = order.verdicts(rows)
    assert verdict["use-seed0: novel_wording attr_all >= 0.85 (issue 25)"]
    assert verdict["use-seed0: novel_wording swap >= 0.8 (issue 25)"]
    assert verdict["use-seed0: test attr_all >= 0.9 (issue 25)"]
    assert verdict["use-seed0: probe attr_all >= 0.8 (issue 25)"] and not verdict["use-seed2: probe attr_all >= 0.8 (issue 25)"]
    assert verdict["bow: novel_wording swap <= 0.3 (issue 25)"]
    assert not any(k.startswith(("sentence-only", "no-attention")) for k in verdict)  # ablations have no targets
    # The targets are printed under the table, with how many seeds meet each.
    assert "- use (default: caption code): probe attr_all >= 0.8 (issue 25): 1/3 NOT met (0.810, 0.790, 0.770)" in table
    assert "- use (default: caption code): novel_wording attr_all >= 0.85 (issue 25): 3/3 met" in table
    assert "- bow: novel_wording swap <= 0.3 (issue 25): 1/1 met (0.250)" in table
    # Repro time: only a run made alone says anything about it.
    assert "- use-seed0, run alone: whole `dvc repro` <= 20 min (issue 25): met (10.0 min)" in table
    rows[0]["seconds"], rows[1]["concurrent"] = 25 * 60.0, 2
    assert not order.verdicts(rows)["use-seed0: minutes <= 20 (issue 25)"]
    assert "use-seed1: minutes <= 20 (issue 25)" not in order.verdicts(rows)
    assert "(issue 25): NOT met (25.0 min)" in order.markdown(rows, spread)


def test_older_json_without_the_new_columns_still_renders() -> None:
    old = row("use-seed0", 0.9)
    for col in ("novel_wording attr_all", "novel_wording swap", "probe attr_all", "probe swap"):
        del old[col]
    table = order.markdown([old], order.seed_spread([old]))
    line = next(x for x in table.splitlines() if x.startswith("| use-seed0 |"))
    assert line.count("| - ") == 4
    assert "novel_wording attr_all >= 0.85 (issue 25): 0/1 NOT met (-)" in table


def test_run_params_are_checked_before_any_repro() -> None:
    import pytest

    from t2i.config import ModelParams, ParamsError

    # The sentence-only keys come with the word-attention training params (train.model.word_attention).
    names = [n for n in order.RUNS if order.group_of(n) != "sentence-only" or "word_attention" in ModelParams.model_fields]
    order.check_runs(names)
    order.RUNS["bad-key"] = {"train.model.word_atention": []}
    try:
        with pytest.raises(ParamsError, match="word_atention"):
            order.check_runs(["bad-key"])
    finally:
        del order.RUNS["bad-key"]
    assert order.group_of("sentence-only-seed2") == "sentence-only" and order.group_of("bow") is None
    assert order.group_of("use-seed10") == "use" and order.group_of("other-seed0") is None


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


def test_two_invocations_merge_into_one_table() -> None:
    machine = {"date": "2026-12-05", "cpu": "AMD EPYC", "cores": 2, "cpu_precision": "bf16"}
    first = {"runs": [row("use-seed0", 0.9)], "machine": machine, "defaults": {"train": {"steps": 3000}}}
    second = {"runs": [row("use-seed1", 0.8)], "machine": {**machine, "date": "2026-12-06"},
              "defaults": {"train": {"steps": 3000}}}
    rows, info, defaults = order.merge_results([first, second])
    assert [r["run"] for r in rows] == ["use-seed0", "use-seed1"]
    assert info["date"] == "2026-12-05 and 2026-12-06" and defaults == {"train": {"steps": 3000}}
    assert order.seed_spread(rows)["use"]["test swap"]["n"] == 2
    for other, problem in (({**second, "runs": [row("use-seed0", 0.8)]}, "appears twice"),
                           ({**second, "machine": {**machine, "cpu_precision": "fp32"}}, "different machines"),
                           ({**second, "defaults": {"train": {"steps": 1500}}}, "different params.yaml")):
        with pytest.raises(SystemExit, match=problem):
            order.merge_results([first, other])
