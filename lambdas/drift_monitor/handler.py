"""Drift monitor (thin): profile a window, compare, put metrics, write the report.

Two windows, one decision logic (`clinical_ner.pipeline.monitoring`):

- Batch (from the extraction state machine): ``run_id``, ``dt``, ``model_version``,
  ``entity_keys`` (the publish step's entity files) and optionally ``model_data_url`` (the
  model artifact holding the training baseline).
- Endpoint traffic (from the capture schedule): ``{"source": "endpoint_capture"}`` with
  optionally ``window_end`` (ISO time; the scheduled event's time) and ``window_hours``
  (default 24): the endpoint's SageMaker data capture files of that window
  (`clinical_ner.runtime.capture.monitor_capture`).

Environment: LAKE_BUCKET, STAGE_CONFIG (JSON of `pipeline.stage_config.StageConfig`, for
the drift thresholds) and, for the endpoint path, ENDPOINT_NAME. Returns the decision and
counts; never note text.
"""

from __future__ import annotations

import os
from typing import Any

from clinical_ner.pipeline.aws_runtime import PipelineStepError, client, require, run_step
from clinical_ner.pipeline.stage_config import StageConfig
from clinical_ner.runtime import extraction_steps as steps

CAPTURE_SOURCE = "endpoint_capture"


def handler(event: dict[str, Any], _context: Any = None) -> dict[str, Any]:
    config = StageConfig.from_json(os.environ["STAGE_CONFIG"])
    if event.get("source") == CAPTURE_SOURCE:
        return _capture(event, config)
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


def _capture(event: dict[str, Any], config: StageConfig) -> dict[str, Any]:
    from clinical_ner.runtime import capture

    endpoint = os.environ.get("ENDPOINT_NAME") or ""
    if not endpoint:
        raise PipelineStepError("ENDPOINT_NAME is not set: no endpoint capture to monitor")
    try:
        hours = int(event.get("window_hours") or capture.DEFAULT_WINDOW_HOURS)
    except (TypeError, ValueError):
        raise PipelineStepError("window_hours must be an integer") from None
    return run_step(
        "drift_monitor_capture",
        lambda: capture.monitor_capture(
            client("s3"),
            client("cloudwatch"),
            bucket=os.environ["LAKE_BUCKET"],
            endpoint=endpoint,
            thresholds=config.drift,
            stage=config.stage.value,
            window_end=event.get("window_end") or None,
            window_hours=hours,
            monitoring_prefix=config.lake.monitoring,
        ),
        endpoint=endpoint,
    )
