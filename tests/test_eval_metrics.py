"""Each metric on sources whose answer is known: it must separate good from bad, i.e. it can fail."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eval_fixtures import PARAMS, bag_of_words, dataset, noise, one_image_per_caption, oracle, role_vectors
from t2i.data.grammar import frame_text
from t2i.data.probe import load_probe
from t2i.eval.context import SCORED_SPLITS, EvalContext
from t2i.eval.registry import run_metrics


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    torch.set_num_threads(1)  # a shared CPU: one thread is the steady speed
    table, images = dataset()
    return table, images, role_vectors(table["caption"].tolist())


@pytest.fixture(scope="module")
def judged(data: tuple, tmp_path_factory: pytest.TempPathFactory):
    """A context whose judges are trained once; others borrow them with another source."""
    import os

    os.environ["T2I_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    table, images, vectors = data
    ctx = EvalContext(table, images, vectors, oracle, PARAMS, torch.device("cpu"), data_key="test",
                      extra_splits={"probe": load_probe()})
    ctx.classifier(), ctx.encoder()
    return ctx


def with_source(ctx: EvalContext, source) -> EvalContext:
    other = EvalContext(ctx.table, ctx.images, ctx.text_vectors, source, ctx.params, ctx.device,
                        extra_splits=ctx.extra_splits)
    other._classifier, other._encoder = ctx._classifier, ctx._encoder
    return other


def values(ctx: EvalContext, name: str) -> dict[str, float]:
    (result,) = run_metrics(ctx, [name])
    assert not result.skipped, result.note
    assert result.samples and all(n > 0 for n in result.samples.values())
    return result.values


def test_judge_reads_real_test_images(judged: EvalContext) -> None:
    # The swap roles must be readable even by this quickly trained judge (300 steps, 1,200
    # images); the stage's judge (600 steps, 4,000 images) also reads the centre colour.
    v = values(judged, "attribute_accuracy")
    for a in ("petal_color", "stem_color"):
        assert v[f"judge/{a}"] >= 0.95, v


def test_attribute_accuracy_oracle_high_noise_chance(judged: EvalContext) -> None:
    good = values(judged, "attribute_accuracy")
    bad = values(with_source(judged, noise), "attribute_accuracy")
    for split in SCORED_SPLITS:  # test, unseen, novel_wording, probe
        assert good[f"{split}/attr_all"] >= 0.85, (split, good)
        # 10 colours: chance is ~0.1 per colour, and all-correct needs two or more of them.
        assert bad[f"{split}/petal_color"] <= 0.3 and bad[f"{split}/stem_color"] <= 0.3, (split, bad)
        assert bad[f"{split}/attr_all"] <= 0.1, (split, bad)
    assert len(judged.rows("probe")) >= 60 and (judged.rows("probe")["split"] == "probe").all()


def test_caption_kinds_split_attr_all_by_sentence_form(judged: EvalContext) -> None:
    (good,) = run_metrics(judged, ["attribute_accuracy"])
    (bad,) = run_metrics(with_source(judged, noise), ["attribute_accuracy"])
    for split in SCORED_SPLITS:
        kinds, noisy = good.extra["per_caption_kind"][split], bad.extra["per_caption_kind"][split]
        # This quick judge trusts petal and stem only, so every caption falls in one kind here;
        # kinds apart are the unit test below.
        assert list(kinds) == ["petal_color+stem_color"], kinds
        # Every scored caption is in exactly one kind, and the kinds average back to attr_all.
        n = sum(k["captions"] for k in kinds.values())
        assert n == good.samples[f"{split} captions"]
        mean = sum(k["captions"] * k["attr_all"] for k in kinds.values()) / n
        assert mean == pytest.approx(good.values[f"{split}/attr_all"])
        assert all(k["attr_all"] >= 0.8 for k in kinds.values()), kinds
        assert all(k["attr_all"] <= 0.15 for k in noisy.values()), noisy
        templates = good.extra["per_template"][split]  # the sentence frames, named by their text
        if split == "probe":  # hand-written: no frame
            assert templates == {}
            continue
        frames = sorted(set(judged.rows(split)["template"]))
        assert list(templates) == [f"{t}: {frame_text(t)}" for t in frames], templates
        assert sum(t["captions"] for t in templates.values()) == n
        assert sum(t["captions"] * t["attr_all"] for t in templates.values()) / n == pytest.approx(mean)


def test_novel_wording_broken_down_by_novelty(judged: EvalContext) -> None:
    (good,) = run_metrics(judged, ["attribute_accuracy"])
    (bad,) = run_metrics(with_source(judged, noise), ["attribute_accuracy"])
    rows = judged.rows("novel_wording")
    groups = good.extra["per_novelty"]["novel_wording"]
    assert set(groups) == set(rows["novelty"]) and set(groups) <= {"frame", "words", "frame+words"}, groups
    assert {k: g["captions"] for k, g in groups.items()} == rows["novelty"].value_counts().to_dict()
    n = good.samples["novel_wording captions"]
    mean = sum(g["captions"] * g["attr_all"] for g in groups.values()) / n
    assert mean == pytest.approx(good.values["novel_wording/attr_all"])
    for kind, g in groups.items():  # in the metrics too, named without "+" (MLflow metric names)
        assert good.values[f"novel_wording/novelty/{kind.replace('+', '_')}/attr_all"] == g["attr_all"] >= 0.8
        assert bad.values[f"novel_wording/novelty/{kind.replace('+', '_')}/attr_all"] <= 0.15
    assert list(good.extra["per_novelty"]) == ["novel_wording"]
    from mlflow.utils.validation import _validate_metric_name

    for key in good.values:  # what log_to_mlflow sends: MLflow refuses "+" and other characters
        _validate_metric_name(f"eval/{key}")


def test_probe_scores_only_the_attributes_each_caption_states() -> None:
    from t2i.eval.metrics.attribute_accuracy import score

    rows = load_probe()
    said = [set(m.split(",")) - {""} for m in rows["mentions"]]
    assert any("center_color" in m for m in said) and any("center_color" not in m for m in said)
    attrs = ["petal_color", "stem_color", "center_color"]
    # Right on every stated attribute, wrong on every unstated one: a perfect score.
    predicted = {a: np.array([str(v) if a in m else "wrong" for v, m in zip(rows[a], said)], dtype=object)
                 for a in attrs}
    values, counts = score(predicted, rows, attrs)
    assert values == {"petal_color": 1.0, "stem_color": 1.0, "center_color": 1.0, "attr_all": 1.0}
    assert counts["center_color"] == sum("center_color" in m for m in said) < counts["attr_all"] == len(rows)
    # Wrong on a stated centre: only the captions that state one lose.
    predicted["center_color"] = np.array(["wrong"] * len(rows), dtype=object)
    values, _ = score(predicted, rows, attrs)
    assert values["center_color"] == 0.0
    assert values["attr_all"] == pytest.approx(1 - counts["center_color"] / len(rows))


def test_by_caption_kind_counts_only_what_each_caption_states() -> None:
    import pandas as pd

    from t2i.eval.metrics.attribute_accuracy import by_caption_kind, by_template

    rows = pd.DataFrame({
        "mentions": ["petal_color,stem_color", "petal_color,stem_color", "petal_color,center_color,stem_color",
                     "petal_color,stem_color,petal_count"],
        "petal_color": ["red", "blue", "red", "green"], "stem_color": ["green", "red", "blue", "red"],
        "center_color": ["white", "white", "yellow", "blue"], "petal_count": [3, 5, 8, 3]})
    predicted = {"petal_color": np.array(["red", "blue", "red", "green"]),
                 "stem_color": np.array(["green", "blue", "blue", "red"]),  # row 1 wrong
                 "center_color": np.array(["red", "red", "white", "red"]),  # wrong where stated (row 2)
                 "petal_count": np.array(["5", "5", "8", "5"])}             # untrusted: not scored
    kinds = by_caption_kind(predicted, rows, ["petal_color", "stem_color", "center_color"])
    assert kinds == {"petal_color+stem_color": {"captions": 3, "attr_all": pytest.approx(2 / 3)},
                     "center_color+petal_color+stem_color": {"captions": 1, "attr_all": 0.0}}
    assert by_template(predicted, rows, ["petal_color", "stem_color"]) == {}  # no template column
    rows["template"] = [0, 8, 8, 0]
    templates = by_template(predicted, rows, ["petal_color", "stem_color", "center_color"])
    assert {k.split(":")[0]: v for k, v in templates.items()} == {
        "0": {"captions": 2, "attr_all": 1.0}, "8": {"captions": 2, "attr_all": 0.0}}
    assert "8: the petals are {petal}, the center is {center} and the stem is {stem}" in templates


def test_swap_accuracy_oracle_vs_bag_of_words(judged: EvalContext) -> None:
    good = values(judged, "swap_accuracy")
    bow = values(with_source(judged, bag_of_words), "swap_accuracy")
    for split in SCORED_SPLITS:
        assert good[f"{split}/swap"] >= 0.85, (split, good)
        # Same colours, roles at random: both images right ~ 1/2 * 1/2 = 0.25.
        assert bow[f"{split}/swap"] <= 0.35, (split, bow)
    assert bow["test/swap_single"] >= 0.35, bow  # it still gets single images half right
    kinds = set(judged.rows("novel_wording")["novelty"])
    for kind in kinds:  # per novelty too (the pairs of the first rows: a rare kind may have none)
        key = f"novel_wording/novelty/{kind.replace('+', '_')}/swap"
        assert key not in good or good[key] >= 0.8, good
    assert "novel_wording/novelty/frame/swap" in good


def test_swap_pairs_come_from_the_swap_caption_column() -> None:
    import pandas as pd

    from t2i.eval.sampling import swap_pairs

    rows = pd.DataFrame({
        "caption": ["Red petals. Blue stem.", "a red flower", "all white", "no swap given"],
        "swap_caption": ["Blue petals. Red stem.", "a green flower", "all white", None],
        "petal_color": ["red", "red", "white", "red"], "stem_color": ["blue", "green", "white", "blue"],
        "novelty": ["probe", "", "", ""]})
    pairs = swap_pairs(rows, limit=10)
    # Taken as written (no template re-rendering); same-colour and missing swaps are left out.
    assert pairs.to_dict("records") == [
        {"caption_a": "Red petals. Blue stem.", "caption_b": "Blue petals. Red stem.", "a_petal": "red",
         "a_stem": "blue", "novelty": "probe"},
        {"caption_a": "a red flower", "caption_b": "a green flower", "a_petal": "red", "a_stem": "green",
         "novelty": ""}]
    assert len(swap_pairs(rows, limit=1)) == 1
    assert swap_pairs(rows.drop(columns="swap_caption"), limit=10).empty


def test_diversity_zero_for_noise_ignoring_one_for_real_variety(judged: EvalContext) -> None:
    same = values(with_source(judged, one_image_per_caption), "diversity")["diversity"]
    varied = values(judged, "diversity")["diversity"]
    assert same == pytest.approx(0.0, abs=1e-6)
    assert 0.7 <= varied <= 1.3, varied


def test_r_precision_real_beats_noise(judged: EvalContext) -> None:
    good = values(judged, "r_precision")
    bad = values(with_source(judged, noise), "r_precision")
    assert good["r_precision_real"] >= 0.3, good
    assert good["r_precision"] >= 0.3, good
    assert bad["r_precision"] <= 0.1 and bad["r_precision"] < good["r_precision"] / 3, (good, bad)


def test_fid_domain_oracle_near_floor_noise_far(judged: EvalContext) -> None:
    good = values(judged, "fid_domain")
    bad = values(with_source(judged, noise), "fid_domain")
    floor = good["fid_domain_floor"]
    # Measured on this data: oracle ~0.9x the floor (real train vs real test), noise ~10x. Against
    # the floor, not a ratio to the oracle's own (small, noisy) figure: a metric that ignored the
    # generated images would put both near the floor, one that returned 0 would fail the noise bound.
    assert 0 < floor and good["fid_domain"] < 2 * floor, good
    assert bad["fid_domain"] > 5 * floor and bad["fid_domain"] > 5 * good["fid_domain"], (good, bad)


def test_inception_metrics_skip_without_weights(judged: EvalContext) -> None:
    for result in run_metrics(judged, ["fid", "inception_score"]):
        assert result.skipped and "inception_weights" in (result.note or "")
        assert not result.values


def test_frechet_distance_identity_and_shift() -> None:
    from t2i.eval.metrics.fid_domain import frechet_distance

    x = np.random.default_rng(0).standard_normal((500, 8))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(x, x + 2.0) == pytest.approx(8 * 4.0, rel=1e-6)


def test_split_table_lists_every_scored_split_and_each_novelty() -> None:
    from t2i.eval.registry import MetricResult
    from t2i.eval.report import split_table

    attr = MetricResult("attribute_accuracy", values={
        "test/attr_all": 0.9, "unseen/attr_all": 0.8, "novel_wording/attr_all": 0.7, "probe/attr_all": 0.6,
        "novel_wording/novelty/frame/attr_all": 0.75, "novel_wording/novelty/words/attr_all": 0.2},
        samples={"test captions": 10, "probe captions": 66, "novel_wording captions": 20})
    swap = MetricResult("swap_accuracy", values={"test/swap": 0.85, "probe/swap": 0.5,
                                                 "novel_wording/novelty/frame/swap": 0.65},
                        samples={"probe pairs": 60})
    table = split_table([attr, swap, MetricResult.skip("fid", "no weights")])
    assert table["split"].tolist() == ["test", "unseen", "novel_wording", "probe", "novel_wording: frame",
                                       "novel_wording: words"]
    got = table.set_index("split")
    assert got.loc["probe", "attr_all"] == 0.6 and got.loc["probe", "swap"] == 0.5 and got.loc["probe", "pairs"] == 60
    assert got.loc["novel_wording: frame", "swap"] == 0.65 and np.isnan(got.loc["unseen", "swap"])
    assert split_table([MetricResult.skip("attribute_accuracy", "real data")]) is None
