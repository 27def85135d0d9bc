"""One training run per output directory: an exclusive ``flock`` on a lock file.

The kernel releases a ``flock`` when its holder dies (kill -9 included), so a lock left by a
killed run is never obeyed: the next run takes it over and says whose it was. The file's text
(pid, host, start time, command) only *describes* the holder for the refusal message; the lock
itself is the kernel's. Not for NFS, where ``flock`` may not be shared between hosts.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

LOCK_FILE = ".train.lock"  # in the project root, beside models/ and checkpoints/


class RunLockedError(RuntimeError):
    """Another live process holds the lock; the message names it (pid, host, start time)."""

    def __init__(self, path: Path, holder: dict[str, Any]) -> None:
        self.path, self.holder = path, holder
        who = (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
               if holder else "a process still writing its details")
        cmd = f" ({holder['command']})" if holder.get("command") else ""
        super().__init__(f"another training run is using this directory: {who}{cmd}; lock {path}. "
                         "Wait for it to finish or stop it; a second run would overwrite its checkpoints/ and models/.")


def _describe(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _me() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv)[:300],
    }


def _write(f: TextIO, info: dict[str, Any]) -> None:
    # Rewritten in place: replacing the file would leave the flock on an unlinked inode.
    f.seek(0)
    f.truncate()
    f.write(json.dumps(info) + "\n")
    f.flush()


@contextmanager
def run_lock(path: Path | str = LOCK_FILE, say: Any = None) -> Iterator[dict[str, Any]]:
    """Hold the exclusive lock at ``path`` for the ``with`` block; yield this run's description.

    Raises ``RunLockedError`` at once (no waiting) when a live process holds it. A lock file left
    by a dead process is taken over; ``say`` (default: stderr) reports whose it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    say = say or (lambda m: print(m, file=sys.stderr))
    f = open(path, "a+", encoding="utf-8")  # a+: never truncates a holder's description
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(path, _describe(path)) from None
        previous = _describe(path)
        if previous.get("pid") and previous.get("pid") != os.getpid():
            say(f"taking over the lock {path} left by pid {previous['pid']} on {previous.get('host', '?')} "
                f"(started {previous.get('started', '?')}), which is no longer running")
        info = _me()
        _write(f, info)
        try:
            yield info
        finally:
            _write(f, {})  # released: an empty description, so no later run reports a takeover
    finally:
        f.close()  # closing the descriptor releases the flock
