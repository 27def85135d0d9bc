"""Built-in metrics, one per file; importing this package registers them (order = report order)."""

from t2i.eval.metrics import (  # noqa: F401
    attribute_accuracy,
    swap_accuracy,
    diversity,
    fid_domain,
    r_precision,
    fid,
    inception_score,
)
