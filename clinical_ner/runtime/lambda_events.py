"""The events the Lambda handlers accept, as frozen dataclasses the edge reads and checks first.

Each field says where it is in the raw event (`lambda_edge.at`, default its own name) and its
type; `lambda_edge.parse` raises `PipelineStepError` naming a missing or mistyped key (never
its value), and ``at(log=True)`` fields are what the step's log line names. Domain rules (which
approval actions exist, the form of a dataset version or run id) stay in the core functions
that own them. The retraining trigger's model is `clinical_ner.pipeline.retraining.Trigger`
(`parse_trigger`: alarm, S3 event or manual call).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clinical_ner.pipeline.aws_runtime import PipelineStepError
from clinical_ner.pipeline.registry import LATEST
from clinical_ner.runtime import lambda_edge as edge
from clinical_ner.runtime.lambda_edge import at

# ------------------------------------------------------------------ training state machine


@dataclass(frozen=True)
class DatasetEvent:
    """resolve_dataset: the dataset version asked for, ``latest`` or ``ds-...``."""

    dataset_version: str = at(default=LATEST, log=True)


@dataclass(frozen=True)
class RegisterEvent:
    """register_model: the training job's result, the dataset it used, why the run started."""

    job_name: str = at("training", "job_name", log=True)
    model_data_url: str = at("training", "model_data_url")
    image: str = at("training", "image")
    dataset_version: str = at("dataset", "dataset_version")
    trigger: str = "manual"
    execution_id: str = ""


@dataclass(frozen=True)
class GateEvent:
    """gate_model: the candidate the register step made."""

    model_package_arn: str = at(log=True)


@dataclass(frozen=True)
class DecisionEvent:
    """approve_or_reject: `registry.ACTIONS` says which actions exist."""

    action: str = at(log=True)  # "approve" | "reject" | "pending"
    model_package_arn: str = at(log=True)
    gate: Mapping[str, Any] | None = None  # the gate step's result


DEPLOY_ACTIONS = ("deploy", "status", "verify")


@dataclass(frozen=True)
class DeployEvent:
    """deploy_model: ``deploy`` takes the package; ``status`` and ``verify`` the deploy
    action's result (``deployment``, with its ``endpoint_name``)."""

    action: str = at(log=True)  # one of DEPLOY_ACTIONS
    model_package_arn: str = at(default="", log=True)  # deploy
    deployment: Mapping[str, Any] = at(default_factory=dict)  # status, verify
    endpoint_name: str = at("deployment", "endpoint_name", default="", log=True)

    def __post_init__(self) -> None:
        if self.action not in DEPLOY_ACTIONS:
            raise PipelineStepError(f"unknown deploy action {self.action!r}")
        if self.action == "deploy" and not self.model_package_arn:
            raise PipelineStepError("event lacks model_package_arn")
        if self.action != "deploy" and not self.endpoint_name:
            raise PipelineStepError("event lacks deployment.endpoint_name")


# ------------------------------------------------------------------ extraction state machine


@dataclass(frozen=True)
class RunEvent:
    """stage: the extraction run whose validate_notes output is staged."""

    run_id: str = at(log=True)


@dataclass(frozen=True)
class NoEvent:
    """resolve_model: nothing of its event is read."""


@dataclass(frozen=True)
class PublishEvent:
    """publish: the run, its partition date and the transform model's artifact."""

    run_id: str = at(log=True)
    dt: str = at()
    model_data_url: str = at()


# ------------------------------------------------------------------ drift monitor

CAPTURE_SOURCE = "endpoint_capture"


@dataclass(frozen=True)
class BatchWindow:
    """drift_monitor from the extraction state machine: a run's entity files (the publish
    step's) and the model that made them."""

    run_id: str = at(log=True)
    dt: str = at()
    model_version: str = at()
    entity_keys: tuple[str, ...] = at()
    model_data_url: str | None = None  # the model artifact holding the training baseline


@dataclass(frozen=True)
class CaptureWindow:
    """drift_monitor from the capture schedule, ``{"source": "endpoint_capture"}``: the
    endpoint traffic of ``window_hours`` (default `capture.DEFAULT_WINDOW_HOURS`) up to
    ``window_end`` (ISO time: the scheduled event's time; default now)."""

    source: str = at(log=True)
    window_end: str | None = at(default=None, log=True)
    window_hours: int | None = None


def drift_window(event: edge.Event) -> BatchWindow | CaptureWindow:
    """The drift monitor's event: a capture window if its source says so, else a batch."""
    model = CaptureWindow if event.get("source") == CAPTURE_SOURCE else BatchWindow
    return edge.parse(model, event)  # type: ignore[return-value]
