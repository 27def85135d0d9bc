"""params.yaml validation: bad values stop a stage before it works, naming the key."""

from pathlib import Path

import pytest
import yaml

from t2i.config import SECTIONS, EmbedParams, ParamsError, TrainParams, load_all, load_section

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
        assert set(mine[name]) == set(default[name]), f"{path.name}: {name}"


def test_oxford_gpu_config_is_real_data_on_cuda_scale() -> None:
    sections = load_all(REPO / "configs" / "oxford102-gpu.yaml")
    assert sections["ingest"].dataset == "oxford102" and sections["ingest"].resolution >= 128


def test_unknown_key_named_with_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, {"train": {"lrg": 0.1}})
    with pytest.raises(ParamsError) as info:
        load_section("train", path)
    message = str(info.value)
    assert "train.lrg" in message and "lr_g" in message


def test_wrong_type_and_range_named(tmp_path: Path) -> None:
    path = write(tmp_path, {"train": {"steps": "many", "lr_d": -1}})
    with pytest.raises(ParamsError) as info:
        load_section("train", path)
    message = str(info.value)
    assert "'train.steps'" in message and "'train.lr_d'" in message
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
    path = write(tmp_path, {"train": {"attention": [16, 12]}})
    with pytest.raises(ParamsError, match="train.attention"):
        load_section("train", path)
    assert TrainParams(attention=[16, 8, 8]).attention == [8, 16]


def test_near_miss_switch_from_old_configs_is_refused(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("train:\n  near_miss: true\n")
    with pytest.raises(ParamsError, match="train.near_miss.*weight"):
        load_section("train", tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("train:\n  near_miss: 0.5\n")
    assert load_section("train", tmp_path / "params.yaml").near_miss == 0.5


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


# Keys that change how fast a stage runs, not what it writes: dvc.yaml leaves them untracked.
SPEED_ONLY = {
    "ingest": {"workers"},
    "embed": {"batch_size", "chunk_size", "device", "threads"},
    "matcher": {"device", "threads"},
    "train": {"device", "threads"},
    "evaluate": {"device"},
}


def test_every_result_changing_param_is_tracked_by_its_stage() -> None:
    """A new key that changes a stage's output but is missing from dvc.yaml would let `dvc repro`
    skip the stage after the key changes (train.whiten_eps nearly did)."""
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))
    for stage, speed_only in SPEED_ONLY.items():
        tracked = {k.partition(".")[2] for k in dvc["stages"][stage].get("params", []) if k.startswith(f"{stage}.")}
        untracked = set(SECTIONS[stage].model_fields) - tracked - speed_only
        assert not untracked, f"dvc.yaml stage {stage!r} does not track {sorted(untracked)}"
