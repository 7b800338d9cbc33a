"""Experiment tracking: one MLflow run per training run (parameters, metrics, artifact reference).

Tracking is on when ``MLFLOW_TRACKING_URI`` is set: a ``file:`` URI (local file store, the
default of local runs), an ``http(s)://`` MLflow server, or the ARN of a SageMaker managed
MLflow tracking server (needs the ``sagemaker-mlflow`` plugin for SigV4 auth). The experiment
is ``MLFLOW_EXPERIMENT_NAME`` (default ``clinical-ner``).

Tracking never decides whether a model is good, so it never fails a training run: without the
variable, or without the ``mlflow`` client installed, tracking is reported as disabled; an error
while logging is reported as failed (exception type and a truncated message). The outcome is
returned so the caller can write it into metrics.json.

MLflow 3 refuses the file store unless ``MLFLOW_ALLOW_FILE_STORE=true``; choosing a ``file:``
URI is taken as that opt-in, so it is set for ``file:`` URIs only.

Only names, numbers, versions and hashes are logged: never note text (the model and data go to
S3 with the training job; MLflow gets a reference to them).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any

DEFAULT_EXPERIMENT = "clinical-ner"
_MAX_PARAM_CHARS = 500  # MLflow accepts more; keep params readable in the UI
_METRIC_KEY = re.compile(r"[^\w./ -]")

log = logging.getLogger(__name__)


def redact_uri(uri: str) -> str:
    """A tracking URI without credentials (``https://user:pw@host`` -> ``https://***@host``)."""
    return re.sub(r"(?<=://)[^/@]+@", "***@", uri)


def flatten_metrics(prefix: str, value: object, out: dict[str, float] | None = None) -> dict:
    """Numeric leaves of nested dicts as ``a.b.c -> float`` (bools and None skipped)."""
    out = {} if out is None else out
    if isinstance(value, Mapping):
        for key, sub in value.items():
            flatten_metrics(f"{prefix}.{key}" if prefix else str(key), sub, out)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        out[_METRIC_KEY.sub("_", prefix)] = float(value)
    return out


def log_training_run(
    *,
    params: Mapping[str, object],
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    run_name: str,
    documents: Mapping[str, Mapping[str, Any]] | None = None,
    tracking_uri: str | None = None,
) -> dict[str, object]:
    """Log one finished training run; returns ``{"status": ..., ...}`` (never raises)."""
    uri = tracking_uri if tracking_uri is not None else os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        log.info("MLflow tracking disabled: MLFLOW_TRACKING_URI is not set")
        return {"status": "disabled", "reason": "MLFLOW_TRACKING_URI is not set"}
    try:
        import mlflow
    except ImportError:
        log.warning("MLflow tracking disabled: the mlflow client is not installed")
        return {"status": "disabled", "reason": "mlflow client not installed"}
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    try:
        mlflow.set_tracking_uri(uri)
        experiment_id = mlflow.set_experiment(experiment).experiment_id
        with mlflow.start_run(run_name=run_name, experiment_id=experiment_id) as run:
            mlflow.log_params({k: str(v)[:_MAX_PARAM_CHARS] for k, v in params.items()})
            mlflow.log_metrics(dict(metrics))
            mlflow.set_tags(dict(tags))
            for name, document in (documents or {}).items():
                mlflow.log_dict(dict(document), name)
            run_id = run.info.run_id
    except Exception as exc:  # tracking must not fail training
        reason = f"{type(exc).__name__}: {redact_uri(str(exc))[:300]}"
        log.warning("MLflow tracking failed: %s", reason)
        return {
            "status": "failed",
            "reason": reason,
            "tracking_uri": redact_uri(uri),
        }
    log.info("MLflow run %s logged to experiment %r", run_id, experiment)
    return {
        "status": "logged",
        "run_id": run_id,
        "experiment": experiment,
        "experiment_id": experiment_id,
        "tracking_uri": redact_uri(uri),
    }
