"""What the evaluation's judge reads in a served image (synthetic data only).

The evaluate stage saves the attribute classifier it scored the model with at ``eval/judge/``
(``t2i.eval.classifier.save_classifier``: weights + classes) and logs it to the model's MLflow
run under the artifact path ``eval/judge``. ``--judge auto`` takes it from where the model came
from: for a models/ directory, the ``eval/judge/`` of the same project (beside ``models/``);
for a ``runs:/`` or ``models:/name@alias`` source, that run's ``eval/judge`` artifacts. A model
that was never evaluated, or a real dataset (no ground truth, no classifier), shows no judge.
``--judge PATH`` names a saved classifier (its directory, or a ``.safetensors`` with its
``.json`` beside it); ``--judge none`` turns it off.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from t2i.data.templates import parse_caption
from t2i.eval.classifier import JUDGE_DIR as JUDGE_SUBDIR
from t2i.eval.classifier import JUDGE_WEIGHTS, AttributeClassifier, load_classifier

log = logging.getLogger(__name__)
JUDGE_DIR = Path("eval") / JUDGE_SUBDIR      # in a project: where the evaluate stage writes the judge
JUDGE_ARTIFACT = f"eval/{JUDGE_SUBDIR}"      # in the model's MLflow run: where the evaluate stage logs it


@dataclass
class Judge:
    classifier: AttributeClassifier
    path: Path

    def read(self, images: np.ndarray, captions: list[str]) -> list[dict[str, Any]]:
        """uint8 (N, R, R, 3) + the caption of each image -> per image what the judge reads and,
        where the caption is a template one, whether each stated attribute matches."""
        pred = self.classifier.predict(images)  # {attribute: (N,)}
        out = []
        for i, caption in enumerate(captions):
            reads = {a: str(pred[a][i]) for a in self.classifier.attributes}
            parsed = parse_caption(caption)
            stated = {a: str(v) for a, v in (parsed[1] if parsed else {}).items() if a in reads}
            out.append({"reads": reads, "stated": stated,
                        "matches": {a: reads[a] == v for a, v in stated.items()}})
        return out


def _run_id(uri: str) -> str | None:
    """The MLflow run behind ``runs:/<id>/...``, ``models:/<name>@<alias>`` or
    ``models:/<name>/<version>``; None for anything else (a logged-model id, a bad name)."""
    body = uri.split(":/", 1)[1].strip("/")
    if uri.startswith("runs:/"):
        return body.split("/")[0] or None
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            return client.get_model_version_by_alias(name, alias).run_id or None
        name, _, version = body.partition("/")
        return client.get_model_version(name, version).run_id or None if version.isdigit() else None
    except MlflowException:
        return None


def _from_run(uri: str) -> Path | None:
    """The judge logged with the model's run, downloaded; None when the run has none."""
    from t2i import tracking

    run_id = _run_id(uri)
    if run_id is None:
        return None
    try:
        local = Path(tracking.download_artifacts(f"runs:/{run_id}/{JUDGE_ARTIFACT}"))
    except tracking.TrackingError as exc:  # not evaluated (yet), or a real dataset: no judge
        log.info("no judge in run %s: %s", run_id, exc)
        return None
    return local if (local / JUDGE_WEIGHTS).is_file() else None


def find_judge(source: str | Path) -> Path | None:
    """Where ``--judge auto`` finds the judge of a model source, or None."""
    text = str(source)
    if text.startswith(("runs:/", "models:/")):
        return _from_run(text)
    model_dir = Path(text)
    if model_dir.suffix == ".safetensors" or model_dir.is_file():
        model_dir = model_dir.parent
    candidate = model_dir.resolve().parent / JUDGE_DIR  # models/ and eval/ share the project root
    return candidate if (candidate / JUDGE_WEIGHTS).is_file() else None


def load_judge(spec: str, device: torch.device, source: str | Path | None = None) -> Judge | None:
    """``spec``: "auto" (the judge of ``source``, None when it has none), "none", or a saved
    classifier's path (``load_classifier`` names what is missing)."""
    if spec == "none":
        return None
    if spec == "auto":
        found = find_judge(source) if source is not None else None
        if found is None:
            return None
        path = found
    else:
        path = Path(spec)
    return Judge(load_classifier(path, device), path)
