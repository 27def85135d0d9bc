"""A background sender for tracking calls: the training thread never waits on the server.

``Sender.submit`` appends a call and returns at once; one daemon thread runs the calls in order.
When a call fails because the server cannot be reached, the thread keeps that call at the head
and retries it with a capped backoff, so an outage delays the record instead of losing it. What
could not be sent -- refused by the server, dropped when the bounded queue overflowed, or still
pending at ``close`` -- is kept as ``Missed`` entries so the run can say plainly what is missing.
No MLflow import here: ``t2i.tracking`` supplies the calls and the error classifier.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

MAX_PENDING = 20_000  # ~1 MB of metric batches; images are 64-256 px grids
_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)


@dataclass
class Call:
    what: str  # "log_metrics", "log_image", ...
    step: int | None
    fn: Callable[[], object]


@dataclass(frozen=True)
class Missed:
    what: str
    step: int | None
    reason: str


def summarize(missed: list[Missed]) -> str:
    """'log_metrics: 12 calls (steps 5-40, server unreachable); log_image: 1 call (step 10, ...)'."""
    groups: dict[tuple[str, str], list[int | None]] = {}
    for m in missed:
        groups.setdefault((m.what, m.reason), []).append(m.step)
    parts = []
    for (what, reason), steps in groups.items():
        known = sorted(s for s in steps if s is not None)
        where = (f"step {known[0]}" if len(known) == 1 else f"steps {known[0]}-{known[-1]}") if known else ""
        n = len(steps)
        parts.append(f"{what}: {n} call{'s' if n != 1 else ''} ({', '.join(p for p in (where, reason) if p)})")
    return "; ".join(parts)


class Sender:
    """Runs submitted calls in order on one thread, retrying through outages."""

    def __init__(
        self,
        unreachable: Callable[[BaseException], bool],
        on_down: Callable[[str, BaseException], None],
        on_back: Callable[[int], None],
        on_error: Callable[[str, BaseException], None],
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._unreachable, self._on_down, self._on_back, self._on_error = unreachable, on_down, on_back, on_error
        self._max = max_pending
        self._pending: deque[Call] = deque()
        self._busy = False  # a call is running on the worker
        self._closed = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self.missed: list[Missed] = []
        self.down = False

    def submit(self, what: str, fn: Callable[[], object], step: int | None = None) -> None:
        with self._cond:
            if self._closed:
                self.missed.append(Missed(what, step, "logged after the run ended"))
                return
            if len(self._pending) >= self._max:
                old = self._pending.popleft()
                self.missed.append(Missed(old.what, old.step, "dropped: too many calls queued during the outage"))
            self._pending.append(Call(what, step, fn))
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="t2i-tracking", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._pending) + int(self._busy)

    def flush(self, timeout: float) -> bool:
        """Wait until every submitted call ran (True) or ``timeout`` seconds passed (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout=timeout)

    def close(self, timeout: float) -> list[Missed]:
        """Flush for at most ``timeout`` s, stop the worker; return everything not sent."""
        self.flush(timeout)
        with self._cond:
            self._closed = True
            for i, call in enumerate(self._pending):
                why = "in flight when the run ended" if i == 0 and self._busy else "server unreachable until the run ended"
                self.missed.append(Missed(call.what, call.step, why))
            self._pending.clear()
            self._cond.notify_all()
        return list(self.missed)

    def _work(self) -> None:
        failures = 0
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if self._closed:
                    return
                call = self._pending[0]
                self._busy = True
            try:
                call.fn()
                error: BaseException | None = None
            except Exception as exc:  # noqa: BLE001 -- any failure of a logging call is reported, never raised into training
                error = exc
            with self._cond:
                self._busy = False
                if error is not None and self._unreachable(error):
                    if not self.down:
                        self.down = True
                        self._on_down(call.what, error)
                    # Keep the call at the head; wait (interruptible by close) before retrying.
                    self._cond.wait(timeout=_BACKOFF_S[min(failures, len(_BACKOFF_S) - 1)])
                    failures += 1
                    self._cond.notify_all()
                    continue
                if self._pending and self._pending[0] is call:
                    self._pending.popleft()
                failures = 0
                if self.down:  # the server answered: the outage is over
                    self.down = False
                    self._on_back(len(self._pending))
                if error is not None:
                    self.missed.append(Missed(call.what, call.step, f"refused: {error}"[:300]))
                self._cond.notify_all()
            if error is not None:
                self._on_error(call.what, error)
