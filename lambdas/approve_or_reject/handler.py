"""Record the gate outcome on the package: approve, reject (reason in the approval
description) or leave it pending for a human (manual approval mode).

Event: ``{"action": "approve" | "reject" | "pending", "model_package_arn", "gate": {...}}``.
"""

from __future__ import annotations

from typing import Any

from clinical_ner.pipeline import registry
from clinical_ner.pipeline.aws_runtime import client, require, run_step


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    arn = str(require(event, "model_package_arn"))
    action = str(require(event, "action"))
    gate = event.get("gate") if isinstance(event.get("gate"), dict) else None
    return run_step(
        "approve_or_reject",
        lambda: registry.record_decision(
            client("sagemaker"), package_arn=arn, action=action, gate=gate
        ),
        model_package_arn=arn,
        action=action,
    )
