"""Atomic outputs: a half-written artifact never replaces a good one, and a killed writer's
leftovers are removed by the next writer of the same output.

A stage writes its whole output directory into a hidden sibling (same filesystem, so the final
rename is atomic), then swaps it in. Until the swap the previous result stays in place; if the
writer fails, the temp dir is removed and the previous result is left untouched.

A kill -9 runs no cleanup, so temp names carry the writer's pid: ``.<name>.tmp-<pid>-<rand>``
(and ``.<name>.old-<pid>-<rand>`` while a directory is swapped). Every writer first removes the
leftovers of *its own output name* whose pid is no longer alive on this host; a live writer's
temp files (another process still running) are never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists on this host (a reused pid counts as alive: when
    in doubt, a leftover is kept rather than a live writer's file removed)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _leftover_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(name)}\.(?:tmp|old)-(\d+)-[0-9a-z_]+$")


def sweep_leftovers(path: Path | str) -> list[Path]:
    """Remove the temp files/dirs a killed writer of ``path`` left beside it; return them.

    A writer killed inside ``atomic_dir``'s swap leaves no ``path`` but an ``.old-`` copy: that
    copy is the previous result and is renamed back, not removed. Only names of the form ``.<path.name>.tmp-<pid>-*`` / ``.old-<pid>-*`` are candidates, and
    only when ``<pid>`` is dead. The current process's own temp files are kept (another thread
    may be writing them).
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = _leftover_pattern(path.name)
    removed: list[Path] = []
    for entry in sorted(path.parent.iterdir()):  # sorted: ".old-" before ".tmp-"
        match = pattern.match(entry.name)
        if not match:
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or pid_alive(pid):
            continue
        if ".old-" in entry.name and not path.exists() and not path.is_symlink():
            # Killed between the two renames of atomic_dir: this is the previous result.
            entry.rename(path)
            print(f"restored {path} from {entry.name}, left by a killed writer", file=sys.stderr)
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:  # another process swept it first
            continue
        removed.append(entry)
    if removed:
        print(f"removed {len(removed)} leftover(s) of a killed writer of {path}: "
              f"{', '.join(p.name for p in removed)}", file=sys.stderr)
    return removed


def _tag() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextmanager
def atomic_dir(out_dir: Path | str) -> Iterator[Path]:
    """Yield an empty temp dir; on success it replaces ``out_dir``, on failure it vanishes."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(out_dir)
    tag = _tag()
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{tag}"
    old = out_dir.parent / f".{out_dir.name}.old-{tag}"
    tmp.mkdir()
    try:
        yield tmp
        if out_dir.exists():
            out_dir.rename(old)  # rename, not delete: the old result survives until the swap
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out_dir.exists():
            old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def atomic_write(path: Path | str, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-{os.getpid()}-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temp path beside ``path`` for a writer that wants a filename (safetensors, PIL);
    on success it is fsynced and renamed over ``path``, on failure removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(path)
    tmp = path.parent / f".{path.name}.tmp-{_tag()}"
    try:
        yield tmp
        with open(tmp, "rb") as f:  # the data must be on disk before the name points at it
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
