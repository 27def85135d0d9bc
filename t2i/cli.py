"""`t2i generate` and `t2i probe`: use a trained generator from the command line.

    t2i generate "a red flower with a yellow stem" -n 8 -o grid.png [--model models/] [--seed 0]
    t2i probe captions.csv [-n 4] [-o probe.png]

--model is a models/ directory, `runs:/<run_id>` or `models:/<name>@<alias>` (MLflow). Both
commands generate through `t2i.pipeline.GenerationPipeline`, which encodes captions with the
encoder the model was trained with (models/config.json), so any wording works, not only the
training templates. `probe` scores the images with the evaluate stage's
attribute classifier (synthetic data), which is how to check that the model understood a
sentence rather than memorised a template.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from t2i.errors import EXIT_USER, UserError, run_main

EXIT_USAGE = EXIT_USER
# Images per caption: the bound GenerationPipeline enforces (t2i.pipeline.MAX_PER_CAPTION), checked
# here before the model loads; a test keeps the two equal.
MAX_N = 64


class CliError(UserError):
    """A user-facing error: printed as one line, no traceback."""


def _load(model: str, device: str):  # -> GenerationPipeline (imported lazily: torch costs seconds)
    import torch

    from t2i.pipeline import GenerationPipeline
    from t2i.text import EncoderError

    torch.set_flush_denormal(True)  # small convnets on x86 CPUs slow down 2-10x on denormals
    try:
        return GenerationPipeline.from_pretrained(model, device)
    except (EncoderError, ValueError, FileNotFoundError, RuntimeError) as exc:
        raise CliError(str(exc)) from exc


def _generate(pipe, captions: list[str], seed: int, n: int) -> np.ndarray:
    """uint8 (len(captions), n, R, R, 3); the encoder is built lazily, on the first call."""
    from t2i.text import EncoderError

    try:
        images = pipe.generate_array(captions, seed, n)  # (len(captions) * n, R, R, 3)
    except (EncoderError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    return images.reshape(len(captions), n, *images.shape[1:])


def _write_png(image, path: Path) -> None:  # image: PIL.Image.Image
    from t2i.atomic import atomic_write
    from t2i.grids import png_bytes

    atomic_write(path, png_bytes(image))


def cmd_generate(args: argparse.Namespace) -> int:
    from t2i.grids import caption_grid

    caption = args.caption.strip()
    if not caption:
        raise CliError("the caption is empty: describe the image, e.g. \"a red flower with a yellow stem\"")
    _check_n(args.n)
    pipe = _load(args.model, args.device)
    images = _generate(pipe, [caption], args.seed, args.n)  # (1, n, R, R, 3)
    _write_png(caption_grid(images, [caption]), args.output)
    print(f"wrote {args.output}: {args.n} images of {caption!r} (seed {args.seed})")
    return 0


def _check_n(n: int) -> None:
    """-n within 1..MAX_N, before any work (a larger grid is minutes and gigabytes of one PNG)."""
    if not 1 <= n <= MAX_N:
        raise CliError(f"-n must be between 1 and {MAX_N} images per caption, got {n}: "
                       "for more, run the command again with another --seed")


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise CliError(f"{path} not found")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise CliError(f"{path} is empty: it needs a header row 'caption,...' and one row per caption") from None
    except UnicodeDecodeError as exc:
        raise CliError(f"{path} is not UTF-8 text (byte {exc.start}): save it as UTF-8 CSV") from None
    except pd.errors.ParserError as exc:
        raise CliError(f"{path} is not a valid CSV: {exc}") from None


def _check_values(path: Path, table: pd.DataFrame, valid: dict[str, tuple]) -> None:
    """Every attribute value is one the judge knows ("chartreuse" would score 0.00 without a word)."""
    for attr in (c for c in table.columns if c in valid):
        names = [str(v) for v in valid[attr]]
        bad = sorted({v for v in table[attr] if v != "" and v not in names})
        if bad:
            raise CliError(f"{path}: unknown {attr} value(s) {bad}; valid: {', '.join(names)} (or leave it empty)")


def _read_probe_csv(path: Path, known: tuple[str, ...]) -> pd.DataFrame:
    from t2i.data.flowers import ATTRIBUTES as VALUES

    table = _read_csv(path)
    if "caption" not in table.columns:
        raise CliError(f"{path} needs a 'caption' column (plus attributes to check: {', '.join(known)})")
    unknown = [c for c in table.columns if c != "caption" and c not in known]
    if unknown:
        raise CliError(f"{path}: unknown columns {unknown}; attributes the judge reads: {', '.join(known)}")
    table["caption"] = table["caption"].str.strip()
    if (table["caption"] == "").any():
        raise CliError(f"{path}: empty caption in row(s) {list(np.flatnonzero(table['caption'] == '') + 2)}")
    if table.empty:
        raise CliError(f"{path} has no rows")
    for column in (c for c in table.columns if c != "caption"):
        table[column] = table[column].str.strip()
    _check_values(path, table, {a: VALUES[a] for a in known if a in VALUES})
    # A row that states nothing would score a vacuous 1.00: say so instead of scoring it.
    attrs = [c for c in table.columns if c != "caption"]
    if not attrs or not table[attrs].ne("").any(axis=None):
        raise CliError(f"{path}: no row states an attribute to check; add columns such as petal_color and "
                       f"stem_color with the colours each caption asks for (or draw with `t2i generate`)")
    return table


def cmd_probe(args: argparse.Namespace) -> int:
    from t2i.config import EvaluateParams, load_section
    from t2i.eval.classifier import ATTRIBUTES, train_classifier
    from t2i.eval.context import judge_fit
    from t2i.eval.pipeline import data_fingerprint
    from t2i.grids import caption_grid
    from t2i.text.embed_table import EMBEDDINGS_FILE

    _check_n(args.n)
    table = _read_probe_csv(args.csv, ATTRIBUTES)
    params = load_section("evaluate", args.params) if Path(args.params).is_file() else EvaluateParams()
    from t2i.data.prepared import load_prepared

    try:
        prepared = load_prepared(args.prepared)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from exc
    pipe = _load(args.model, args.device)
    key = data_fingerprint(args.prepared, args.embeddings) if (args.embeddings / EMBEDDINGS_FILE).is_file() else None
    try:
        clf = train_classifier(prepared.table, prepared.images, judge_fit(params), pipe.device, data_key=key)
    except ValueError as exc:
        raise CliError(f"{exc}: `t2i probe` needs a dataset with ground truth (synthetic)") from exc
    captions = table["caption"].tolist()
    images = np.concatenate([_generate(pipe, [c], args.seed, args.n) for c in captions])  # (C, n, R, R, 3)
    all_right, marks = [], []
    per_attr: dict[str, list[float]] = {}
    for i, row in table.iterrows():
        pred = clf.predict(images[i])  # each (n,)
        ok = np.ones(args.n, bool)
        parts = []
        for a in ATTRIBUTES:
            want = row.get(a, "")
            if a in table.columns and want != "":
                right = pred[a] == str(want)
                ok &= right
                per_attr.setdefault(a, []).append(float(right.mean()))
                parts.append(f"{a}={want}: {right.mean():.2f}")
        if not parts:  # this row asks nothing: drawn, not scored
            marks.append("not scored")
            print(f"    -  {row['caption']!r}  (no attribute given: not scored)")
            continue
        all_right.append(float(ok.mean()))
        marks.append(f"all asked: {ok.mean():.2f}")
        print(f"{ok.mean():5.2f}  {row['caption']!r}  " + ", ".join(parts))
    overall = ", ".join(f"{a} {np.mean(v):.2f}" for a, v in per_attr.items())
    print(f"overall: all asked attributes right {np.mean(all_right):.2f} ({len(all_right)} scored captions x "
          f"{args.n} images); {overall}")
    _write_png(caption_grid(images, captions, marks), args.output)
    print(f"wrote {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="t2i", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, output: str) -> None:
        p.add_argument("--model", default="models",
                       help="models/ dir, runs:/<run_id> or models:/<name>@<alias> (MLflow)")
        p.add_argument("-n", type=int, default=8, help=f"images per caption (different noise vectors), 1 to {MAX_N}")
        p.add_argument("-o", "--output", type=Path, default=Path(output), help="PNG grid to write")
        p.add_argument("--seed", type=int, default=0, help="noise seed: same seed, same images")
        p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))

    g = sub.add_parser("generate", help="draw images for one caption")
    g.add_argument("caption")
    common(g, "grid.png")
    g.set_defaults(fn=cmd_generate)
    p = sub.add_parser("probe", help="generate for captions in a CSV and check their attributes")
    p.add_argument("csv", type=Path, help="columns: caption, and any of petal_color, center_color, stem_color, petal_count")
    common(p, "probe.png")
    p.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    p.add_argument("--embeddings", type=Path, default=Path("data/embeddings"))
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(fn=cmd_probe, n=4)
    sub.add_parser("serve", help="a page and a JSON/PNG API on 127.0.0.1 (t2i serve -h)")  # parsed in t2i.serve
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:  # its options live with the app: t2i/serve/__init__.py
        from t2i.serve import main as serve

        return serve(argv[1:])
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    # User errors (bad arguments, input files, model files, a full disk) are one line; --debug
    # or T2I_DEBUG=1 adds the traceback (t2i.errors.run_main).
    return run_main(lambda _: args.fn(args), f"t2i {args.command}", argv, outputs=str(args.output))


if __name__ == "__main__":
    sys.exit(main())
