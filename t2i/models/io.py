"""Save / load a generator as safetensors + config.json: loading never unpickles anything."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from t2i.models.config import GANConfig
from t2i.models.generator import Generator

WEIGHTS = "generator.safetensors"
CONFIG = "config.json"


def plain_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """state_dict as contiguous CPU tensors (safetensors refuses channels_last/shared storage)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def save_generator(directory: str | Path, generator: torch.nn.Module, config_dict: dict[str, Any]) -> Path:
    """Write <dir>/generator.safetensors and <dir>/config.json (each atomically).

    config_dict must hold "model" (GANConfig.to_dict()); the train stage adds "encoder",
    "train" and "step".
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if "model" not in config_dict:
        raise ValueError("config_dict needs a 'model' entry (GANConfig.to_dict())")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{WEIGHTS}.")
    os.close(fd)
    save_file(plain_state_dict(generator), tmp, metadata={"format": "pt"})
    os.replace(tmp, directory / WEIGHTS)
    _atomic_write_text(directory / CONFIG, json.dumps(config_dict, indent=2, sort_keys=True) + "\n")
    return directory / WEIGHTS


FILES_ARTIFACT = "generator_files"  # where the train stage logs generator.safetensors + config.json


def _local_dir(path_or_uri: str | Path) -> Path:
    text = str(path_or_uri)
    if text.startswith(("runs:/", "mlflow-artifacts:/")):
        # Only t2i.tracking talks to MLflow: it fetches the logged files to a local directory.
        from t2i import tracking

        parts = text.rstrip("/").split("/")
        # runs:/<id> and runs:/<id>/generator (the pt2 model) both name the run's generator:
        # load its safetensors weights + config, logged beside it.
        if text.startswith("runs:/") and (len(parts) == 2 or parts[2:] == ["generator"]):
            text = f"runs:/{parts[1]}/{FILES_ARTIFACT}"
        return Path(tracking.download_artifacts(text))
    path = Path(text)
    return path.parent if path.is_file() or path.suffix == ".safetensors" else path


def _find(directory: Path, name: str) -> Path:
    """The file itself, or the first match below (an MLflow artifact dir nests one level)."""
    direct = directory / name
    if direct.exists():
        return direct
    found = sorted(directory.rglob(name))
    if not found:
        raise FileNotFoundError(f"no {name} in {directory}")
    return found[0]


def load_generator(path_or_uri: str | Path, device: str | torch.device = "cpu") -> tuple[Generator, dict[str, Any]]:
    """(EMA generator in eval mode, config dict) from a models/ dir, its weights file, or an
    MLflow `runs:/<run_id>[/generator_files]` URI (the files the train stage logs).

    `models:/...` (the registered pt2 model of `Run.log_generator`) has no t2i config: load it
    with `t2i.tracking.load_logged_generator` instead.
    """
    if str(path_or_uri).startswith("models:/"):
        raise ValueError(f"{path_or_uri}: use t2i.tracking.load_logged_generator for registered models, "
                         "or load_generator('runs:/<run_id>') for the weights + config")
    directory = _local_dir(path_or_uri)
    config_path = _find(directory, CONFIG)
    config_dict = json.loads(config_path.read_text(encoding="utf-8"))
    generator = Generator(GANConfig.from_dict(config_dict["model"]))
    state = load_file(str(_find(config_path.parent, WEIGHTS)), device="cpu")
    generator.load_state_dict(state)
    return generator.to(device).eval(), config_dict
