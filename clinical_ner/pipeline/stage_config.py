"""Per-stage deployment settings and the data-lake key layout: the one typed config module.

Every runtime that needs a stage-dependent number imports it from here: the CDK app (bucket
retention, lifecycle, Glue worker sizing), the Lambdas (gate thresholds, drift thresholds,
approval mode) and the local runner. A stage is chosen with ``cdk synth -c stage=prod``; a few
values can be overridden from CDK context (``alarm_email``, see `CONTEXT_OVERRIDES`) or passed to
a Lambda as JSON (`StageConfig.to_json` / `StageConfig.from_json`), so a threshold is defined
once and travels with the deployment.

This module has no third-party imports: Glue, Lambda and the CDK app all import it cheaply.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Stage(StrEnum):
    DEV = "dev"
    STAGING = "staging"
    PROD = "prod"


class ApprovalMode(StrEnum):
    """How a model that passed the metric gate becomes Approved in the registry."""

    AUTO = "auto"  # the state machine approves it and deploys
    MANUAL = "manual"  # the state machine waits for a human decision (task token)


@dataclass(frozen=True)
class LakeLayout:
    """Key prefixes inside the data-lake bucket (ARCHITECTURE.md, "Data lake").

    Every prefix ends with ``/``; partitioned prefixes take ``dt=YYYY-MM-DD/`` below them.
    """

    raw_notes: str = "raw/notes/"
    raw_annotations: str = "raw/annotations/"
    curated_notes: str = "curated/notes/"
    curated_training: str = "curated/training/"
    quarantine: str = "quarantine/"
    models: str = "models/"
    inference_entities: str = "inference/entities/"
    inference_notes: str = "inference/notes/"
    monitoring: str = "monitoring/"
    experiments: str = "mlflow/"  # the MLflow tracking server's artifact store
    # Job state and run reports (not data): the validate job's processed-object ledger and
    # one JSON summary per run.
    job_state: str = "_state/"
    run_reports: str = "_runs/"
    # The validation team's workbench (docs/review.md): decisions, reviewed annotations (read
    # by training, under raw_annotations) and the validated evaluation set (never trained on:
    # outside raw_annotations on purpose).
    reviews: str = "reviews/"
    reviewed_annotations: str = "raw/annotations/reviewed/"
    validated_eval: str = "raw/validated_eval/"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not value.endswith("/") or value.startswith("/") or "//" in value:
                raise ValueError(f"lake prefix {f.name}={value!r} must be 'a/b/' shaped")

    def prefixes(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


LAKE = LakeLayout()


@dataclass(frozen=True)
class GateThresholds:
    """Policy inputs for promoting a candidate model over the production one."""

    f1_floor: float  # absolute micro-F1 (test split) a candidate must reach
    per_label_regression_tolerance: float  # max allowed per-label F1 drop vs production
    min_improvement: float = 0.0  # micro-F1 gain required over production (0 = no worse)
    # Max micro-F1 drop vs production on the validated evaluation set (the users' own notes).
    validated_eval_tolerance: float = 0.02


@dataclass(frozen=True)
class DriftThresholds:
    """Drift bands; at or above `moderate` retrains, at or above `severe` pages a human.

    `moderate`/`severe` apply to the PSI signals (note length, label mix, confidence); the other
    signals have their own bands in the same units as the signal (docs/monitoring.md,
    `clinical_ner.pipeline.monitoring`).
    """

    moderate: float
    severe: float
    min_window_notes: int = 50  # below this a window is too small to judge
    oov_increase_moderate: float = 0.02  # OOV rate, absolute increase over the reference
    oov_increase_severe: float = 0.05
    density_change_moderate: float = 0.30  # max |relative change| of entities/100 tokens
    density_change_severe: float = 0.60
    no_entity_share_moderate: float = 0.10  # |change| of the share of notes with no entity
    no_entity_share_severe: float = 0.25
    reference_min_notes: int = 200  # notes needed to establish a production reference
    retrain_cooldown_hours: int = 24  # no new drift/annotation retraining within this period


@dataclass(frozen=True)
class ServerlessEndpoint:
    memory_mb: int  # SageMaker serverless: 1024..6144 in steps of 1024
    max_concurrency: int  # 1..200
    provisioned: bool = False  # switch to a real-time instance endpoint
    instance_type: str = "ml.m5.large"
    # Share of endpoint requests SageMaker data capture writes (input + output) to
    # monitoring/capture/ for the drift monitor. SageMaker supports capture on provisioned
    # (instance) variants only; serverless variants are not captured (docs/monitoring.md).
    capture_sampling_percentage: int = 100


@dataclass(frozen=True)
class GlueSettings:
    worker_type: str  # G.1X / G.2X (Glue 5.0 Spark)
    number_of_workers: int  # >= 2 for Spark jobs
    timeout_minutes: int
    max_retries: int
    max_concurrent_runs: int = 1  # runs of one job never overlap (ledger consistency)


@dataclass(frozen=True)
class Retention:
    """How long things are kept, in days (0 = never expire)."""

    retain_on_delete: bool  # keep buckets and keys when the stack is deleted
    raw_noncurrent_days: int  # old versions of raw objects (overwrites / deletes)
    derived_noncurrent_days: int  # old versions of curated/inference/monitoring objects
    quarantine_days: int  # rejected records are kept for review, then expire
    inference_ia_after_days: int  # inference output moves to Standard-IA after this
    athena_results_days: int
    access_logs_days: int
    log_group_days: int  # CloudWatch Logs retention (Glue, Lambda)
    # Endpoint data capture (note text = PHI) under monitoring/capture/ expires after this;
    # it must outlive the monitor's window only. Never 0: capture is never kept forever.
    capture_days: int = 30


@dataclass(frozen=True)
class ReviewSettings:
    """The validation team's review loop (docs/review.md)."""

    manual_entry_minutes_per_note: float = 6.0  # measured by the team: typing one note out
    retrain_after_reviewed_notes: int = 200  # reviewed (trainable) notes per retraining
    lease_seconds: int = 900  # a claimed note returns to the queue after this
    high_confidence_threshold: float = 0.9  # a note whose lowest confidence is >= this ...
    high_confidence_sample_rate: float = 1.0  # ... is queued with this probability (by hash)
    validated_eval_fraction: float = 0.2  # hash slice of reviewed notes never trained on
    # Measured quality alarms (stacks/monitoring.py): production precision / recall over a day
    # of reviews below a floor raise the drift alarms' moderate (retrain) or severe (e-mail)
    # action, once at least `min_reviewed_notes_for_alarm` notes were reviewed that day.
    precision_moderate: float = 0.80
    precision_severe: float = 0.60
    recall_moderate: float = 0.80
    recall_severe: float = 0.60
    min_reviewed_notes_for_alarm: int = 30


@dataclass(frozen=True)
class StageConfig:
    stage: Stage
    alarm_email: str
    approval_mode: ApprovalMode
    retention: Retention
    gate: GateThresholds
    drift: DriftThresholds
    serverless: ServerlessEndpoint
    glue: GlueSettings
    lake: LakeLayout = field(default_factory=LakeLayout)
    tracking_server_size: str = "Small"  # SageMaker managed MLflow: Small / Medium / Large
    review: ReviewSettings = field(default_factory=ReviewSettings)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def resource_prefix(self) -> str:
        """Prefix for physical names that must be unique per stage (e.g. Glue jobs)."""
        return f"clinical-ner-{self.stage.value}"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StageConfig:
        raw = json.loads(text)
        return cls(
            stage=Stage(raw["stage"]),
            alarm_email=raw["alarm_email"],
            approval_mode=ApprovalMode(raw["approval_mode"]),
            retention=Retention(**raw["retention"]),
            gate=GateThresholds(**raw["gate"]),
            drift=DriftThresholds(**raw["drift"]),
            serverless=ServerlessEndpoint(**raw["serverless"]),
            glue=GlueSettings(**raw["glue"]),
            lake=LakeLayout(**raw["lake"]),
            tracking_server_size=raw.get("tracking_server_size", "Small"),
            review=ReviewSettings(**raw.get("review", {})),
        )


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_GLUE_WORKERS = {"G.1X", "G.2X", "G.4X", "G.8X"}
_TRACKING_SERVER_SIZES = {"Small", "Medium", "Large"}


def _validate(cfg: StageConfig) -> None:
    errors: list[str] = []
    if not _EMAIL.match(cfg.alarm_email):
        errors.append(f"alarm_email {cfg.alarm_email!r} is not an e-mail address")
    g = cfg.gate
    if not 0.0 < g.f1_floor <= 1.0:
        errors.append("gate.f1_floor must be in (0, 1]")
    if not 0.0 <= g.per_label_regression_tolerance < 1.0:
        errors.append("gate.per_label_regression_tolerance must be in [0, 1)")
    if not -1.0 < g.min_improvement < 1.0:
        errors.append("gate.min_improvement must be in (-1, 1)")
    if not 0.0 <= g.validated_eval_tolerance <= 1.0:
        errors.append("gate.validated_eval_tolerance must be in [0, 1]")
    d = cfg.drift
    if not 0.0 < d.moderate < d.severe:
        errors.append("drift thresholds need 0 < moderate < severe")
    if d.min_window_notes < 1:
        errors.append("drift.min_window_notes must be >= 1")
    # Every `<band>_moderate`/`<band>_severe` pair, so a new signal's band is checked too.
    fields = [f.name for f in dataclasses.fields(d)]
    for band in (n.removesuffix("_moderate") for n in fields if n.endswith("_moderate")):
        lo, hi = getattr(d, f"{band}_moderate"), getattr(d, f"{band}_severe")
        if not 0.0 < lo < hi:
            errors.append(f"drift.{band} thresholds need 0 < moderate < severe")
    if d.reference_min_notes < d.min_window_notes:
        errors.append("drift.reference_min_notes must be >= drift.min_window_notes")
    if d.retrain_cooldown_hours < 0:
        errors.append("drift.retrain_cooldown_hours must be >= 0")
    s = cfg.serverless
    if s.memory_mb not in range(1024, 6145, 1024):
        errors.append("serverless.memory_mb must be one of 1024, 2048, ..., 6144")
    if not 1 <= s.max_concurrency <= 200:
        errors.append("serverless.max_concurrency must be in 1..200")
    if not 0 <= s.capture_sampling_percentage <= 100:
        errors.append("serverless.capture_sampling_percentage must be in 0..100")
    gl = cfg.glue
    if gl.worker_type not in _GLUE_WORKERS:
        errors.append(f"glue.worker_type must be one of {sorted(_GLUE_WORKERS)}")
    if gl.number_of_workers < 2:
        errors.append("glue.number_of_workers must be >= 2 for a Spark job")
    if not 1 <= gl.timeout_minutes <= 2880:
        errors.append("glue.timeout_minutes must be in 1..2880")
    if not 0 <= gl.max_retries <= 10:
        errors.append("glue.max_retries must be in 0..10")
    if gl.max_concurrent_runs < 1:
        errors.append("glue.max_concurrent_runs must be >= 1")
    if cfg.tracking_server_size not in _TRACKING_SERVER_SIZES:
        errors.append(f"tracking_server_size must be one of {sorted(_TRACKING_SERVER_SIZES)}")
    r = cfg.retention
    for name in (
        "raw_noncurrent_days",
        "derived_noncurrent_days",
        "quarantine_days",
        "inference_ia_after_days",
        "athena_results_days",
        "access_logs_days",
    ):
        if getattr(r, name) < 0:
            errors.append(f"retention.{name} must be >= 0")
    if r.capture_days < 1:
        errors.append("retention.capture_days must be >= 1 (captured notes are PHI)")
    if 0 < r.inference_ia_after_days < 30:
        errors.append("retention.inference_ia_after_days must be 0 or >= 30 (S3 minimum)")
    if r.log_group_days not in _LOG_RETENTION_DAYS:
        errors.append(f"retention.log_group_days must be one of {sorted(_LOG_RETENTION_DAYS)}")
    rv = cfg.review
    if rv.manual_entry_minutes_per_note <= 0:
        errors.append("review.manual_entry_minutes_per_note must be > 0")
    if rv.retrain_after_reviewed_notes < 1:
        errors.append("review.retrain_after_reviewed_notes must be >= 1")
    if rv.lease_seconds < 30:
        errors.append("review.lease_seconds must be >= 30")
    if not 0.0 < rv.high_confidence_threshold <= 1.0:
        errors.append("review.high_confidence_threshold must be in (0, 1]")
    if not 0.0 <= rv.high_confidence_sample_rate <= 1.0:
        errors.append("review.high_confidence_sample_rate must be in [0, 1]")
    if not 0.0 < rv.validated_eval_fraction < 1.0:
        errors.append("review.validated_eval_fraction must be in (0, 1)")
    for kpi in ("precision", "recall"):  # floors: severe below moderate
        lo, hi = getattr(rv, f"{kpi}_severe"), getattr(rv, f"{kpi}_moderate")
        if not 0.0 < lo < hi <= 1.0:
            errors.append(f"review.{kpi} floors need 0 < severe < moderate <= 1")
    if rv.min_reviewed_notes_for_alarm < 1:
        errors.append("review.min_reviewed_notes_for_alarm must be >= 1")
    if errors:
        raise ValueError(f"invalid config for stage {cfg.stage.value}: " + "; ".join(errors))


# CloudWatch Logs accepts only these retention periods.
_LOG_RETENTION_DAYS = {
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
    2922, 3288, 3653,
}  # fmt: skip

_DEFAULT_EMAIL = "mlops-alerts@example.com"

_STAGES: dict[Stage, StageConfig] = {
    Stage.DEV: StageConfig(
        stage=Stage.DEV,
        alarm_email=_DEFAULT_EMAIL,
        approval_mode=ApprovalMode.AUTO,
        retention=Retention(
            retain_on_delete=False,
            raw_noncurrent_days=30,
            derived_noncurrent_days=7,
            quarantine_days=30,
            inference_ia_after_days=0,
            athena_results_days=7,
            access_logs_days=90,
            log_group_days=30,
            capture_days=7,
        ),
        gate=GateThresholds(f1_floor=0.50, per_label_regression_tolerance=0.05),
        drift=DriftThresholds(moderate=0.10, severe=0.25, min_window_notes=20),
        serverless=ServerlessEndpoint(memory_mb=3072, max_concurrency=2),
        glue=GlueSettings(
            worker_type="G.1X", number_of_workers=2, timeout_minutes=60, max_retries=0
        ),
    ),
    Stage.STAGING: StageConfig(
        stage=Stage.STAGING,
        alarm_email=_DEFAULT_EMAIL,
        approval_mode=ApprovalMode.AUTO,
        retention=Retention(
            retain_on_delete=True,
            raw_noncurrent_days=90,
            derived_noncurrent_days=30,
            quarantine_days=90,
            inference_ia_after_days=90,
            athena_results_days=30,
            access_logs_days=365,
            log_group_days=90,
            capture_days=14,
        ),
        gate=GateThresholds(f1_floor=0.60, per_label_regression_tolerance=0.03),
        drift=DriftThresholds(moderate=0.10, severe=0.25),
        serverless=ServerlessEndpoint(memory_mb=4096, max_concurrency=5),
        glue=GlueSettings(
            worker_type="G.1X", number_of_workers=2, timeout_minutes=120, max_retries=1
        ),
    ),
    Stage.PROD: StageConfig(
        stage=Stage.PROD,
        alarm_email=_DEFAULT_EMAIL,
        approval_mode=ApprovalMode.MANUAL,
        retention=Retention(
            retain_on_delete=True,
            # HIPAA documentation retention is six years; raw PHI versions follow it.
            raw_noncurrent_days=2192,
            derived_noncurrent_days=90,
            quarantine_days=365,
            inference_ia_after_days=90,
            athena_results_days=30,
            access_logs_days=2192,
            log_group_days=2192,
            capture_days=30,
        ),
        gate=GateThresholds(f1_floor=0.65, per_label_regression_tolerance=0.02),
        drift=DriftThresholds(moderate=0.10, severe=0.25),
        serverless=ServerlessEndpoint(
            memory_mb=6144, max_concurrency=20, capture_sampling_percentage=20
        ),
        glue=GlueSettings(
            worker_type="G.1X", number_of_workers=4, timeout_minutes=180, max_retries=1
        ),
        # Production volume: a fifth of the confident notes is enough to measure them.
        review=ReviewSettings(high_confidence_sample_rate=0.2),
    ),
}

# Context keys (``cdk synth -c key=value`` or cdk.json "context") that override a stage value.
CONTEXT_OVERRIDES = ("alarm_email", "approval_mode")


def stage_names() -> list[str]:
    return [s.value for s in Stage]


def load_stage_config(
    stage: str | None = None, overrides: Mapping[str, Any] | None = None
) -> StageConfig:
    """The settings of `stage` (default dev) with CDK-context overrides applied and validated."""
    name = (stage or Stage.DEV.value).strip().lower()
    try:
        key = Stage(name)
    except ValueError:
        raise ValueError(f"unknown stage {stage!r}; expected one of {stage_names()}") from None
    cfg = _STAGES[key]
    changes: dict[str, Any] = {}
    for k, v in (overrides or {}).items():
        if v is None or v == "":
            continue
        if k == "alarm_email":
            changes[k] = str(v)
        elif k == "approval_mode":
            changes[k] = ApprovalMode(str(v).lower())
        else:
            raise ValueError(f"unknown override {k!r}; allowed: {list(CONTEXT_OVERRIDES)}")
    return dataclasses.replace(cfg, **changes) if changes else cfg
