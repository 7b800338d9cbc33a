"""Register the trained model as a package (PendingManualApproval) with its metrics attached.

Event: `clinical_ner.runtime.lambda_events.RegisterEvent`. Environment:
``MODEL_PACKAGE_GROUP``; ``MLFLOW_TRACKING_URI`` (the managed MLflow tracking server's ARN)
and ``MLFLOW_EXPERIMENT_NAME`` for experiment tracking.
"""

from __future__ import annotations

import os
from typing import Any

from clinical_ner.pipeline import registry
from clinical_ner.pipeline.aws_runtime import client
from clinical_ner.runtime import lambda_edge as edge
from clinical_ner.runtime.lambda_events import RegisterEvent


@edge.step("register_model", RegisterEvent)
def handler(event: RegisterEvent) -> dict[str, Any]:
    return registry.register_candidate(
        client("sagemaker"),
        client("s3"),
        group_name=os.environ["MODEL_PACKAGE_GROUP"],
        job_name=event.job_name,
        model_data_url=event.model_data_url,
        image_uri=event.image,
        dataset_version=event.dataset_version,
        trigger=event.trigger,
        execution_id=event.execution_id,
        tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", ""),
        experiment=os.environ.get("MLFLOW_EXPERIMENT_NAME", ""),
    )
