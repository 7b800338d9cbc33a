"""Gate a registered candidate against the current Approved package (policy: pipeline.gating).

Event: ``{"model_package_arn"}``. Environment: ``MODEL_PACKAGE_GROUP`` and ``STAGE_CONFIG``
(`clinical_ner.pipeline.stage_config.StageConfig.to_json`: the stage's gate thresholds).
"""

from __future__ import annotations

import os
from typing import Any

from clinical_ner.pipeline import registry
from clinical_ner.pipeline.aws_runtime import client, require, run_step
from clinical_ner.pipeline.stage_config import StageConfig


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    arn = str(require(event, "model_package_arn"))
    thresholds = StageConfig.from_json(os.environ["STAGE_CONFIG"]).gate
    return run_step(
        "gate_model",
        lambda: registry.gate_candidate(
            client("sagemaker"),
            client("s3"),
            group_name=os.environ["MODEL_PACKAGE_GROUP"],
            candidate_arn=arn,
            thresholds=thresholds,
        ),
        model_package_arn=arn,
    )
