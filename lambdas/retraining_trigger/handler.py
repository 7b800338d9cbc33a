"""Retraining trigger (thin): alarm / annotation drop / manual call -> debounced training run.

Environment: TRAINING_STATE_MACHINE_ARN, COOLDOWN_HOURS. See `clinical_ner.pipeline.retraining`.
Only the standard library and boto3 are needed (no layer).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from clinical_ner.pipeline import retraining
from clinical_ner.pipeline.aws_runtime import client, run_step


def handler(event: dict[str, Any], _context: Any = None) -> dict[str, Any]:
    trigger = retraining.parse_trigger(event)
    return run_step(
        "retraining_trigger",
        lambda: retraining.start_training(
            client("stepfunctions"),
            os.environ["TRAINING_STATE_MACHINE_ARN"],
            trigger,
            cooldown=timedelta(hours=float(os.environ.get("COOLDOWN_HOURS", "24"))),
        ),
        trigger=trigger.kind,
    )
