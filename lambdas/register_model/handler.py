"""Register the trained model as a package (PendingManualApproval) with its metrics attached.

Event: ``{"training": {"job_name", "model_data_url", "image"}, "dataset": {"dataset_version"},
"trigger", "execution_id"}``. Environment: ``MODEL_PACKAGE_GROUP``; ``MLFLOW_TRACKING_URI`` (the
managed MLflow tracking server's ARN) and ``MLFLOW_EXPERIMENT_NAME`` for experiment tracking.
"""

from __future__ import annotations

import os
from typing import Any

from clinical_ner.pipeline import registry
from clinical_ner.pipeline.aws_runtime import client, require, run_step


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    job_name = str(require(event, "training", "job_name"))
    return run_step(
        "register_model",
        lambda: registry.register_candidate(
            client("sagemaker"),
            client("s3"),
            group_name=os.environ["MODEL_PACKAGE_GROUP"],
            job_name=job_name,
            model_data_url=str(require(event, "training", "model_data_url")),
            image_uri=str(require(event, "training", "image")),
            dataset_version=str(require(event, "dataset", "dataset_version")),
            trigger=str(event.get("trigger") or "manual"),
            execution_id=str(event.get("execution_id") or ""),
            tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", ""),
            experiment=os.environ.get("MLFLOW_EXPERIMENT_NAME", ""),
        ),
        training_job=job_name,
    )
