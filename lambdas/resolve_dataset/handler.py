"""Resolve the dataset a training run uses: ``{"dataset_version": "latest" | "ds-..."}``.

Returns the version, its manifest URI and the train/dev/test channel URIs
(`clinical_ner.registry.resolve_dataset`). Environment: ``LAKE_BUCKET``.
"""

from __future__ import annotations

import os
from typing import Any

from clinical_ner import registry
from clinical_ner.aws_runtime import client, run_step


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    version = str(event.get("dataset_version") or registry.LATEST)
    return run_step(
        "resolve_dataset",
        lambda: registry.resolve_dataset(client("s3"), os.environ["LAKE_BUCKET"], version),
        dataset_version=version,
    )
