"""Resolve what a training run uses (event: `clinical_ner.runtime.lambda_events.DatasetEvent`).

Returns the version, its manifest URI, the train/dev/test channel URIs and, once a model is in
production, ``production`` = its package ARN and ``model.tar.gz`` (the training job scores it
on the same data as the candidate): `clinical_ner.pipeline.registry.resolve_training_inputs`.
Environment: ``LAKE_BUCKET``, ``MODEL_PACKAGE_GROUP``.
"""

from __future__ import annotations

import os
from typing import Any

from clinical_ner.pipeline import registry
from clinical_ner.pipeline.aws_runtime import client
from clinical_ner.runtime import lambda_edge as edge
from clinical_ner.runtime.lambda_events import DatasetEvent


@edge.step("resolve_dataset", DatasetEvent)
def handler(event: DatasetEvent) -> dict[str, Any]:
    return registry.resolve_training_inputs(
        client("s3"),
        client("sagemaker"),
        bucket=os.environ["LAKE_BUCKET"],
        group_name=os.environ["MODEL_PACKAGE_GROUP"],
        dataset_version=event.dataset_version,
    )
