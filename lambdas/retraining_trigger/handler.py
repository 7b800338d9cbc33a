"""Retraining trigger (thin): alarm / annotation drop / manual call -> debounced training run.

The event is a CloudWatch alarm action, an S3 EventBridge event or a manual call; its model
is `clinical_ner.pipeline.retraining.Trigger` (`parse_trigger` raises `TriggerError` for
anything else). Environment: TRAINING_STATE_MACHINE_ARN, COOLDOWN_HOURS.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from clinical_ner.pipeline import retraining
from clinical_ner.pipeline.aws_runtime import client
from clinical_ner.runtime import lambda_edge as edge


@edge.step("retraining_trigger", retraining.parse_trigger, ids=lambda t: {"trigger": t.kind})
def handler(trigger: retraining.Trigger) -> dict[str, Any]:
    return retraining.start_training(
        client("stepfunctions"),
        os.environ["TRAINING_STATE_MACHINE_ARN"],
        trigger,
        cooldown=timedelta(hours=float(os.environ.get("COOLDOWN_HOURS", "24"))),
    )
