"""Record the gate outcome on the package: approve, reject (reason in the approval
description) or leave it pending for a human (manual approval mode).

Event: `clinical_ner.runtime.lambda_events.DecisionEvent`.
"""

from __future__ import annotations

from typing import Any

from clinical_ner.pipeline import registry
from clinical_ner.pipeline.aws_runtime import client
from clinical_ner.runtime import lambda_edge as edge
from clinical_ner.runtime.lambda_events import DecisionEvent


@edge.step("approve_or_reject", DecisionEvent)
def handler(event: DecisionEvent) -> dict[str, Any]:
    return registry.record_decision(
        client("sagemaker"),
        package_arn=event.model_package_arn,
        action=event.action,
        gate=event.gate,
    )
