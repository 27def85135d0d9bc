"""Resumable checkpoints: one safetensors file, written atomically, loaded without unpickling.

checkpoints/last.safetensors holds every tensor (G, D, EMA, both Adam states) and, in its
string metadata, a JSON header: step, sampler position, optimiser hyper-parameters, the
fingerprint and the MLflow run. Per-step noise is derived from (seed, rank, step)
(`runtime.step_generator`), so no RNG state is needed to continue bit-for-bit.

The fingerprint covers what changes the training trajectory -- train params that shape the
model or the optimisation, the data and embedding files, the process count, the networks'
tensor names and shapes -- and leaves out
`steps` and logging cadences, so `dvc exp run -S train.steps=6000` continues a finished run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from t2i.train.step import GANState

FILE = "last.safetensors"
FORMAT = 1
# Params that do not change what a step computes (or only its speed/cadence).
NOT_FINGERPRINTED = {
    "steps", "checkpoint_every", "sample_every", "log_every", "threads", "device",
    "precision", "channels_last",
}


def architecture(state: GANState) -> list[list[Any]]:
    """Names and shapes of every saved tensor: a code change that alters the networks changes
    this, so an old checkpoint is not loaded into a different model."""
    return [[f"{p}.{k}", list(v.shape)] for p, m in (("g", state.g_raw), ("d", state.d_raw)) for k, v in m.state_dict().items()]


def fingerprint(train_params: dict[str, Any], data_identity: str, world_size: int, arch: list[list[Any]] | None = None) -> str:
    kept = {k: v for k, v in sorted(train_params.items()) if k not in NOT_FINGERPRINTED}
    blob = json.dumps({"params": kept, "data": data_identity, "world": world_size, "format": FORMAT, "arch": arch},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Checkpoint:
    step: int
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]


def _module_tensors(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def _optim_split(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{idx}.{name}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def save_checkpoint(directory: str | Path, state: GANState, step: int, meta: dict[str, Any]) -> Path:
    """Atomic: a temp file in the same directory, fsync, os.replace. A kill at any point leaves
    the previous checkpoint or the new one, never half of one."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in (("g", state.g_raw), ("d", state.d_raw), ("ema", state.ema)):
        tensors.update(_module_tensors(prefix, module))
    optim_meta: dict[str, Any] = {}
    for prefix, opt in (("opt_g", state.opt_g), ("opt_d", state.opt_d)):
        t, m = _optim_split(prefix, opt)
        tensors.update(t)
        optim_meta[prefix] = m
    header = {**meta, "format": FORMAT, "step": step, "optim": optim_meta}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{FILE}.")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"t2i": json.dumps(header)})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, directory / FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return directory / FILE


def load_checkpoint(directory: str | Path) -> Checkpoint | None:
    path = Path(directory) / FILE
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt", device="cpu") as f:
        header = json.loads((f.metadata() or {})["t2i"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return Checkpoint(step=int(header["step"]), meta=header, tensors=tensors)


def _sub(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def tensors_of(ckpt: Checkpoint, prefix: str) -> dict[str, torch.Tensor]:
    """The state dict of one module of the checkpoint: "g", "d" or "ema"."""
    return _sub(ckpt.tensors, prefix)


def _load_optim(opt: torch.optim.Optimizer, prefix: str, ckpt: Checkpoint) -> None:
    m = ckpt.meta["optim"][prefix]
    state: dict[int, dict[str, Any]] = {}
    for key, value in _sub(ckpt.tensors, prefix).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for idx, scalars in m["scalars"].items():
        state.setdefault(int(idx), {}).update(scalars)
    opt.load_state_dict({"state": state, "param_groups": m["param_groups"]})


def restore(state: GANState, ckpt: Checkpoint) -> None:
    """Load weights (strict) and optimiser states into `state`, in place."""
    state.g_raw.load_state_dict(_sub(ckpt.tensors, "g"))
    state.d_raw.load_state_dict(_sub(ckpt.tensors, "d"))
    state.ema.load_state_dict(_sub(ckpt.tensors, "ema"))
    _load_optim(state.opt_g, "opt_g", ckpt)
    _load_optim(state.opt_d, "opt_d", ckpt)
