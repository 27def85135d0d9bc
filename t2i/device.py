"""The one device picker: every stage and the CLI resolve `device: auto | cpu | cuda` here."""

from __future__ import annotations

import torch


def pick_device(name: str = "auto", local_rank: int = 0, key: str = "device") -> torch.device:
    """`auto` takes CUDA when torch sees it; `cuda` without a GPU is an error naming ``key``.

    ``local_rank`` picks the GPU of one process under torchrun (one process per GPU).
    """
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"{key}={name!r}: expected auto, cpu or cuda")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError(f"{key}=cuda but torch sees no CUDA device; use auto or cpu")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")
