"""params.yaml validation: bad values stop a stage before it works, naming the key."""

from pathlib import Path

import pytest
import yaml

from t2i.config import (SECTIONS, EmbedParams, LossParams, ModelParams, ParamsError, TrainParams, load_all, load_section,
                        updated)

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_repo_params_validate() -> None:
    sections = load_all(REPO / "params.yaml")
    assert set(sections) == set(SECTIONS)
    assert isinstance(sections["embed"], EmbedParams)


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_config_files_validate_and_name_every_key(path: Path) -> None:
    """A configs/ file is copied over params.yaml: it must validate and spell out every key that
    params.yaml has, so dvc.yaml's tracked params all exist."""
    sections = load_all(path)
    assert set(sections) == set(SECTIONS)
    mine = yaml.safe_load(path.read_text(encoding="utf-8"))
    default = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    for name in SECTIONS:
        assert dotted_keys(mine[name]) == dotted_keys(default[name]), f"{path.name}: {name}"


def dotted_keys(section: dict, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for k, v in section.items():
        out |= dotted_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}"}
    return out


def test_params_yaml_train_values_are_the_code_defaults() -> None:
    """The train defaults live in t2i/config.py; params.yaml spells out the same values."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    assert load_section("train", REPO / "params.yaml") == TrainParams()
    assert dotted_keys(raw["train"]) == dotted_keys(TrainParams().model_dump())


def test_oxford_gpu_config_is_real_data_on_cuda_scale() -> None:
    sections = load_all(REPO / "configs" / "oxford102-gpu.yaml")
    assert sections["ingest"].dataset == "oxford102" and sections["ingest"].resolution >= 128


def test_unknown_key_named_with_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, {"train": {"optim": {"lrg": 0.1}}})
    with pytest.raises(ParamsError) as info:
        load_section("train", path)
    message = str(info.value)
    assert "train.optim.lrg" in message and "did you mean 'lr_g'" in message


def test_a_group_key_at_the_section_level_names_its_group(tmp_path: Path) -> None:
    path = write(tmp_path, {"train": {"lr_g": 0.1, "contrastive_d": 0.5}})
    with pytest.raises(ParamsError) as info:
        load_section("train", path)
    assert "'train.optim.lr_g'" in str(info.value) and "'train.loss.contrastive_d'" in str(info.value)


def test_wrong_type_and_range_named(tmp_path: Path) -> None:
    path = write(tmp_path, {"train": {"steps": "many", "optim": {"lr_d": -1}}})
    with pytest.raises(ParamsError) as info:
        load_section("train", path)
    message = str(info.value)
    assert "'train.steps'" in message and "'train.optim.lr_d'" in message
    assert "greater than 0" in message


def test_unknown_encoder_lists_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, {"embed": {"encoder": "word2vec"}})
    with pytest.raises(ParamsError) as info:
        load_section("embed", path)
    assert "'embed.encoder'" in str(info.value) and "'bow'" in str(info.value)


def test_unknown_section_named(tmp_path: Path) -> None:
    path = write(tmp_path, {"trian": {}})
    with pytest.raises(ParamsError, match="unknown key 'trian'.*did you mean 'train'"):
        load_section("embed", path)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="not found"):
        load_section("ingest", tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed", encoding="utf-8")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_section("train", bad)


def test_attention_resolutions_checked(tmp_path: Path) -> None:
    path = write(tmp_path, {"train": {"model": {"attention": [16, 12]}}})
    with pytest.raises(ParamsError, match="train.model.attention"):
        load_section("train", path)
    assert ModelParams(attention=[16, 8, 8]).attention == [8, 16]


def test_near_miss_is_a_weight_not_a_switch(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("train:\n  loss:\n    near_miss: true\n")
    with pytest.raises(ParamsError, match="train.loss.near_miss.*weight"):
        load_section("train", tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("train:\n  loss:\n    near_miss: 0.5\n")
    assert load_section("train", tmp_path / "params.yaml").loss.near_miss == 0.5


def test_updated_merges_groups_key_by_key_and_validates() -> None:
    p = updated(TrainParams(), {"steps": 7, "loss": {"kind": "bce"}})
    assert p.steps == 7 and p.loss.kind == "bce" and p.loss.contrastive_d == LossParams().contrastive_d
    assert p.model == TrainParams().model
    with pytest.raises(ValueError, match="contrastive_d"):
        updated(TrainParams(), {"loss": {"contrastive_d": -1}})


def test_gan_config_is_built_from_train_model_by_keyword() -> None:
    """Every train.model key reaches the networks' config under its own name."""
    from types import SimpleNamespace

    from t2i.train.loop import model_config

    changed = dict(z_dim=5, g_width=64, g_min_width=8, d_width=24, attention=[4, 16], conditioning="affine",
                   d_conditioning="concat", text_norm="scale", whiten_eps=0.02, word_attention=[16],
                   d_word_match=True, word_match_resolution=16, token_pca=12, caption_code=False)
    assert set(changed) == set(ModelParams.model_fields)
    assert all(ModelParams().model_dump()[k] != v for k, v in changed.items())
    data = SimpleNamespace(resolution=64, text_dim=16, tokens=object(), token_dim=24)  # data with token states
    cfg = model_config(TrainParams(model=ModelParams(**changed)), data)  # type: ignore[arg-type]
    got = {k: getattr(cfg, k) for k in changed}
    assert got == {**changed, "attention": (4, 16), "word_attention": (16,)}
    assert (cfg.resolution, cfg.text_dim, cfg.token_dim) == (64, 16, 24)
    # Without token states (a sentence-only encoder) the word modules are off, whatever train.model says.
    off = model_config(TrainParams(model=ModelParams(**changed)), SimpleNamespace(resolution=64, text_dim=16, tokens=None))  # type: ignore[arg-type]
    assert (off.word_attention, off.d_word_match, off.token_pca) == ((), False, 0)


def test_dvc_yaml_params_match_config() -> None:
    """Every dotted key dvc.yaml tracks exists in params.yaml, so DVC and t2i agree."""
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    for stage, spec in dvc["stages"].items():
        for key in spec.get("params", []):
            section, _, field = key.partition(".")
            assert section in params, f"{stage}: {key}"
            if field:
                assert field in SECTIONS[section].model_fields, f"{stage}: {key}"
                assert field in params[section], f"{stage}: {key} missing from params.yaml"


# Keys that change how fast a stage runs, not what it writes: dvc.yaml leaves them untracked
# (train's live in their own section, train_runtime, which no stage tracks).
SPEED_ONLY = {
    "ingest": {"workers"},
    "embed": {"batch_size", "chunk_size", "device", "threads"},
    "matcher": {"device", "threads"},
    "train": set(),
    "evaluate": {"device"},
}


def test_every_result_changing_param_is_tracked_by_its_stage() -> None:
    """A new key that changes a stage's output but is missing from dvc.yaml would let `dvc repro`
    skip the stage after the key changes. A stage that lists its section name tracks all of it."""
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))
    for stage, speed_only in SPEED_ONLY.items():
        listed = dvc["stages"][stage].get("params", [])
        whole = stage in listed
        tracked = set(SECTIONS[stage].model_fields) if whole else {
            k.partition(".")[2] for k in listed if k.startswith(f"{stage}.")}
        assert not (whole and speed_only), f"dvc.yaml stage {stage!r} tracks its speed-only keys {sorted(speed_only)}"
        untracked = set(SECTIONS[stage].model_fields) - tracked - speed_only
        assert not untracked, f"dvc.yaml stage {stage!r} does not track {sorted(untracked)}"


def test_train_runtime_is_tracked_by_no_stage() -> None:
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))
    for stage, spec in dvc["stages"].items():
        assert not [k for k in spec.get("params", []) if k.split(".")[0] == "train_runtime"], stage
