"""Extraction steps around SageMaker Batch Transform (thin: event -> clinical_ner -> result).

Three entry points of one code bundle, deployed as three functions with their own roles:

- ``stage``: the validate_notes run's curated notes -> transform input JSON Lines.
- ``resolve_model``: newest Approved model package -> SageMaker Model for the transform.
- ``handler`` (publish): transform output + curated notes -> entities/notes Parquet, with
  the label set of the transform model (``model_data_url``, the model's metrics.json).

Events: `clinical_ner.runtime.lambda_events` (RunEvent, NoEvent, PublishEvent).

Environment: LAKE_BUCKET, STAGE, JOB_PREFIX, MODEL_PACKAGE_GROUP, TRANSFORM_ROLE_ARN,
MODEL_PREFIX, SUBNET_IDS and SECURITY_GROUP_IDS (comma-separated; the transform model's VPC,
optional), REVIEW_TABLE (publish: queue the notes for review, docs/review.md; optional, absent
= no review loop). Never logs note text.
"""

from __future__ import annotations

import os
from typing import Any

from clinical_ner.pipeline.aws_runtime import client
from clinical_ner.pipeline.stage_config import load_stage_config
from clinical_ner.runtime import extraction_steps as steps
from clinical_ner.runtime import lambda_edge as edge
from clinical_ner.runtime.lambda_events import NoEvent, PublishEvent, RunEvent


@edge.step("stage_transform_input", RunEvent)
def stage(event: RunEvent) -> dict[str, Any]:
    return steps.stage_transform_input(
        client("s3"),
        client("cloudwatch"),
        bucket=os.environ["LAKE_BUCKET"],
        run_id=event.run_id,
        stage=os.environ["STAGE"],
        job_prefix=os.environ["JOB_PREFIX"],
    )


@edge.step("resolve_transform_model", NoEvent)
def resolve_model(_event: NoEvent) -> dict[str, Any]:
    subnets = [s for s in os.environ.get("SUBNET_IDS", "").split(",") if s]
    groups = [g for g in os.environ.get("SECURITY_GROUP_IDS", "").split(",") if g]
    return steps.resolve_transform_model(
        client("sagemaker"),
        group_name=os.environ["MODEL_PACKAGE_GROUP"],
        execution_role_arn=os.environ["TRANSFORM_ROLE_ARN"],
        model_prefix=os.environ["MODEL_PREFIX"],
        vpc_config={"Subnets": subnets, "SecurityGroupIds": groups} if subnets else None,
    )


@edge.step("publish_extractions", PublishEvent)
def handler(event: PublishEvent) -> dict[str, Any]:
    review_table = os.environ.get("REVIEW_TABLE") or None
    return steps.publish_extractions(
        client("s3"),
        client("cloudwatch"),
        bucket=os.environ["LAKE_BUCKET"],
        run_id=event.run_id,
        dt=event.dt,
        stage=os.environ["STAGE"],
        model_data_url=event.model_data_url,
        ddb=client("dynamodb") if review_table else None,
        review_table=review_table,
        review=load_stage_config(os.environ["STAGE"]).review if review_table else None,
    )
