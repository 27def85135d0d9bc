"""One line, not a traceback, for a failure the user caused and can fix.

Every stage and CLI command runs its ``main`` through :func:`run_main`. A known kind of failure
(bad params, a missing or damaged input file, a full disk, an unreachable MLflow server, a
training directory already in use) is printed as ``<what>: error: <message>`` -- the message
names the file, key or URI -- and the process exits non-zero. Anything else is a bug and keeps
its traceback. ``--debug`` (stripped from argv before ``main`` sees it) or ``T2I_DEBUG=1`` prints
the traceback of a known failure too.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence

EXIT_USER = 2  # a mistake in params, arguments or input files: fix and rerun
EXIT_ENVIRONMENT = 1  # the machine or a service: disk full, server down
EXIT_BUSY = 3  # another run holds the directory: wait for it, or use another directory
DEBUG_ENV = "T2I_DEBUG"
DEBUG_FLAG = "--debug"

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# safetensors (Rust) reports a full disk as text only: "IoError(Os { code: 28, kind: StorageFull ...".
_DISK_FULL_TEXT = ("No space left on device", "StorageFull", "File too large", "code: 28,", "code: 27,")


class UserError(Exception):
    """A failure with a message for the user; ``exit_code`` is what the process returns."""

    def __init__(self, message: str, exit_code: int = EXIT_USER) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or during, outermost first."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def disk_full(exc: BaseException, outputs: str = "") -> UserError | None:
    """A UserError naming the file when ``exc`` (or its cause) is a full disk or a file-size limit."""
    for e in _chain(exc):
        hit = isinstance(e, OSError) and e.errno in _DISK_FULL
        if hit or any(t in str(e) for t in _DISK_FULL_TEXT):
            where = getattr(e, "filename", None) or outputs or "the output directory"
            return UserError(
                f"no space left on the disk while writing {where} ({getattr(e, 'strerror', None) or e}): "
                "free space there (or point the output elsewhere) and rerun; the previous output is kept "
                "(outputs are replaced only once complete)", EXIT_ENVIRONMENT)
    return None


def _known_types() -> tuple[type[BaseException], ...]:
    # Imported here: each module is light, and a stage imports only what it already needs.
    from t2i.config import ParamsError
    from t2i.data.prepared import PreparedError
    from t2i.data.readers import IngestError
    from t2i.safe_load import DamagedFileError
    from t2i.text.base import EncoderError

    return (ParamsError, PreparedError, IngestError, DamagedFileError, EncoderError)


def user_error(exc: BaseException, outputs: str = "") -> UserError | None:
    """The one-line form of a failure the user can fix, or None for a bug (keeps its traceback)."""
    if isinstance(exc, UserError):
        return exc
    if full := disk_full(exc, outputs):
        return full
    if isinstance(exc, _known_types()):
        return UserError(str(exc))
    from t2i.run_lock import RunLockedError
    from t2i.tracking import TrackingError

    if isinstance(exc, RunLockedError):
        return UserError(str(exc), EXIT_BUSY)
    if isinstance(exc, TrackingError):
        return UserError(str(exc), EXIT_ENVIRONMENT)
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        name = f"{exc.filename}: " if exc.filename and str(exc.filename) not in str(exc) else ""
        return UserError(f"{name}{exc.strerror or exc}" if exc.filename else str(exc))
    if isinstance(exc, UnicodeDecodeError):
        return UserError(f"a text file is not UTF-8 ({exc})")
    return None


def debug_wanted(argv: Sequence[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0", "false", "no")


def run_main(main: Callable[[list[str]], int], what: str, argv: Sequence[str] | None = None,
             outputs: str = "") -> int:
    """``main(argv)`` with user failures as one line on stderr; returns the exit code.

    ``what`` prefixes the line (``train``, ``t2i probe``); ``outputs`` names what the command
    writes, for a disk-full message whose error carries no file name.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_wanted(argv)
    argv = [a for a in argv if a != DEBUG_FLAG]
    try:
        return int(main(argv) or 0)
    except KeyboardInterrupt:
        print(f"{what}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        err = user_error(exc, outputs)
        if err is None:
            raise  # a bug: the traceback is the report
        if debug:
            traceback.print_exception(exc)
        print(f"{what}: error: {err}", file=sys.stderr)
        return err.exit_code
