"""The generator as an exported MLflow PyTorch model (``runs:/<id>/generator``), and loading it back.

Saved as pt2 (torch.export): it loads with ``mlflow.pytorch.load_model`` without the t2i code
and without unpickling, and is called as ``g(z, text)``. The captions-in, PNGs-out pyfunc model
that serving uses is t2i/mlflow_model.py; this one is the bare network, for users who bring
their own text vectors.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from t2i.tracking import mlflow_modules, tracking_uri

if TYPE_CHECKING:
    import torch

    from t2i.tracking import Run

PIP_REQUIREMENTS = ["torch"]  # explicit: MLflow's inference of requirements costs ~5 s


def log_exported_generator(run: Run, generator: torch.nn.Module, z_dim: int, text_dim: int,
                           name: str = "generator") -> None:
    """Log ``generator(z, text)`` into ``run`` as ``runs:/<id>/<name>`` and tag the run with it.

    The example has batch 2 so the batch dimension stays dynamic. Export errors (a bug in the
    model) raise here, before anything is sent; a gone server only warns (``Run.log_with``).
    Synchronous: queued calls are sent first (bounded wait), so the model is logged after the
    metrics."""
    import numpy as np
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    mlflow, _ = mlflow_modules()
    model = copy.deepcopy(generator).cpu().eval().float()
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, z_dim, generator=gen)  # (2, z_dim)
    text = torch.randn(2, text_dim, generator=gen)  # (2, text_dim)
    with torch.no_grad():
        out = model(z, text)  # (2, 3, R, R)
    f32 = np.dtype("float32")
    signature = ModelSignature(
        inputs=Schema([TensorSpec(f32, (-1, z_dim), "z"), TensorSpec(f32, (-1, text_dim), "text")]),
        outputs=Schema([TensorSpec(f32, (-1, *out.shape[1:]), "image")]),
    )

    def log(run_id: str, uri: str) -> None:
        # log_model resolves the store and experiment globally; point both at this run.
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(experiment_id=run.experiment_id)
        mlflow.pytorch.log_model(model, name=name, run_id=run_id, input_example=(z.numpy(), text.numpy()),
                                 signature=signature, serialization_format="pt2",
                                 pip_requirements=PIP_REQUIREMENTS)
        mlflow.MlflowClient(uri).set_tag(run_id, "t2i.generator_uri", f"runs:/{run_id}/{name}")

    run.log_with("log_generator", log)


def load_logged_generator(uri: str) -> torch.nn.Module:
    """Generator logged by ``log_exported_generator``: call it as ``g(z, text)``.

    ``uri`` is ``runs:/<run_id>/generator``, ``models:/<name>/<version>`` or ``models:/m-...``.
    Uses ``MLFLOW_TRACKING_URI`` (or the local default) to resolve it.
    """
    mlflow, _ = mlflow_modules()
    mlflow.set_tracking_uri(tracking_uri())
    return mlflow.pytorch.load_model(uri)
