"""Each metric on sources whose answer is known: it must separate good from bad, i.e. it can fail."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eval_fixtures import PARAMS, bag_of_words, dataset, noise, one_image_per_caption, oracle, role_vectors
from t2i.eval.context import EvalContext
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
    ctx = EvalContext(table, images, vectors, oracle, PARAMS, torch.device("cpu"), data_key="test")
    ctx.classifier(), ctx.encoder()
    return ctx


def with_source(ctx: EvalContext, source) -> EvalContext:
    other = EvalContext(ctx.table, ctx.images, ctx.text_vectors, source, ctx.params, ctx.device)
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
    assert good["test/attr_all"] >= 0.85 and good["unseen/attr_all"] >= 0.85, good
    # 10 colours: chance is ~0.1 per colour, and all-correct needs two or more of them.
    assert bad["test/petal_color"] <= 0.3 and bad["test/stem_color"] <= 0.3, bad
    assert bad["test/attr_all"] <= 0.1, bad


def test_caption_kinds_split_attr_all_by_sentence_form(judged: EvalContext) -> None:
    (good,) = run_metrics(judged, ["attribute_accuracy"])
    (bad,) = run_metrics(with_source(judged, noise), ["attribute_accuracy"])
    for split in ("test", "unseen"):
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
        templates = good.extra["per_template"][split]  # the 12 sentence forms, named by their text
        assert len(templates) == 12 and "0: a {petal} flower with a {stem} stem" in templates, templates
        assert sum(t["captions"] for t in templates.values()) == n
        assert sum(t["captions"] * t["attr_all"] for t in templates.values()) / n == pytest.approx(mean)


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
    assert good["test/swap"] >= 0.85 and good["unseen/swap"] >= 0.85, good
    # Same colours, roles at random: both images right ~ 1/2 * 1/2 = 0.25.
    assert bow["test/swap"] <= 0.35 and bow["unseen/swap"] <= 0.35, bow
    assert bow["test/swap_single"] >= 0.35, bow  # it still gets single images half right


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
    assert good["fid_domain"] < 3 * good["fid_domain_floor"] + 1e-6, good
    assert bad["fid_domain"] > 10 * good["fid_domain"], (good, bad)


def test_inception_metrics_skip_without_weights(judged: EvalContext) -> None:
    for result in run_metrics(judged, ["fid", "inception_score"]):
        assert result.skipped and "inception_weights" in (result.note or "")
        assert not result.values


def test_frechet_distance_identity_and_shift() -> None:
    from t2i.eval.metrics.fid_domain import frechet_distance

    x = np.random.default_rng(0).standard_normal((500, 8))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(x, x + 2.0) == pytest.approx(8 * 4.0, rel=1e-6)
