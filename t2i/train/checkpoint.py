"""Resumable checkpoints: safetensors files, written atomically, loaded without unpickling.

checkpoints/last.safetensors holds every tensor (G, D, EMA, both Adam states) and, in its
string metadata, a JSON header: step, sampler position, optimiser hyper-parameters, the
fingerprint and the MLflow run. Per-step noise is derived from (seed, rank, step)
(`runtime.step_generator`), so no RNG state is needed to continue bit-for-bit.

The fingerprint covers what makes a run the run it is -- every train param but the logging and
speed knobs (`steps` included: a run of another length is another experiment, with its own
MLflow run), the data and embedding files, the process count, the networks' tensor names and
shapes, and the source of t2i/models and t2i/train -- so a checkpoint is resumed only by the
run that wrote it; anything else starts fresh and says why.

The last two good checkpoints are kept: before a new one replaces last.safetensors, the current
one (if its framing is intact) becomes prev.safetensors (a hard link, so no moment is without a
checkpoint). Each file carries a sha256 of its tensors; a damaged newest file (truncated, bit
rot, foreign) makes `load_checkpoint` fall back to the older one and say so.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from t2i.atomic import atomic_path, sweep_leftovers
from t2i.safe_load import DamagedFileError, load_safetensors_checked, metadata
from t2i.train.step import GANState

FILE = "last.safetensors"
PREV = "prev.safetensors"  # the checkpoint before last: the fallback when last is damaged
FORMAT = 1
# Temp names of the writer before temp names carried a pid (mkstemp's 8 random characters).
_LEGACY_TMP = re.compile(r"^\.last\.safetensors\.[0-9a-z_]{8}$")
# Params that change only a run's speed or how often it reports, never what it computes.
# `steps` is fingerprinted: a run of another length is another experiment with its own record.
NOT_FINGERPRINTED = {"checkpoint_every", "sample_every", "log_every", "precision", "channels_last"}
# The code whose edit changes what a checkpoint means: a checkpoint is resumed only by this code.
_CODE_DIRS = ("models", "train")


def code_identity() -> str:
    """Digest of the network and training sources (t2i/models, t2i/train)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for sub in _CODE_DIRS:
        for path in sorted((root / sub).rglob("*.py")):
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def architecture(state: GANState) -> list[list[Any]]:
    """Names and shapes of every saved tensor: a code change that alters the networks changes
    this, so an old checkpoint is not loaded into a different model."""
    return [[f"{p}.{k}", list(v.shape)] for p, m in (("g", state.g_raw), ("d", state.d_raw)) for k, v in m.state_dict().items()]


def fingerprint(train_params: dict[str, Any], data_identity: str, world_size: int, arch: list[list[Any]] | None = None) -> str:
    kept = {k: v for k, v in sorted(train_params.items()) if k not in NOT_FINGERPRINTED}
    blob = json.dumps({"params": kept, "data": data_identity, "world": world_size, "format": FORMAT, "arch": arch,
                       "code": code_identity()},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Checkpoint:
    step: int
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    path: Path | None = None  # the file it was read from (last or prev)


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes: detects bit rot that keeps the
    file's framing intact."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


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
    _remove_leftovers(directory)
    with atomic_path(directory / FILE) as tmp:
        save_file(tensors, tmp, metadata={"t2i": json.dumps(header), "t2i.sha256": tensors_digest(tensors)})
        _keep_previous(directory)
    _written[(directory / FILE).resolve()] = _stamp(directory / FILE)
    return directory / FILE


def _remove_leftovers(directory: Path) -> None:
    """Temp files of killed writers: pid-named ones whose pid is dead, and the old pid-less
    names (only a trainer writes here, and the run lock lets one at a time)."""
    for name in (FILE, PREV):
        sweep_leftovers(directory / name)
    for entry in directory.iterdir():
        if _LEGACY_TMP.match(entry.name):
            entry.unlink(missing_ok=True)
            print(f"removed leftover checkpoint temp file {entry}", file=sys.stderr)


# (inode, mtime, size) of the checkpoints this process wrote: those need no re-check.
_written: dict[Path, tuple[int, int, int]] = {}


def _stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size


def _keep_previous(directory: Path) -> None:
    """last -> prev, unless last is damaged (a damaged file never replaces a good prev)."""
    last = directory / FILE
    if not last.is_file():
        return
    if _written.get(last.resolve()) != _stamp(last):  # not ours as written: verify it fully
        try:
            _read(last)
        except DamagedFileError:
            return
    with atomic_path(directory / PREV) as tmp:
        try:
            os.link(last, tmp)  # no copy: the bytes are already on disk
        except OSError:
            shutil.copyfile(last, tmp)


def _read(path: Path) -> Checkpoint:
    tensors = load_safetensors_checked(path)
    meta = metadata(path)
    if "t2i" not in meta:
        raise DamagedFileError(path, "no t2i checkpoint header: a safetensors file from elsewhere")
    try:
        header = json.loads(meta["t2i"])
        step = int(header["step"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DamagedFileError(path, f"t2i checkpoint header is unreadable ({exc!r})") from None
    digest = meta.get("t2i.sha256")
    if digest is not None and digest != tensors_digest(tensors):
        raise DamagedFileError(path, "tensor data does not match its sha256: the file is corrupted")
    return Checkpoint(step=step, meta=header, tensors=tensors, path=path)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def load_checkpoint(directory: str | Path, say: Callable[[str], None] = _stderr) -> Checkpoint | None:
    """The newest usable checkpoint in ``directory``: last, else prev (saying why), else None.

    None when there is no checkpoint, or when every one is damaged (said, with each file and
    reason: training then starts from step 0 instead of being blocked by a broken file).
    """
    directory = Path(directory)
    problems: list[str] = []
    for path in (directory / FILE, directory / PREV):
        if not path.is_file():
            if path.name == FILE and (directory / PREV).is_file():
                problems.append(f"{path} is missing")
            continue
        try:
            ckpt = _read(path)
        except DamagedFileError as exc:
            problems.append(str(exc))
            continue
        if path.name == FILE:
            _written[path.resolve()] = _stamp(path)  # verified: the next save need not re-read it
        if problems:
            say(f"checkpoint: {'; '.join(problems)}; falling back to the older {path} (step {ckpt.step})")
        return ckpt
    if problems:
        say(f"checkpoint: no usable checkpoint in {directory} ({'; '.join(problems)}); "
            "starting from step 0 (the damaged files are replaced by the next checkpoint)")
    return None


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
