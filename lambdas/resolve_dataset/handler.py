"""Resolve what a training run uses: ``{"dataset_version": "latest" | "ds-..."}``.

Returns the version, its manifest URI, the train/dev/test channel URIs and, once a model is in
production, ``production`` = its package ARN and ``model.tar.gz`` (the training job scores it
on the same data as the candidate): `clinical_ner.pipeline.registry.resolve_training_inputs`.
Environment: ``LAKE_BUCKET``, ``MODEL_PACKAGE_GROUP``.
"""

from __future__ import annotations

import os
from typing import Any

from clinical_ner.pipeline import registry
from clinical_ner.pipeline.aws_runtime import client, run_step


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    version = str(event.get("dataset_version") or registry.LATEST)
    return run_step(
        "resolve_dataset",
        lambda: registry.resolve_training_inputs(
            client("s3"),
            client("sagemaker"),
            bucket=os.environ["LAKE_BUCKET"],
            group_name=os.environ["MODEL_PACKAGE_GROUP"],
            dataset_version=version,
        ),
        dataset_version=version,
    )
