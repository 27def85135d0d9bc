"""Save / load a generator as safetensors + config.json: loading never unpickles anything.

A generator's files ("the models-dir layout") are ``generator.safetensors`` and ``config.json``
side by side: what the train stage writes to models/ and logs to MLflow under
``generator_files/``. ``resolve_model_dir`` turns any source a user names (that directory, the
weights file, an MLflow ``runs:/`` or ``models:/`` URI) into a local directory holding both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from t2i.atomic import atomic_path, atomic_write
from t2i.safe_load import load_safetensors_checked
from t2i.models.config import GANConfig
from t2i.models.generator import Generator

WEIGHTS = "generator.safetensors"
CONFIG = "config.json"
FILES_ARTIFACT = "generator_files"  # where the train stage logs generator.safetensors + config.json
URI_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/")


class ModelNotFoundError(FileNotFoundError):
    """No trained generator where one was expected; the message names the source."""


def plain_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """state_dict as contiguous CPU tensors (safetensors refuses channels_last/shared storage)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def save_generator(directory: str | Path, generator: torch.nn.Module, config_dict: dict[str, Any]) -> Path:
    """Write <dir>/generator.safetensors and <dir>/config.json (each atomically).

    config_dict must hold "model" (GANConfig.to_dict()); the train stage adds "encoder",
    "train" and "step".
    """
    directory = Path(directory)
    if "model" not in config_dict:
        raise ValueError("config_dict needs a 'model' entry (GANConfig.to_dict())")
    with atomic_path(directory / WEIGHTS) as tmp:
        save_file(plain_state_dict(generator), str(tmp), metadata={"format": "pt"})
    atomic_write(directory / CONFIG, (json.dumps(config_dict, indent=2, sort_keys=True) + "\n").encode())
    return directory / WEIGHTS


def is_uri(source: str | Path) -> bool:
    return str(source).startswith(URI_SCHEMES)


def _download(uri: str) -> Path:
    """Fetch an MLflow URI to a local directory (only t2i.tracking talks to MLflow)."""
    from t2i import tracking

    parts = uri.rstrip("/").split("/")
    # runs:/<id> and runs:/<id>/generator (the pt2 model) both name the run's generator: its
    # safetensors weights + config are logged beside it, under generator_files/.
    if uri.startswith("runs:/") and (len(parts) == 2 or parts[2:] == ["generator"]):
        uri = f"runs:/{parts[1]}/{FILES_ARTIFACT}"
    try:
        return Path(tracking.download_artifacts(uri))
    except tracking.TrackingError as exc:
        raise ModelNotFoundError(f"{uri}: {exc}") from exc


def _find_layout(directory: Path, source: str) -> Path:
    """The directory holding config.json and generator.safetensors: ``directory`` itself or the
    first one below it (a downloaded MLflow artifact nests the files one or more levels)."""
    candidates = [directory] + sorted(p.parent for p in directory.rglob(CONFIG))
    for d in candidates:
        if (d / CONFIG).is_file() and (d / WEIGHTS).is_file():
            return d
    missing = [n for n in (CONFIG, WEIGHTS) if not any((d / n).is_file() for d in candidates)]
    missing = missing or [f"{CONFIG} and {WEIGHTS} in one directory"]
    hint = "" if is_uri(source) else ": train one first with `dvc repro` (or `dvc repro train`)"
    raise ModelNotFoundError(f"no trained model at {source} (missing {', '.join(missing)}){hint}")


def resolve_model_dir(source: str | Path) -> Path:
    """Local directory with config.json + generator.safetensors for a models/ dir, its weights
    file, or an MLflow ``runs:/<run_id>[/<path>]``, ``models:/<name>@<alias>`` or
    ``models:/<name>/<version>`` URI (downloaded with ``mlflow.artifacts.download_artifacts``)."""
    text = str(source)
    if is_uri(text):
        return _find_layout(_download(text), text)
    path = Path(text)
    if path.suffix == ".safetensors" or path.is_file():
        path = path.parent
    if not path.is_dir():
        raise ModelNotFoundError(f"no trained model at {path} (no such directory): "
                                 "train one first with `dvc repro` (or `dvc repro train`)")
    return _find_layout(path, text)


def read_config(directory: Path) -> dict[str, Any]:
    """config.json of a resolved model dir, with a 'model' section (GANConfig.to_dict())."""
    path = directory / CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise ValueError(f"{path} has no 'model' section (the generator's GANConfig)")
    return config


def read_generator(directory: Path, config: dict[str, Any], device: str | torch.device = "cpu") -> Generator:
    """The generator of a resolved model dir in eval mode; clear errors for corrupt or
    mismatched weights instead of a bare safetensors / load_state_dict traceback."""
    try:
        gan_config = GANConfig.from_dict(config["model"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{directory / CONFIG}: bad 'model' section: {exc}") from exc
    weights = directory / WEIGHTS
    try:
        state = load_safetensors_checked(weights)  # a damaged file is named and described
    except OSError as exc:
        raise ValueError(f"{weights} is not readable: {exc}") from exc
    generator = Generator(gan_config)
    try:
        generator.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{weights} does not match the architecture in {directory / CONFIG}: "
                         f"{str(exc).splitlines()[0]}") from exc
    return generator.to(device).eval()


def load_generator(path_or_uri: str | Path, device: str | torch.device = "cpu") -> tuple[Generator, dict[str, Any]]:
    """(EMA generator in eval mode, config dict) from any source ``resolve_model_dir`` accepts.

    For inference use ``t2i.pipeline.GenerationPipeline``, which adds the text encoder and noise.
    """
    directory = resolve_model_dir(path_or_uri)
    config = read_config(directory)
    return read_generator(directory, config, device), config
