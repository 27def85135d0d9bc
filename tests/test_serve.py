"""`t2i serve`'s API through FastAPI's test client, on a tiny randomly initialised generator."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from t2i.data.flowers import COLORS
from t2i.models import GANConfig, Generator, save_generator
from t2i.pipeline import GenerationPipeline
from t2i.serve import main as serve_main
from t2i.serve.app import create_app
from t2i.serve.captions import swapped_caption
from t2i.serve.judge import JUDGE_DIR, find_judge, load_judge


def save_tiny(directory: Path) -> Path:
    torch.manual_seed(0)
    config = GANConfig(resolution=32, text_dim=512, z_dim=8, g_width=32, attention=())
    encoder = {"name": "use", "dim": 512, "version": None, "handle": None}
    save_generator(directory, Generator(config), {"model": config.to_dict(), "encoder": encoder, "step": 7})
    return directory


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def client(model: Path) -> TestClient:
    return TestClient(create_app(str(model), device="cpu", judge="none"))


def _png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_generate_json_is_repeatable_and_caption_major(client: TestClient) -> None:
    body = {"captions": ["a red flower with a yellow stem", "a blue flower with a green stem"], "n": 2, "seed": 3}
    a = client.post("/generate", json=body)
    assert a.status_code == 200, a.text
    out = a.json()
    assert [i["caption"] for i in out["images"]] == [body["captions"][0]] * 2 + [body["captions"][1]] * 2
    assert [i["index"] for i in out["images"]] == [0, 1, 0, 1]
    assert _png(out["images"][0]["png"]).shape == (32, 32, 3)
    assert out["swapped"][body["captions"][0]] == "a yellow flower with a red stem"
    b = client.post("/generate", json=body).json()
    assert [i["png"] for i in a.json()["images"]] == [i["png"] for i in b["images"]]
    c = client.post("/generate", json={**body, "seed": 4}).json()
    assert c["images"][0]["png"] != out["images"][0]["png"]
    assert "judge" not in out["images"][0]


def test_png_grid_and_info(client: TestClient) -> None:
    r = client.get("/generate.png", params={"caption": "a red flower", "n": 3, "seed": 1})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    grid = Image.open(io.BytesIO(r.content))
    assert grid.size[0] > 3 * 64  # caption strip + three upscaled samples
    info = client.get("/info").json()
    assert info["resolution"] == 32 and info["encoder"] == "use" and info["step"] == 7 and info["judge"] is False
    assert client.get("/").headers["content-type"].startswith("text/html")
    assert "/generate" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("body, status, words", [
    ({"caption": "   "}, 422, "caption is empty"),
    ({"captions": []}, 422, "'captions' is empty"),
    ({"caption": "a red flower", "captions": ["x"]}, 422, "exactly one"),
    ({"caption": "a red flower", "n": 0}, 422, "greater than or equal to 1"),
    ({"caption": "a red flower", "n": 65}, 422, "between 1 and 64"),
    ({"captions": ["a red flower"] * 9, "n": 30}, 422, "at most 256"),
    ({"caption": "a red flower", "seed": -1}, 422, "greater than or equal to 0"),
    ({"caption": 5}, 422, "valid string"),
])
def test_bad_requests_are_4xx_with_a_message(client: TestClient, body: dict, status: int, words: str) -> None:
    r = client.post("/generate", json=body)
    assert r.status_code == status, r.text
    assert words in r.text


def test_bad_png_requests_and_swap(client: TestClient) -> None:
    assert client.get("/generate.png", params={"caption": " ", "n": 2}).status_code == 422
    assert client.get("/generate.png", params={"caption": "a red flower", "n": 1000}).status_code == 422
    assert client.get("/swap", params={"caption": "a red flower"}).json()["swapped"] is None
    assert client.get("/swap", params={"caption": "an orange bloom on a blue stalk"}).json()["swapped"] == \
        "a blue bloom on an orange stalk"


def test_swapped_caption_uses_templates_then_colour_words() -> None:
    assert swapped_caption("the stem is green and the petals are orange") == \
        "the stem is orange and the petals are green"
    assert swapped_caption("a red flower with a yellow stem") == "a yellow flower with a red stem"
    assert swapped_caption("Red petals, yellow leaves") == "yellow petals, Red leaves"
    assert swapped_caption("red and red") is None


def test_unknown_model_fails_at_start_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert serve_main(["--model", str(tmp_path / "nothing"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "no trained model" in err and "nothing" in err


@pytest.fixture(scope="module")
def judge_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/ and eval/judge/ side by side, as `dvc repro` leaves a project (judge: 10 steps,
    mechanics, not accuracy)."""
    from t2i.config import IngestParams
    from t2i.data import synthetic
    from t2i.eval.classifier import save_classifier, train_classifier
    from t2i.models.fit import FitSettings

    root = tmp_path_factory.mktemp("project")
    save_tiny(root / "models")
    ds = synthetic.read(IngestParams(num_images=120, workers=1))
    clf = train_classifier(ds.table, ds.images, FitSettings(steps=10, seed=0), torch.device("cpu"))
    save_classifier(clf, root / JUDGE_DIR)
    return root


def test_judge_reads_each_image(judge_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(judge_project.parent)  # found beside models/, not through the working directory
    client = TestClient(create_app(str(judge_project / "models"), device="cpu", judge="auto"))
    assert client.get("/info").json()["judge"] is True
    out = client.post("/generate", json={"caption": "a red flower with a yellow stem", "n": 2}).json()
    judge = out["images"][0]["judge"]
    assert set(judge["reads"]) >= {"petal_color", "stem_color"}
    assert judge["stated"] == {"petal_color": "red", "stem_color": "yellow"}
    assert set(judge["matches"]) == {"petal_color", "stem_color"}
    assert all(judge["reads"][a] in COLORS for a in ("petal_color", "stem_color"))


def test_judge_auto_finds_nothing_without_an_evaluation(model: Path) -> None:
    assert find_judge(model) is None  # the module's bare models dir has no eval/judge beside it
    assert load_judge("auto", torch.device("cpu"), model) is None
    assert load_judge("none", torch.device("cpu"), model) is None


def test_saved_judge_round_trips_and_bad_paths_are_named(judge_project: Path, tmp_path: Path) -> None:
    from t2i.eval.classifier import JUDGE_META, JUDGE_WEIGHTS, load_classifier

    judge_dir = judge_project / JUDGE_DIR
    assert find_judge(judge_project / "models") == judge_dir.resolve()
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    a = load_classifier(judge_dir, torch.device("cpu")).predict(images)
    b = load_judge(str(judge_dir / JUDGE_WEIGHTS), torch.device("cpu")).classifier.predict(images)  # type: ignore[union-attr]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(FileNotFoundError, match=JUDGE_WEIGHTS):
        load_judge(str(tmp_path), torch.device("cpu"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / JUDGE_WEIGHTS).write_bytes((judge_dir / JUDGE_WEIGHTS).read_bytes())
    (bad / JUDGE_META).write_text('{"classes": {"petal_color": ["red"]}}', encoding="utf-8")
    with pytest.raises(ValueError, match="does not fit the classes"):
        load_classifier(bad, torch.device("cpu"))
    (bad / JUDGE_META).write_text('{"classes": {"wings": ["two"]}}', encoding="utf-8")
    with pytest.raises(ValueError, match="does not describe an attribute classifier"):
        load_classifier(bad, torch.device("cpu"))
