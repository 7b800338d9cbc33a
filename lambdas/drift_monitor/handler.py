"""Drift monitor (thin): profile a window, compare, put metrics, write the report.

Two windows, one decision logic (`clinical_ner.pipeline.monitoring`); the event is one of
`clinical_ner.runtime.lambda_events.BatchWindow` (from the extraction state machine) or
`CaptureWindow` (from the capture schedule: the endpoint's SageMaker data capture files of
that window, `clinical_ner.runtime.capture.monitor_capture`).

Environment: LAKE_BUCKET, STAGE_CONFIG (JSON of `pipeline.stage_config.StageConfig`, for
the drift thresholds) and, for the endpoint path, ENDPOINT_NAME. Returns the decision and
counts; never note text.
"""

from __future__ import annotations

import os
from typing import Any

from clinical_ner.pipeline.aws_runtime import PipelineStepError, client
from clinical_ner.pipeline.stage_config import StageConfig
from clinical_ner.runtime import extraction_steps as steps
from clinical_ner.runtime import lambda_edge as edge
from clinical_ner.runtime.lambda_events import BatchWindow, CaptureWindow, drift_window


@edge.step("drift_monitor", drift_window, ids=edge.logged_fields)
def handler(window: BatchWindow | CaptureWindow) -> dict[str, Any]:
    config = StageConfig.from_json(os.environ["STAGE_CONFIG"])
    if isinstance(window, CaptureWindow):
        return _capture(window, config)
    return steps.monitor_drift(
        client("s3"),
        client("cloudwatch"),
        bucket=os.environ["LAKE_BUCKET"],
        run_id=window.run_id,
        dt=window.dt,
        model_version=window.model_version,
        entity_keys=list(window.entity_keys),
        thresholds=config.drift,
        stage=config.stage.value,
        model_data_url=window.model_data_url,
    )


def _capture(window: CaptureWindow, config: StageConfig) -> dict[str, Any]:
    from clinical_ner.runtime import capture

    endpoint = os.environ.get("ENDPOINT_NAME") or ""
    if not endpoint:
        raise PipelineStepError("ENDPOINT_NAME is not set: no endpoint capture to monitor")
    return capture.monitor_capture(
        client("s3"),
        client("cloudwatch"),
        bucket=os.environ["LAKE_BUCKET"],
        endpoint=endpoint,
        thresholds=config.drift,
        stage=config.stage.value,
        window_end=window.window_end,
        window_hours=window.window_hours or capture.DEFAULT_WINDOW_HOURS,
        monitoring_prefix=config.lake.monitoring,
    )
