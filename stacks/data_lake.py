"""The data lake: one KMS key, the lake bucket (prefix layout), Athena results, access logs.

Layout decision (docs/infrastructure.md): one lake bucket holds every prefix of
ARCHITECTURE.md (``raw/``, ``curated/``, ``quarantine/``, ``models/``, ``inference/``,
``monitoring/``) so the key layout in `pipeline.stage_config.LAKE` is the single contract
every runtime uses; IAM is scoped per prefix and lifecycle rules per prefix. Athena query
results and S3 server access logs live in their own buckets because their retention, and for
logs the encryption (S3 log delivery cannot use SSE-KMS), differ from the lake's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aws_cdk import CfnOutput, Duration, Fn, Stack
from aws_cdk import aws_s3 as s3
from constructs import Construct, IConstruct

from clinical_ner.pipeline.stage_config import StageConfig
from clinical_ner.runtime.capture import capture_prefix
from stacks.checks import acknowledge
from stacks.common import stage_key
from stacks.retention import removal_policy

ABORT_INCOMPLETE_UPLOADS_DAYS = 7


class DataLakeStack(Stack):
    """Exposes `key`, `lake` (bucket), `athena_results`, `access_logs` and `layout`."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: StageConfig, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.layout = config.lake
        r = config.retention
        removal = removal_policy(config)

        # CloudWatch Logs encrypts the Glue jobs' log groups (Glue security configuration) and
        # the Lambda log groups of the extraction and monitoring stacks with this key.
        self.key = stage_key(
            self,
            "DataKey",
            config=config,
            alias=f"alias/{config.resource_prefix}-data",
            description=f"Clinical NER {config.stage.value}: lake, Athena results, Glue logs",
            cloudwatch_logs=True,
        )

        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            # S3 server access log delivery supports only SSE-S3 on the target bucket.
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=True,
            removal_policy=removal,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs",
                    expiration=_days(r.access_logs_days),
                    noncurrent_version_expiration=Duration.days(1),
                    abort_incomplete_multipart_upload_after=Duration.days(
                        ABORT_INCOMPLETE_UPLOADS_DAYS
                    ),
                )
            ],
        )
        acknowledge(
            self.access_logs,
            "AwsSolutions-S1",
            "This bucket is the server-access-log target of the lake and Athena buckets; "
            "logging it into itself would create an endless log-of-log loop.",
        )
        acknowledge(
            self.access_logs,
            "HIPAA.Security-S3BucketLoggingEnabled",
            "This bucket is the server-access-log target of the lake and Athena buckets; "
            "logging it into itself would create an endless log-of-log loop.",
        )
        acknowledge(
            self.access_logs,
            "HIPAA.Security-S3DefaultEncryptionKMS",
            "S3 server access log delivery only writes to targets encrypted with SSE-S3 "
            "(AES256); SSE-KMS default encryption would make delivery fail. Access logs hold "
            "request metadata (keys, requesters), never object content.",
        )
        _ack_replication(self.access_logs, "server access logs")

        self.lake = s3.Bucket(
            self,
            "Lake",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=True,  # raw/ must be recoverable; derived prefixes expire old versions
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="lake/",
            removal_policy=removal,
            lifecycle_rules=self._lake_lifecycle(config),
        )
        _ack_replication(self.lake, "the data lake")
        # EventBridge delivery of every object event, set natively on AWS::S3::Bucket rather
        # than with `event_bridge_enabled=True`, which adds a custom-resource Lambda (with an
        # AWS-managed policy and an inline policy) only to flip this same switch. Consumers
        # subscribe with EventBridge rules; do not call `add_event_notification` on this bucket.
        cfn_lake = self.lake.node.default_child
        assert isinstance(cfn_lake, s3.CfnBucket)
        cfn_lake.notification_configuration = s3.CfnBucket.NotificationConfigurationProperty(
            event_bridge_configuration=s3.CfnBucket.EventBridgeConfigurationProperty(
                event_bridge_enabled=True
            )
        )
        # A named export of the lake ARN: consumer stacks build prefix ARNs from it, and the
        # stable name keeps their cdk-nag acknowledgement ids stable too (`lake_arn_ref`).
        self.lake_arn_export = f"{self.stack_name}-LakeBucketArn"
        CfnOutput(
            self,
            "LakeBucketArn",
            value=self.lake.bucket_arn,
            export_name=self.lake_arn_export,
            description="ARN of the data-lake bucket",
        )

        self.athena_results = s3.Bucket(
            self,
            "AthenaResults",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="athena-results/",
            removal_policy=removal,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-query-results",
                    expiration=_days(r.athena_results_days),
                    noncurrent_version_expiration=Duration.days(1),
                    abort_incomplete_multipart_upload_after=Duration.days(
                        ABORT_INCOMPLETE_UPLOADS_DAYS
                    ),
                )
            ],
        )
        _ack_replication(self.athena_results, "Athena query results")

    def lake_arn_ref(self) -> str:
        """The lake bucket ARN for use in another stack (an import of the named export)."""
        return Fn.import_value(self.lake_arn_export)

    def lake_object_arn(self, prefix: str) -> str:
        """ARN pattern of every object under `prefix`, for policies in consumer stacks."""
        return f"{self.lake_arn_ref()}/{prefix}*"

    def nag_object_resource(self, prefix: str) -> str:
        """How cdk-nag names `lake_object_arn(prefix)` in an AwsSolutions-IAM5 finding."""
        return f"{self.lake_arn_export}/{prefix}*"

    def acknowledge_prefixes(self, policy: IConstruct, prefixes: Iterable[str], why: str) -> None:
        """Acknowledge the AwsSolutions-IAM5 wildcard of `lake_object_arn(p)` for each prefix."""
        for p in prefixes:
            acknowledge(policy, f"AwsSolutions-IAM5[Resource::{self.nag_object_resource(p)}]", why)

    def _lake_lifecycle(self, config: StageConfig) -> list[s3.LifecycleRule]:
        r, lake = config.retention, config.lake
        rules = [
            s3.LifecycleRule(
                id="abort-incomplete-uploads",
                abort_incomplete_multipart_upload_after=Duration.days(
                    ABORT_INCOMPLETE_UPLOADS_DAYS
                ),
                expired_object_delete_marker=True,
            ),
            s3.LifecycleRule(
                id="raw-noncurrent-versions",
                prefix="raw/",
                noncurrent_version_expiration=_days(r.raw_noncurrent_days),
            ),
            s3.LifecycleRule(
                id="quarantine-expiry",
                prefix=lake.quarantine,
                expiration=_days(r.quarantine_days),
                noncurrent_version_expiration=Duration.days(1),
            ),
            # SageMaker endpoint data capture holds note text (PHI): it is kept only as long
            # as the drift monitor needs it (never forever: capture_days >= 1).
            s3.LifecycleRule(
                id="capture-expiry",
                prefix=capture_prefix(lake.monitoring),
                expiration=Duration.days(r.capture_days),
                noncurrent_version_expiration=Duration.days(1),
            ),
        ]
        for name, prefix in (
            ("curated", "curated/"),
            ("models", lake.models),
            ("monitoring", lake.monitoring),
            ("experiments", lake.experiments),
            ("job-state", lake.job_state),
            ("run-reports", lake.run_reports),
        ):
            rules.append(
                s3.LifecycleRule(
                    id=f"{name}-noncurrent-versions",
                    prefix=prefix,
                    noncurrent_version_expiration=_days(r.derived_noncurrent_days),
                )
            )
        transitions = []
        if r.inference_ia_after_days:
            transitions.append(
                s3.Transition(
                    storage_class=s3.StorageClass.INFREQUENT_ACCESS,
                    transition_after=Duration.days(r.inference_ia_after_days),
                )
            )
        rules.append(
            s3.LifecycleRule(
                id="inference-tiering",
                prefix="inference/",
                transitions=transitions or None,
                noncurrent_version_expiration=_days(r.derived_noncurrent_days),
            )
        )
        return [rule for rule in rules if _has_action(rule)]


def _has_action(rule: s3.LifecycleRule) -> bool:
    """A rule whose every period is 0 (= keep forever) has no action and must be left out."""
    return any(
        getattr(rule, name) not in (None, [], False)
        for name in (
            "abort_incomplete_multipart_upload_after",
            "expiration",
            "expired_object_delete_marker",
            "noncurrent_version_expiration",
            "transitions",
        )
    )


def _days(n: int) -> Duration | None:
    return Duration.days(n) if n > 0 else None


def _ack_replication(bucket: s3.Bucket, what: str) -> None:
    acknowledge(
        bucket,
        "HIPAA.Security-S3BucketReplicationEnabled",
        f"Bucket for {what} is single-region by decision: the deployment targets one region "
        "and cross-region replication of PHI needs a second KMS key and a data-residency "
        "review first. Durability comes from S3 (11 nines) plus versioning; see "
        "docs/infrastructure.md.",
    )
