"""Evaluation: a metrics registry (one file per metric in ``metrics/``), the judges it trains on
real images (attribute classifier, contrastive image encoder), sampling and the report.

``t2i.eval.pipeline.evaluate`` is what the DVC stage runs; ``run_metrics`` runs any subset.
"""

from t2i.eval.registry import METRICS, MetricResult, register, run_metrics

__all__ = ["METRICS", "MetricResult", "register", "run_metrics"]
