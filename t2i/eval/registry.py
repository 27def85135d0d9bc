"""The metrics registry: one file per metric, each registers a function here.

A metric is ``fn(ctx: EvalContext) -> MetricResult``. Keeping the registry a plain dict (the
stylegan2-ada-pytorch pattern) lets the stage run every metric, a test run one, and a user add one
by writing a file and importing it in ``t2i/eval/metrics/__init__.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from t2i.eval.context import EvalContext

log = logging.getLogger(__name__)


@dataclass
class MetricResult:
    """What one metric measured.

    ``values`` uses flat keys with ``/`` between levels (``test/attr_all``); the report nests them
    for ``eval/metrics.json``. ``samples`` says on how many items each figure rests, ``what`` says
    in one sentence what was measured, ``note`` carries caveats (or why it was skipped).
    """

    name: str
    values: dict[str, float] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)
    what: str = ""
    note: str | None = None
    skipped: bool = False
    seconds: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)  # tables for plots/report, not metrics

    @classmethod
    def skip(cls, name: str, why: str) -> MetricResult:
        return cls(name=name, skipped=True, note=why, what="skipped")


MetricFn = Callable[["EvalContext"], MetricResult]
METRICS: dict[str, MetricFn] = {}


def register(name: str) -> Callable[[MetricFn], MetricFn]:
    def deco(fn: MetricFn) -> MetricFn:
        if name in METRICS:
            raise ValueError(f"metric {name!r} registered twice")
        METRICS[name] = fn
        return fn

    return deco


def run_metrics(ctx: EvalContext, names: Iterable[str] | None = None) -> list[MetricResult]:
    """Run the named metrics (all registered ones by default), timing each."""
    import t2i.eval.metrics  # noqa: F401  (registers the built-in metrics)

    names = list(METRICS) if names is None else list(names)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise KeyError(f"unknown metrics {unknown}; registered: {sorted(METRICS)}")
    results = []
    for name in names:
        t0 = time.perf_counter()
        result = METRICS[name](ctx)
        result.seconds = time.perf_counter() - t0
        log.info("metric %s: %s (%.1f s)%s", name, result.values, result.seconds,
                 f" note: {result.note}" if result.note else "")
        results.append(result)
    return results
