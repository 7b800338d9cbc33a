"""Drift monitor (thin): profile the run's window, compare, put metrics, write the report.

Event (from the extraction state machine): ``run_id``, ``dt``, ``model_version``,
``entity_keys`` (the publish step's entity files) and optionally ``model_data_url`` (the
model artifact holding the training baseline). Environment: LAKE_BUCKET, STAGE,
STAGE_CONFIG (JSON of `clinical_ner.stage_config.StageConfig`, for the drift thresholds).
Returns the decision; never note text.
"""

from __future__ import annotations

import os
from typing import Any

from clinical_ner import extraction_steps as steps
from clinical_ner.aws_runtime import client, require, run_step
from clinical_ner.stage_config import StageConfig


def handler(event: dict[str, Any], _context: Any = None) -> dict[str, Any]:
    config = StageConfig.from_json(os.environ["STAGE_CONFIG"])
    run_id = require(event, "run_id")
    return run_step(
        "drift_monitor",
        lambda: steps.monitor_drift(
            client("s3"),
            client("cloudwatch"),
            bucket=os.environ["LAKE_BUCKET"],
            run_id=run_id,
            dt=require(event, "dt"),
            model_version=require(event, "model_version"),
            entity_keys=list(require(event, "entity_keys")),
            thresholds=config.drift,
            stage=config.stage.value,
            model_data_url=event.get("model_data_url") or None,
        ),
        run_id=run_id,
    )
