"""attribute_accuracy: does the generated image show the attributes its caption states?

A caption is scored only on the attributes it mentions ("a red flower with a yellow stem" says
nothing about the centre). First the judge itself is checked on real test images it never
trained on: if it cannot read real images, its verdict on generated ones means nothing.

Splits: test, unseen, novel_wording (with a breakdown by its ``novelty``: a new sentence frame,
new words, or both) and the hand-written probe set (scored on what each caption states).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from t2i.eval.classifier import AttributeClassifier, image_labels, mentions
from t2i.eval.context import SCORED_SPLITS, EvalContext
from t2i.eval.registry import MetricResult, register
from t2i.eval.sampling import novelty_key

SPLITS = SCORED_SPLITS
JUDGE_MIN = 0.95  # below this on real test images the judge is not trusted


def all_correct(predicted: dict[str, np.ndarray], rows: pd.DataFrame, attrs: list[str]) -> np.ndarray:
    """(n,) bool: every attribute of ``attrs`` that the row's caption states is read as stated."""
    said = mentions(rows)
    ok = np.ones(len(rows), bool)
    for a in attrs:
        asks = np.array([a in m for m in said], bool)
        ok &= (predicted[a] == rows[a].astype(str).to_numpy()) | ~asks
    return ok


def score(predicted: dict[str, np.ndarray], rows: pd.DataFrame, attrs: list[str]) -> tuple[dict[str, float], dict[str, int]]:
    """Per-attribute accuracy over the rows that mention it, and all-mentioned-correct per row."""
    said = mentions(rows)
    values: dict[str, float] = {}
    counts: dict[str, int] = {}
    all_ok = all_correct(predicted, rows, attrs)
    scored = np.zeros(len(rows), bool)
    for a in attrs:
        asks = np.array([a in m for m in said], bool)
        right = predicted[a] == rows[a].astype(str).to_numpy()
        scored |= asks
        if asks.any():
            values[a] = float(right[asks].mean())
            counts[a] = int(asks.sum())
    values["attr_all"] = float(all_ok[scored].mean()) if scored.any() else float("nan")
    counts["attr_all"] = int(scored.sum())
    return values, counts


def _grouped(ok: np.ndarray, groups: np.ndarray, order: list[str] | None = None) -> dict[str, dict[str, float]]:
    """{group: {captions, attr_all}} over the rows whose group is not empty, in ``order``
    (default: sorted)."""
    return {str(g): {"captions": int((groups == g).sum()), "attr_all": float(ok[groups == g].mean())}
            for g in (order or sorted(set(groups.tolist()))) if g}


def by_caption_kind(predicted: dict[str, np.ndarray], rows: pd.DataFrame, attrs: list[str]) -> dict[str, dict[str, float]]:
    """attr_all per caption kind: the set of scored attributes a caption states.

    Kinds are named like ``center_color+petal_color+stem_color``. A mean over every caption hides
    which sentence forms fail: on the synthetic set, captions that also name the centre are a
    quarter of the rows and carry most of the errors.
    """
    kinds = np.array(["+".join(sorted(m & set(attrs))) for m in mentions(rows)], dtype=object)
    return _grouped(all_correct(predicted, rows, attrs), kinds)


def by_template(predicted: dict[str, np.ndarray], rows: pd.DataFrame, attrs: list[str]) -> dict[str, dict[str, float]]:
    """attr_all per sentence frame (synthetic data: the ``template`` column), named by its text
    (``grammar.frame_text``): the same attributes in another sentence form can fail alone
    ("the petals are {petal}, ..."). Rows without a frame (template < 0: the probe set) are left out."""
    if "template" not in rows.columns or not attrs:
        return {}
    from t2i.data.grammar import FRAMES, frame_text

    def name(t: int) -> str:
        return f"{t}: {frame_text(t)}" if t < len(FRAMES) else str(t)

    ids = rows["template"].astype(int).to_numpy()
    framed = ids >= 0
    if not framed.any():
        return {}
    names = np.array([name(t) if t >= 0 else "" for t in ids], dtype=object)
    ok = all_correct(predicted, rows, attrs)
    return _grouped(ok[framed], names[framed], [name(t) for t in sorted(set(ids[framed].tolist()))])


def by_novelty(predicted: dict[str, np.ndarray], rows: pd.DataFrame, attrs: list[str]) -> dict[str, dict[str, float]]:
    """attr_all per ``novelty`` of novel_wording rows: "frame" (a sentence frame never trained on),
    "words" (a colour word or noun never trained on), "frame+words". Held-out words are far harder
    than held-out frames, so one mean over the split would hide which kind of novelty fails."""
    if "novelty" not in rows.columns:
        return {}
    kinds = rows["novelty"].fillna("").astype(str).to_numpy(dtype=object)
    return _grouped(all_correct(predicted, rows, attrs), kinds)


def judge_accuracy(clf: AttributeClassifier, ctx: EvalContext) -> tuple[dict[str, np.ndarray], int]:
    """The classifier on real held-out test images, every attribute (each image has them all)."""
    train = set(ctx.table.loc[ctx.table["split"] == "train", "image_index"])
    test = sorted(set(ctx.table.loc[ctx.table["split"] == "test", "image_index"]) - train)
    labels = image_labels(ctx.table, clf.attributes).loc[test]
    pred = clf.predict(ctx.images[test])
    return {a: pred[a] == labels[a].to_numpy() for a in clf.attributes}, len(test)  # (n,) bools


@register("attribute_accuracy")
def attribute_accuracy(ctx: EvalContext) -> MetricResult:
    name = "attribute_accuracy"
    if not ctx.has_attributes:
        return MetricResult.skip(name, "dataset has no ground-truth attributes (synthetic only)")
    clf = ctx.classifier()
    right, n_real = judge_accuracy(clf, ctx)
    judge = {a: float(r.mean()) for a, r in right.items()}
    # An attribute the judge cannot read on real images is void: shown in the per-attribute
    # table, kept out of the metrics and of attr_all (it would blame the generator for the judge).
    trusted = [a for a in clf.attributes if judge[a] >= JUDGE_MIN]
    judge["attr_all"] = float(np.logical_and.reduce([right[a] for a in trusted]).mean()) if trusted else float("nan")
    result = MetricResult(
        name=name,
        what="fraction of generated images whose attributes (only those the caption mentions) the "
             "classifier reads as the caption states; judge/* = classifier on real test images",
        values={f"judge/{k}": v for k, v in judge.items()},
        samples={"judge real test images": n_real},
    )
    void = {a: round(judge[a], 3) for a in clf.attributes if a not in trusted}
    table: dict[str, dict[str, float]] = {}
    groups: dict[str, dict[str, dict]] = {"per_caption_kind": {}, "per_template": {}, "per_novelty": {}}
    for split in SPLITS:
        rows = ctx.rows(split)
        if rows.empty:
            continue
        predicted = clf.predict(ctx.generated(split))
        values, counts = score(predicted, rows, trusted)
        result.values.update({f"{split}/{k}": v for k, v in values.items()})
        result.samples[f"{split} captions"] = counts["attr_all"]
        table[split] = {**score(predicted, rows, clf.attributes)[0], "attr_all": values["attr_all"]}
        groups["per_caption_kind"][split] = by_caption_kind(predicted, rows, trusted)
        groups["per_template"][split] = by_template(predicted, rows, trusted)
        if split == "novel_wording":
            novelty = by_novelty(predicted, rows, trusted)
            groups["per_novelty"][split] = novelty
            result.values.update({f"{split}/novelty/{novelty_key(k)}/attr_all": v["attr_all"]
                                  for k, v in novelty.items()})
    table["real_test"] = judge
    result.extra["per_attribute"] = table
    result.extra.update(groups)
    if void:
        result.note = (f"void: the judge reads {void} on real test images (< {JUDGE_MIN}); these "
                       "attributes are left out of the metrics and of attr_all")
    return result
