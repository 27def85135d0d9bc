"""The project's pages in a real headless Chromium (Debian's `chromium`, driven by Playwright's
Python client; nothing is downloaded): the `t2i serve` page, eval/report.html, the offline
`dvc plots show` page and the MLflow UI.

Every page is loaded with the network cut off except 127.0.0.1, so a page that needs a CDN
fails here. Without a browser the tests skip, except under CI=true, where they fail: CI must
install `chromium` (see .ci/run). ``T2I_UPDATE_SCREENSHOT=1`` also writes docs/img/serve.png
(from the project ``T2I_SCREENSHOT_PROJECT`` names, if any) and docs/img/report_charts.png.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
CAPTION = "a red flower with a yellow stem"
pytestmark = pytest.mark.slow


def _chromium() -> str | None:
    for candidate in (os.environ.get("T2I_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    exe = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if exe is None or sync_playwright is None:
        missing = "no Chromium (apt-get install chromium)" if exe is None else "no playwright (pip install -e .[dev])"
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests cannot run in CI: {missing}", pytrace=False)
        pytest.skip(missing)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _offline_page(browser: Any, height: int = 700) -> tuple[Any, list[str]]:
    """A page that may only reach 127.0.0.1 and local files; returns it and the blocked URLs."""
    blocked: list[str] = []
    page = browser.new_page(viewport={"width": 900, "height": height})

    def route(r: Any) -> None:
        url = r.request.url
        if url.startswith(("file:", "data:", "blob:", "http://127.0.0.1", "about:")):
            r.continue_()
        else:
            blocked.append(url)
            r.abort()

    page.route("**/*", route)
    return page, blocked


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(cmd: list[str], url: str, env: dict[str, str], cwd: Path, timeout: float = 45) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{cmd[:4]} exited: {proc.stdout.read().decode(errors='replace')[-3000:]}")  # type: ignore[union-attr]
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc
        except OSError:
            time.sleep(0.3)
    _stop(proc)
    raise AssertionError(f"{cmd[:4]} not answering {url} after {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)  # the group this test started (uvicorn / mlflow server children)
        proc.wait(timeout=30)


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PYTHONPATH": path, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "DVC_NO_ANALYTICS": "1", **extra}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny generator (random weights: the page's mechanics, not quality) and a judge trained
    for a few steps on a small synthetic set, saved at eval/judge/ beside models/ as the
    evaluate stage saves it (where `t2i serve --judge auto` looks)."""
    from t2i.config import IngestParams
    from t2i.data import synthetic
    from t2i.eval.classifier import save_classifier, train_classifier
    from t2i.models import GANConfig, Generator, save_generator
    from t2i.models.fit import FitSettings
    from t2i.serve.judge import JUDGE_DIR

    root = tmp_path_factory.mktemp("project")
    torch.manual_seed(0)
    config = GANConfig(resolution=32, text_dim=512, z_dim=8, g_width=32, attention=())
    encoder = {"name": "use", "dim": 512, "version": None, "handle": None}
    save_generator(root / "models", Generator(config), {"model": config.to_dict(), "encoder": encoder, "step": 40})
    ds = synthetic.read(IngestParams(num_images=120, workers=1))
    clf = train_classifier(ds.table, ds.images, FitSettings(steps=10, seed=0), torch.device("cpu"))
    save_classifier(clf, root / JUDGE_DIR)
    return root


def test_serve_page_generates_images(browser: Any, project: Path) -> None:
    # The screenshot wants a model trained a little: T2I_SCREENSHOT_PROJECT names a project dir
    # after `dvc repro` (models/ and eval/judge/ of a 32 px synthetic run).
    served = Path(os.environ.get("T2I_SCREENSHOT_PROJECT") or project)
    port = _free_port()
    cmd = [sys.executable, "-m", "t2i.cli", "serve", "--model", str(served / "models"), "--port", str(port),
           "--device", "cpu"]
    proc = _start(cmd, f"http://127.0.0.1:{port}/info", _env(), project)
    try:
        page, blocked = _offline_page(browser)
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("document.getElementById('model-info').textContent.includes('32 px')")
        page.fill("#caption", CAPTION)
        page.fill("#n", "3")
        page.click("#go")
        page.wait_for_function("document.querySelectorAll('#grid img').length === 3 && "
                               "[...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth === 32)")
        assert "judge reads" in page.inner_text("#grid figcaption")  # eval/judge/ beside models/ was found
        page.wait_for_selector("#swap-row:not([hidden])")
        assert page.inner_text("#swapped") == "a yellow flower with a red stem"
        if os.environ.get("T2I_UPDATE_SCREENSHOT") == "1":
            page.screenshot(path=str(REPO / "docs" / "img" / "serve.png"), type="png")
        first = page.get_attribute("#grid img", "src")
        page.click("#swap")  # one click: the swapped caption is generated
        page.wait_for_function(f"document.querySelector('#grid img').src !== {json.dumps(first)}")
        assert page.input_value("#caption") == "a yellow flower with a red stem"
        page.fill("#caption", "   ")
        page.click("#go")
        page.wait_for_function("document.getElementById('status').className === 'error'")
        assert "caption is empty" in page.inner_text("#status")
        assert blocked == []
        page.close()
    finally:
        _stop(proc)


def _write_eval(project: Path) -> Path:
    """eval/ as the evaluate stage writes it (its own writer), from small fixed results."""
    from t2i.eval.registry import MetricResult
    from t2i.eval.report import write_outputs
    from t2i.grids import caption_grid
    from t2i.pipeline import GenerationPipeline

    pipe = GenerationPipeline.from_pretrained(project / "models", device="cpu")
    grid = caption_grid(pipe.generate_array([CAPTION], n=3)[None], [CAPTION])  # (1, 3, R, R, 3)
    per_attr = {split: {"petal_color": 0.8 - d, "stem_color": 0.7 - d, "attr_all": 0.6 - d}
                for split, d in (("test", 0.0), ("unseen", 0.1), ("real_test", -0.2))}
    losses = project / "losses.csv"  # as the train stage writes plots/train/losses.csv
    losses.write_text("step,loss_d,loss_g\n" + "".join(f"{s},{1.5 - s / 400:.4f},{0.8 + s / 500:.4f}\n"
                                                        for s in range(0, 200, 10)), encoding="utf-8")
    results = [MetricResult("attribute_accuracy", {"test/attr_all": 0.6, "unseen/attr_all": 0.5},
                            {"test": 40}, "fraction of images with every stated attribute",
                            extra={"per_attribute": per_attr}),
               MetricResult("r_precision", {"r_precision": 0.3}, {"generated": 40}, "retrieval")]
    write_outputs(project / "eval", results, {"samples.png": grid}, {"model step": 40}, losses)
    return project / "eval"


def test_eval_report_shows_its_tables_and_images(browser: Any, project: Path) -> None:
    report = _write_eval(project) / "report.html"
    page, blocked = _offline_page(browser)
    page.goto(report.as_uri())
    assert page.locator("table tr").count() >= 3
    assert "test/attr_all = 0.6000" in page.inner_text("body")
    sizes = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.complete, i.naturalWidth])")
    assert sizes and all(ok and w > 64 for ok, w in sizes)
    # Two inline SVG charts, each drawn with data: bars of non-zero height, a loss curve of 20 points.
    charts = page.evaluate("""[...document.querySelectorAll('svg.chart')].map(s => {
        const b = s.getBoundingClientRect();
        return {w: b.width, marks: [...s.querySelectorAll('.mark')].map(m => {
            const r = m.getBBox(); return [m.dataset.series, +m.dataset.value, r.width, r.height]; })}; })""")
    assert len(charts) == 2 and all(c["w"] > 300 for c in charts), charts
    bars, lines = charts[0]["marks"], charts[1]["marks"]
    assert {b[0] for b in bars} == {"test", "unseen", "real_test"} and len(bars) == 9
    assert all(h > 10 for *_, h in bars)  # every value here is >= 0.4 of the axis
    assert [m[0] for m in lines] == ["loss_d", "loss_g"] and all(w > 200 for _, _, w, _ in lines)
    if os.environ.get("T2I_UPDATE_SCREENSHOT") == "1":
        page.locator("div.charts").screenshot(path=str(REPO / "docs" / "img" / "report_charts.png"))
    assert blocked == []
    page.close()


DVC_YAML_PLOTS = """plots:
  - plots/train/losses.csv:
      title: Training losses
      x: step
      y: [loss_d, loss_g]
  - attribute_accuracy:
      title: Attribute accuracy
      template: category_points
      x: attribute
      y:
        eval/plots/attribute_accuracy.csv: [test, unseen, real_test]
  - plots/train/samples:
      title: Sample grids by step
"""


def _chart_marks(page: Any) -> list[int]:
    """Per rendered Vega chart, its data marks: shapes under ``role-mark`` groups of an SVG, or
    painted pixels of a canvas (0 = an empty chart: axes at most)."""
    return page.evaluate("""() => [
        ...[...document.querySelectorAll('svg.marks')].map(
            s => s.querySelectorAll('g.role-mark path, g.role-mark rect, g.role-mark circle').length),
        ...[...document.querySelectorAll('canvas.marks')].map(c => {
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; })]""")


def test_dvc_plots_show_renders_offline(browser: Any, project: Path) -> None:
    from t2i.dvc_plots import DEFAULT_PATH, write_template
    from t2i.grids import png_bytes

    repo = project / "dvcrepo"
    eval_dir = _write_eval(project)
    (repo / "eval").mkdir(parents=True)
    shutil.copytree(eval_dir / "plots", repo / "eval" / "plots")
    (repo / "plots" / "train" / "samples").mkdir(parents=True)
    steps = np.arange(0, 200, 10)
    losses = np.column_stack([steps, 1.5 - steps / 400, 0.8 + steps / 500])
    np.savetxt(repo / "plots/train/losses.csv", losses, delimiter=",", header="step,loss_d,loss_g",
               comments="", fmt=["%d", "%.4f", "%.4f"])
    grid = Image.open(eval_dir / "samples.png")
    for step in (100, 200):
        (repo / "plots/train/samples" / f"{step}.png").write_bytes(png_bytes(grid))
    (repo / "dvc.yaml").write_text(DVC_YAML_PLOTS, encoding="utf-8")
    env = _env()
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=repo, env=env, check=True)
    shutil.copy(REPO / ".dvc" / "config", repo / ".dvc" / "config")  # the wiring under test
    shutil.copytree(REPO / ".dvc" / "plots", repo / ".dvc" / "plots")
    write_template(repo / DEFAULT_PATH)
    out = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "-o", "plots_html"], cwd=repo, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    index = repo / "plots_html" / "index.html"
    html = index.read_text(encoding="utf-8")
    assert "cdn.jsdelivr" not in html and "window.vegaEmbed" in html
    page, blocked = _offline_page(browser)
    page.goto(index.as_uri())
    page.wait_for_function("document.querySelectorAll('canvas.marks, svg.marks').length >= 2")
    marks = _chart_marks(page)
    assert len(marks) == 2 and all(n > 0 for n in marks), marks  # losses, attribute accuracy
    imgs = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete && i.naturalWidth > 0)")
    assert len(imgs) == 2 and all(imgs)  # the two sample grids, by step
    assert blocked == []
    page.close()


def test_mlflow_ui_shows_the_run_and_its_samples(browser: Any, project: Path) -> None:
    import mlflow

    from t2i.mlflow_model import experiment_view_tags, train_metric_key, ui_url

    uri = f"sqlite:///{project / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp_id = client.create_experiment("t2i-browser", artifact_location=(project / "mlartifacts").as_uri(),
                                      tags=experiment_view_tags())
    run = client.create_run(exp_id, run_name="browser-run")
    for step in (0, 10, 20):
        client.log_metric(run.info.run_id, train_metric_key("loss_d"), 1.0 - step / 40, step=step)
    client.log_metric(run.info.run_id, "eval/test/attr_all", 0.6, step=20)  # as evaluate logs it
    grid = _write_eval(project) / "samples.png"
    client.log_image(run.info.run_id, Image.open(grid), key="samples", step=20)
    client.set_terminated(run.info.run_id)
    port = _free_port()
    cmd = [sys.executable, "-m", "mlflow", "ui", "--workers", "1", "--backend-store-uri", uri,
           "--host", "127.0.0.1", "--port", str(port)]
    proc = _start(cmd, f"http://127.0.0.1:{port}/health", _env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"), project)
    try:
        page, blocked = _offline_page(browser, height=2400)  # charts below the fold are not drawn
        page.set_default_timeout(30_000)
        page.goto(ui_url(f"http://127.0.0.1:{port}", exp_id, run.info.run_id))
        page.get_by_text("browser-run").first.wait_for()
        page.get_by_text("Model registry", exact=True).first.wait_for()  # the model-training layout
        assert page.get_by_text("Judges", exact=True).count() == 0  # not the GenAI one
        page.wait_for_function("[...document.querySelectorAll('img')].some(i => i.src.includes('get-artifact') "
                               "&& i.src.includes('samples') && i.complete && i.naturalWidth > 64)")
        page.get_by_text("eval/test", exact=True).first.wait_for()
        text = page.inner_text("body")
        assert 0 <= text.index("loss_d") < text.index("attr_all")  # the loss curves come first
        assert blocked == []
        page.close()
    finally:
        _stop(proc)
