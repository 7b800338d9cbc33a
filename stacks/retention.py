"""What a stage's stateful resources (keys, buckets, log groups, registry) do on stack deletion."""

from __future__ import annotations

from aws_cdk import RemovalPolicy

from clinical_ner.pipeline.stage_config import StageConfig


def removal_policy(config: StageConfig) -> RemovalPolicy:
    """RETAIN where the stage keeps data after ``cdk destroy`` (staging, prod), else DESTROY."""
    return RemovalPolicy.RETAIN if config.retention.retain_on_delete else RemovalPolicy.DESTROY
