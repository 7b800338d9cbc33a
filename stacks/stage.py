"""Assemble one deployment stage (dev/staging/prod) of the system into a CDK app.

`app.py` and the infrastructure tests both build the app through `build_app`, so the tests
check exactly what ``cdk synth`` produces. Later stacks (training, serving, monitoring,
analytics) are added to `StageStacks` here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import App, Aspects, Environment, Tags

from clinical_ner.pipeline.stage_config import CONTEXT_OVERRIDES, StageConfig, load_stage_config
from stacks.analytics import AnalyticsStack
from stacks.aspects import StageConventions
from stacks.checks import add_compliance_checks
from stacks.data_lake import DataLakeStack
from stacks.data_prep import DataPrepStack
from stacks.extraction import ExtractionStack
from stacks.monitoring import MonitoringStack
from stacks.review import ReviewStack
from stacks.serving import ServingStack
from stacks.training import TrainingStack

REPO_ROOT = Path(__file__).resolve().parent.parent
PROJECT_TAG = "clinical-ner"


@dataclass(frozen=True)
class StageStacks:
    config: StageConfig
    data_lake: DataLakeStack
    data_prep: DataPrepStack
    training: TrainingStack
    serving: ServingStack
    analytics: AnalyticsStack
    monitoring: MonitoringStack
    extraction: ExtractionStack
    review: ReviewStack

    def all(self) -> list[Any]:
        return [
            self.data_lake,
            self.data_prep,
            self.training,
            self.serving,
            self.analytics,
            self.monitoring,
            self.extraction,
            self.review,
        ]


def cdk_json_context() -> dict[str, Any]:
    """The "context" block of cdk.json (feature flags and defaults), for apps built in tests."""
    return dict(json.loads((REPO_ROOT / "cdk.json").read_text())["context"])


def config_from_context(app: App) -> StageConfig:
    stage = app.node.try_get_context("stage")
    overrides = {k: app.node.try_get_context(k) for k in CONTEXT_OVERRIDES}
    return load_stage_config(stage, overrides)


def _environment() -> Environment | None:
    account = os.environ.get("CDK_DEPLOY_ACCOUNT") or os.environ.get("CDK_DEFAULT_ACCOUNT")
    region = os.environ.get("CDK_DEPLOY_REGION") or os.environ.get("CDK_DEFAULT_REGION")
    if account and region:
        return Environment(account=account, region=region)
    return None  # environment-agnostic: synthesizes offline without credentials


def build_app(app: App, config: StageConfig | None = None) -> StageStacks:
    """Add the stage's stacks to `app` and register the compliance checks on it."""
    config = config or config_from_context(app)
    env = _environment()
    name = f"ClinicalNer-{config.stage.value.capitalize()}"
    data_lake = DataLakeStack(
        app,
        f"{name}-DataLake",
        config=config,
        env=env,
        description=f"Clinical NER {config.stage.value}: KMS key, data lake, Athena results, logs",
    )
    data_prep = DataPrepStack(
        app,
        f"{name}-DataPrep",
        config=config,
        data_lake=data_lake,
        env=env,
        description=f"Clinical NER {config.stage.value}: Glue data-prep jobs and catalog",
    )
    data_prep.add_stack_dependency(data_lake)
    training = TrainingStack(
        app,
        f"{name}-Training",
        config=config,
        data_lake=data_lake,
        data_prep=data_prep,
        env=env,
        description=f"Clinical NER {config.stage.value}: retraining state machine and registry",
    )
    training.add_stack_dependency(data_prep)
    serving = ServingStack(
        app,
        f"{name}-Serving",
        config=config,
        data_lake=data_lake,
        training=training,
        env=env,
        description=f"Clinical NER {config.stage.value}: endpoint role, deploy grants, alarms",
    )
    serving.add_stack_dependency(training)
    stage_label = config.stage.value
    analytics = AnalyticsStack(
        app,
        f"{name}-Analytics",
        config=config,
        data_lake=data_lake,
        data_prep=data_prep,
        env=env,
        description=f"Clinical NER {stage_label}: Athena workgroup, tables and named queries",
    )
    analytics.add_stack_dependency(data_prep)
    monitoring = MonitoringStack(
        app,
        f"{name}-Monitoring",
        config=config,
        data_lake=data_lake,
        training_state_machine=training.state_machine,
        env=env,
        description=f"Clinical NER {stage_label}: drift alarms, retraining trigger, dashboard",
    )
    monitoring.add_stack_dependency(training)
    review = ReviewStack(
        app,
        f"{name}-Review",
        config=config,
        data_lake=data_lake,
        training=training,
        env=env,
        description=f"Clinical NER {stage_label}: review workbench (queue, API, sign-in)",
    )
    review.add_stack_dependency(monitoring)  # the retraining trigger it invokes by name
    extraction = ExtractionStack(
        app,
        f"{name}-Extraction",
        config=config,
        data_lake=data_lake,
        data_prep=data_prep,
        training=training,
        monitoring=monitoring,
        review=review,  # publish enqueues notes in its table
        env=env,
        description=f"Clinical NER {stage_label}: extraction state machine (S3 -> Parquet)",
    )
    extraction.add_stack_dependency(monitoring)
    stacks = StageStacks(
        config, data_lake, data_prep, training, serving, analytics, monitoring, extraction, review
    )
    for stack in stacks.all():
        Tags.of(stack).add("project", PROJECT_TAG)
        Tags.of(stack).add("stage", config.stage.value)
        Tags.of(stack).add("data-classification", "phi")
    add_compliance_checks(app)
    Aspects.of(app).add(StageConventions())
    return stacks
