"""t2i: reproducible text-to-image GAN pipeline (USE sentence vectors -> residual-attention GAN)."""

import os as _os

# Telemetry off by default for the stack we drive (see README "Telemetry"): MLflow wants the
# string "true", Prefect's server analytics print tracebacks offline, DVC's analytics process
# crashes here. A user who sets these themselves keeps their values.
for _key, _value in {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "DVC_NO_ANALYTICS": "1",
}.items():
    _os.environ.setdefault(_key, _value)

__version__ = "0.1.0"
