"""The standard FID Inception network, from a local weights file only.

torchmetrics builds it through torch-fidelity's ``FeatureExtractorInceptionV3``, which
``torch.load``s ``feature_extractor_weights_path`` when given and downloads otherwise. We never
let it reach the download branch: no file, no Inception metric (skipped with a note). The file
is torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` (the TF FID weights as a
state dict).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

SKIP_NOTE = ("evaluate.inception_weights is not set: Inception metrics need the standard FID "
             "weights file (weights-inception-2015-12-05-6726825d.pth) on disk; nothing is downloaded")


def weights_path(value: str | None) -> Path | None:
    """The weights file, None when not configured; a clear error when configured but unusable."""
    if not value:
        return None
    path = Path(value)
    if not path.is_file():
        raise FileNotFoundError(f"evaluate.inception_weights: {path} is not a file")
    try:
        import torch_fidelity  # noqa: F401
    except ImportError as exc:
        raise ModuleNotFoundError(
            "evaluate.inception_weights is set but torch-fidelity is not installed "
            "(torchmetrics needs it for the Inception network): pip install torch-fidelity"
        ) from exc
    return path


def inception(path: Path, feature: str, device: torch.device) -> torch.nn.Module:
    """torchmetrics' NoTrainInceptionV3 giving ``feature`` ('2048', 'logits_unbiased', ...)."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    return NoTrainInceptionV3(name="inception-v3-compat", features_list=[feature],
                              feature_extractor_weights_path=str(path)).to(device)


def nchw(images_nhwc_uint8: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (N, R, R, 3) numpy -> uint8 (N, 3, R, R) tensor, what torchmetrics expects."""
    return torch.from_numpy(images_nhwc_uint8.copy()).permute(0, 3, 1, 2).to(device)
