"""Gate a registered candidate against the current Approved package (policy: pipeline.gating).

Event: `clinical_ner.runtime.lambda_events.GateEvent`. Environment: ``MODEL_PACKAGE_GROUP``
and ``STAGE_CONFIG`` (`clinical_ner.pipeline.stage_config.StageConfig.to_json`: the stage's
gate thresholds).
"""

from __future__ import annotations

import os
from typing import Any

from clinical_ner.pipeline import registry
from clinical_ner.pipeline.aws_runtime import client
from clinical_ner.pipeline.stage_config import StageConfig
from clinical_ner.runtime import lambda_edge as edge
from clinical_ner.runtime.lambda_events import GateEvent


@edge.step("gate_model", GateEvent)
def handler(event: GateEvent) -> dict[str, Any]:
    return registry.gate_candidate(
        client("sagemaker"),
        client("s3"),
        group_name=os.environ["MODEL_PACKAGE_GROUP"],
        candidate_arn=event.model_package_arn,
        thresholds=StageConfig.from_json(os.environ["STAGE_CONFIG"]).gate,
    )
