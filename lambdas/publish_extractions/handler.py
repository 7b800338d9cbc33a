"""Extraction steps around SageMaker Batch Transform (thin: event -> clinical_ner -> result).

Three entry points of one code bundle, deployed as three functions with their own roles:

- ``stage``: the validate_notes run's curated notes -> transform input JSON Lines.
- ``resolve_model``: newest Approved model package -> SageMaker Model for the transform.
- ``handler`` (publish): transform output + curated notes -> entities/notes Parquet, with
  the label set of the transform model (event ``model_data_url``, the model's metrics.json).

Environment: LAKE_BUCKET, STAGE, JOB_PREFIX, MODEL_PACKAGE_GROUP, TRANSFORM_ROLE_ARN,
MODEL_PREFIX, SUBNET_IDS and SECURITY_GROUP_IDS (comma-separated; the transform model's VPC,
optional). Never logs note text.
"""

from __future__ import annotations

import os
from typing import Any

from clinical_ner.pipeline.aws_runtime import client, require, run_step
from clinical_ner.runtime import extraction_steps as steps


def stage(event: dict[str, Any], _context: Any = None) -> dict[str, Any]:
    run_id = require(event, "run_id")
    return run_step(
        "stage_transform_input",
        lambda: steps.stage_transform_input(
            client("s3"),
            client("cloudwatch"),
            bucket=os.environ["LAKE_BUCKET"],
            run_id=run_id,
            stage=os.environ["STAGE"],
            job_prefix=os.environ["JOB_PREFIX"],
        ),
        run_id=run_id,
    )


def resolve_model(event: dict[str, Any], _context: Any = None) -> dict[str, Any]:
    subnets = [s for s in os.environ.get("SUBNET_IDS", "").split(",") if s]
    groups = [g for g in os.environ.get("SECURITY_GROUP_IDS", "").split(",") if g]
    vpc = {"Subnets": subnets, "SecurityGroupIds": groups} if subnets else None
    return run_step(
        "resolve_transform_model",
        lambda: steps.resolve_transform_model(
            client("sagemaker"),
            group_name=os.environ["MODEL_PACKAGE_GROUP"],
            execution_role_arn=os.environ["TRANSFORM_ROLE_ARN"],
            model_prefix=os.environ["MODEL_PREFIX"],
            vpc_config=vpc,
        ),
    )


def handler(event: dict[str, Any], _context: Any = None) -> dict[str, Any]:
    run_id, dt = require(event, "run_id"), require(event, "dt")
    model_data_url = require(event, "model_data_url")
    return run_step(
        "publish_extractions",
        lambda: steps.publish_extractions(
            client("s3"),
            client("cloudwatch"),
            bucket=os.environ["LAKE_BUCKET"],
            run_id=run_id,
            dt=dt,
            stage=os.environ["STAGE"],
            model_data_url=model_data_url,
        ),
        run_id=run_id,
    )
