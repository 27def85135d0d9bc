"""Regenerate the README's Results table: does the image follow word order, and wordings never
trained on? (issues 7 and 25)

    python benchmarks/order_experiment.py                 # all runs below (hours), prints JSON
    python benchmarks/order_experiment.py --runs use-seed0 sentence-only-seed0 bow --write-readme
    python benchmarks/order_experiment.py --jobs 2 --write-readme   # the first run alone, then 2 at once
    python benchmarks/order_experiment.py --from-json results.json --write-readme   # re-render only
    python benchmarks/order_experiment.py --from-json a.json b.json --write-readme  # two invocations, one table

Runs: the default model (the words through the matcher's caption code, see docs/model.md) on 3
seeds; the ablation "sentence vector only" (no caption code, no word attention in G, no word
matching in D) on the same seeds; `bow` (averaged word vectors: word order lost); no residual
attention; the code plus word attention in G and word-region matching in D; the matcher without
its in-batch negatives. Columns: test and
unseen as before, `novel_wording` (sentence frames and words never trained on) and `probe`
(hand-written captions), each with attr_all and swap.

With --jobs N the first run still runs alone (its minutes are the honest wall time of a
`dvc repro` on this machine, and it fills the shared cache with ingest/embed); the others run N
at a time with `train_runtime.threads=1` (and `matcher.threads=1`) each, which on 2 cores gets more images/s in total than one
2-thread run. Their minutes are marked as concurrent and say nothing about a lone repro.

Each run is a full `dvc repro` of the default params plus its overrides, in a throwaway copy of
the project (the workspace is untouched), sharing one DVC cache so ingest and embed run once.
Every run is logged to this project's MLflow store. The JSON on stdout and the README table are
made from the same numbers: nothing in the table is typed by hand.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
from concurrent.futures import ThreadPoolExecutor
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from t2i import project_copy  # noqa: E402
from t2i.config import read_params, validate_section  # noqa: E402

SEEDS = (0, 1, 2)
# The ablation: G without word attention, D without word matching, no caption code; the sentence vector alone.
SENTENCE_ONLY = {"train.model.word_attention": [], "train.model.d_word_match": False, "train.model.caption_code": False}
WORD_MODULES = {"train.model.word_attention": [8, 16], "train.model.d_word_match": True}
RUNS: dict[str, dict[str, Any]] = {
    # A seed is the whole run's: the matcher's fit as well as the GAN's.
    **{f"use-seed{k}": {"train.seed": k, "matcher.seed": k} for k in SEEDS},
    **{f"sentence-only-seed{k}": {"train.seed": k, "matcher.seed": k, **SENTENCE_ONLY} for k in SEEDS},
    "bow": {"embed.encoder": "bow"},
    "no-attention": {"train.model.attention": []},
    # The caption code plus both word modules: G's regions attend over the words, D scores words against regions.
    **{f"word-modules-seed{k}": {"train.seed": k, "matcher.seed": k, **WORD_MODULES} for k in SEEDS},
    # The matcher fitted against its captions' hard negatives alone (no in-batch negatives).
    "matcher-hard-negatives-only": {"matcher.batch_negatives": False},
}
GROUPS = {  # run-name prefix of a seed group -> its label in the table's spread rows
    "use": "use (default: caption code)",
    "sentence-only": "sentence vector only",
    "word-modules": "caption code + word attention in G + word matching in D",
}
COLUMNS = {  # column -> dotted key in eval/metrics.json
    "test attr_all": "test.attr_all",
    "test swap": "test.swap",
    "unseen attr_all": "unseen.attr_all",
    "unseen swap": "unseen.swap",
    "novel_wording attr_all": "novel_wording.attr_all",
    "novel_wording swap": "novel_wording.swap",
    "probe attr_all": "probe.attr_all",
    "probe swap": "probe.swap",
    "diversity": "diversity",
    "test petal": "test.petal_color",
    "test stem": "test.stem_color",
    "test center": "test.center_color",
}
# Targets for the default model (encoder=use, caption code), each seed: column -> (op, value, issue).
TARGETS: dict[str, tuple[str, float, int]] = {
    "test attr_all": (">=", 0.90, 25),
    "novel_wording attr_all": (">=", 0.85, 25),
    "novel_wording swap": (">=", 0.80, 25),
    "probe attr_all": (">=", 0.80, 25),
    "test swap": (">=", 0.85, 7),
    "unseen attr_all": (">=", 0.75, 7),
    "unseen swap": (">=", 0.60, 7),
    "diversity": (">=", 0.5, 7),
}
# bow keeps the words but not their order: its swap must stay near chance (<= 0.25 in theory).
REPRO_MINUTES = 20.0  # issue 25: a whole default `dvc repro`, run alone on the 2-core host
BOW_TARGETS: dict[str, tuple[str, float, int]] = {
    "novel_wording swap": ("<=", 0.30, 25),
    "test swap": ("<=", 0.30, 7),
}
START, END = "<!-- results:start -->", "<!-- results:end -->"


def lookup(metrics: dict[str, Any], dotted: str) -> float | None:
    node: Any = metrics
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, (int, float)) else None


def check_runs(names: list[str], params_path: Path = ROOT / "params.yaml") -> None:
    """Each run's params validated before the first hour-long repro: a renamed key fails here."""
    base = read_params(params_path)
    for name in names:
        params = project_copy.merge(base, project_copy.dotted_to_nested(RUNS[name]))
        for section in {key.split(".")[0] for key in RUNS[name]}:
            validate_section(section, params.get(section), f"{name} overrides")


def run_one(name: str, overrides: dict[str, Any], work: Path, cache: Path, concurrent: int = 1) -> dict[str, Any]:
    dest = work / name
    dest.mkdir(parents=True)
    # train_runtime.threads and matcher.threads are not DVC-tracked params (speed, not results):
    # the copy's params differ from the recorded overrides only in them.
    speed = {"train_runtime.threads": 1, "matcher.threads": 1} if concurrent > 1 else {}
    project_copy.make_project(ROOT, dest, project_copy.dotted_to_nested({**overrides, **speed}), cache_dir=cache)
    # One eval cache for all copies (keyed by data hash): the first run trains the judge, as a
    # fresh clone would; the others reuse it instead of each spending ~3 min retraining it.
    env = project_copy.project_env({"MLFLOW_TRACKING_URI": f"sqlite:///{ROOT / 'mlflow.db'}",
                                    "T2I_CACHE_DIR": str(work / "t2i-cache")})
    start = time.perf_counter()
    print(f"[{name}] dvc repro with {overrides} in {dest}", file=sys.stderr, flush=True)
    # Stage output goes to stderr: stdout carries only this script's JSON.
    subprocess.run(["dvc", "repro"], cwd=dest, env=env, stdout=sys.stderr, check=True)
    seconds = time.perf_counter() - start
    metrics = json.loads((dest / "eval" / "metrics.json").read_text(encoding="utf-8"))
    row = {"run": name, "overrides": overrides, "seconds": round(seconds, 1), "concurrent": concurrent}
    row.update({col: lookup(metrics, key) for col, key in COLUMNS.items()})
    row["mlflow_run"] = json.loads((dest / "models" / "mlflow_run.json").read_text())["run_id"]
    for key, name in (("caption_kinds", "caption_kinds.csv"), ("templates", "templates.csv"),
                      ("novelty", "novelty.csv"), ("splits", "splits.csv")):
        row[key] = eval_table(dest / "eval", name)
    row["novel_wording_by_novelty"] = metrics.get("novel_wording", {}).get("novelty", {})
    return row


def eval_table(eval_dir: Path, name: str) -> list[dict[str, Any]]:
    """eval/plots/NAME as records: attr_all per caption kind (caption_kinds.csv) or per template
    (templates.csv), which captions a run gets wrong, kept in the JSON beside the table's means.
    The first column names the group; the others are numbers (empty: None)."""
    path = eval_dir / "plots" / name
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        first = (reader.fieldnames or [""])[0]
        return [{k: (v if k == first else float(v) if v else None) for k, v in r.items()}
                for r in reader]


def group_of(run: str) -> str | None:
    """The seed group of a run name ("sentence-only-seed1" -> "sentence-only"), None if none."""
    head, sep, seed = run.rpartition("-seed")
    return head if sep and seed.isdigit() and head in GROUPS else None


def seed_spread(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """{group: {column: mean, min, max, n}} over each seed group's runs."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for group in GROUPS:
        seeds = [r for r in rows if group_of(r["run"]) == group]
        stats = {}
        for col in COLUMNS:
            values = [r[col] for r in seeds if r.get(col) is not None]
            if values:
                stats[col] = {"mean": round(statistics.fmean(values), 4), "min": min(values), "max": max(values),
                              "n": len(values)}
        if stats:
            out[group] = stats
    return out


def _meets(value: float | None, op: str, target: float) -> bool:
    return value is not None and (value >= target if op == ">=" else value <= target)


def verdicts(rows: list[dict[str, Any]]) -> dict[str, bool]:
    """"run: column op target (issue N)" -> met, for every default-model seed and for bow."""
    out = {}
    for r in rows:
        targets = TARGETS if group_of(r["run"]) == "use" else BOW_TARGETS if r["run"] == "bow" else {}
        for col, (op, target, issue) in targets.items():
            out[f"{r['run']}: {col} {op} {target} (issue {issue})"] = _meets(r.get(col), op, target)
        if group_of(r["run"]) == "use" and r.get("concurrent", 1) == 1:  # concurrent minutes say nothing
            out[f"{r['run']}: minutes <= {REPRO_MINUTES:g} (issue 25)"] = r["seconds"] / 60 <= REPRO_MINUTES
    return out


def targets_markdown(rows: list[dict[str, Any]]) -> str:
    """One line per target: how many of the runs it applies to meet it, with their figures."""
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    lines = []
    for who, targets, runs in ((GROUPS["use"], TARGETS, [r for r in rows if group_of(r["run"]) == "use"]),
                               ("bow", BOW_TARGETS, [r for r in rows if r["run"] == "bow"])):
        for col, (op, target, issue) in targets.items():
            if not runs:
                continue
            met = sum(_meets(r.get(col), op, target) for r in runs)
            figures = ", ".join(fmt(r.get(col)) for r in runs)
            lines.append(f"- {who}: {col} {op} {target} (issue {issue}): {met}/{len(runs)} "
                         f"{'met' if met == len(runs) else 'NOT met'} ({figures})")
    for r in rows:
        if group_of(r["run"]) == "use" and r.get("concurrent", 1) == 1:
            minutes = r["seconds"] / 60
            lines.append(f"- {r['run']}, run alone: whole `dvc repro` <= {REPRO_MINUTES:g} min (issue 25): "
                         f"{'met' if minutes <= REPRO_MINUTES else 'NOT met'} ({minutes:.1f} min)")
    return "\n".join(lines)


def shown_value(v: Any) -> str:
    """An override as params.yaml spells it: false, [] (not Python's False)."""
    return json.dumps(v) if isinstance(v, (bool, list)) else str(v)


def markdown(rows: list[dict[str, Any]], spread: dict[str, dict[str, dict[str, float]]]) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    head = "| run | overrides | " + " | ".join(COLUMNS) + " | minutes |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    for r in rows:
        over = ", ".join(f"`{k}={shown_value(v)}`" for k, v in r["overrides"].items()) or "defaults"
        lines.append(f"| {r['run']} | {over} | " + " | ".join(fmt(r.get(c)) for c in COLUMNS)
                     + f" | {r['seconds'] / 60:.1f}{'*' if r.get('concurrent', 1) > 1 else ''} |")
    for group, stats in spread.items():
        n = max(s["n"] for s in stats.values())
        if n >= 2:
            lines.append(f"| {GROUPS[group]}, {n} seeds: mean [min, max] | | " + " | ".join(
                f"{s['mean']:.3f} [{s['min']:.3f}, {s['max']:.3f}]" if (s := stats.get(c)) else "-"
                for c in COLUMNS) + " | |")
    if any(r.get("concurrent", 1) > 1 for r in rows):
        lines.append("")
        lines.append("\\* ran alongside another run, one CPU thread each: not the wall time of a lone `dvc repro`.")
    goals = targets_markdown(rows)
    if goals:
        lines += ["", "Targets:", "", goals]
    return "\n".join(lines)


def shown_command(argv: list[str]) -> str:
    """The command line for the README, without --workdir: where the copies lived is this
    machine's business and does not change a figure."""
    shown, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workdir":
            skip = True
        elif not arg.startswith("--workdir="):
            shown.append(arg)
    return " ".join(["python benchmarks/order_experiment.py", *shown])


def machine() -> dict[str, Any]:
    """Where the runs were made: CPU speed differs by >2x between machines (README Quickstart)."""
    from t2i.train.runtime import cpu_has_fast_bf16

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"date": time.strftime("%Y-%m-%d"), "cpu": cpu, "cores": os.cpu_count(),
            "cpu_precision": "bf16" if cpu_has_fast_bf16() else "fp32"}


def provenance(info: dict[str, Any] | None, defaults: dict[str, Any] | None = None) -> str:
    """The run's date, machine and step count as recorded in its JSON (older JSON: not recorded)."""
    if not info:
        return "machine not recorded in the JSON"
    text = f"{info['date']}, {info['cores']}-core {info['cpu']}, training in {info['cpu_precision']}"
    steps = (defaults or {}).get("train", {}).get("steps")
    return text if steps is None else f"{text}, default `train.steps={steps}`"


def write_readme(table: str, command: str, info: dict[str, Any] | None, defaults: dict[str, Any] | None) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"README.md has no {START} ... {END} block to replace")
    block = f"{START}\nPrinted by `{command}` ({provenance(info, defaults)}):\n\n{table}\n{END}"
    head, rest = text.split(START, 1)
    readme.write_text(head + block + rest.split(END, 1)[1], encoding="utf-8")


def merge_results(results: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any] | None, dict[str, Any] | None]:
    """Runs, machine and defaults of one or more earlier JSON outputs as one table's. Their runs
    must have distinct names, one machine (CPU, cores, precision) and one params.yaml: figures
    from another machine or other defaults do not share a table. Dates that differ are joined."""
    rows: list[dict[str, Any]] = [r for result in results for r in result["runs"]]
    names = [r["run"] for r in rows]
    if len(set(names)) != len(names):
        raise SystemExit(f"--from-json: a run appears twice: {sorted(n for n in set(names) if names.count(n) > 1)}")
    infos = [result.get("machine") for result in results]
    first = infos[0]
    for info in infos[1:]:
        same = first and info and all(first[k] == info[k] for k in ("cpu", "cores", "cpu_precision"))
        if not same:
            raise SystemExit(f"--from-json: runs from different machines ({first} and {info}) do not share a table")
    defaults = [result.get("defaults") for result in results]
    if any(d != defaults[0] for d in defaults[1:]):
        raise SystemExit("--from-json: the runs saw different params.yaml defaults; they do not share a table")
    if first and len(infos) > 1:
        first = {**first, "date": " and ".join(dict.fromkeys(info["date"] for info in infos))}
    return rows, first, defaults[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--jobs", type=int, default=1, help="after the first run, run this many at once (1 thread each)")
    parser.add_argument("--write-readme", action="store_true", help="replace the README Results block")
    parser.add_argument("--workdir", type=Path, help="keep the project copies here (default: a temp dir)")
    parser.add_argument("--from-json", type=Path, nargs="+",
                        help="re-render the table from this script's earlier JSON output (several: one table of all their runs)")
    args = parser.parse_args()
    if args.from_json:
        rows, info, defaults = merge_results([json.loads(p.read_text(encoding="utf-8")) for p in args.from_json])
    else:
        # params.yaml as the runs saw it: the defaults change between tables (train.steps above all).
        check_runs(args.runs)
        info, defaults = machine(), read_params(ROOT / "params.yaml")
        with tempfile.TemporaryDirectory(prefix="t2i-order-") as tmp:
            work = args.workdir or Path(tmp)
            cache = work / "dvc-cache"
            first, rest = args.runs[0], args.runs[1:]
            rows = [run_one(first, RUNS[first], work, cache)]
            jobs = max(1, min(args.jobs, len(rest)))
            with ThreadPoolExecutor(jobs) as pool:  # threads only wait on `dvc repro` processes
                rows += list(pool.map(lambda n: run_one(n, RUNS[n], work, cache, jobs), rest))
    spread = seed_spread(rows)
    result = {"runs": rows, "seed_spread": spread, "targets": verdicts(rows), "machine": info,
              "defaults": defaults}
    print(json.dumps(result, indent=2))
    if args.write_readme:
        write_readme(markdown(rows, spread), shown_command(sys.argv[1:]), info, defaults)


if __name__ == "__main__":
    main()
