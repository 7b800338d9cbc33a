"""Data-prep stack: the two Glue 5.0 jobs, their roles, security configuration and catalog.

Jobs (scripts in ``glue_jobs/``, logic in `clinical_ner.data.data_prep`):

- ``<prefix>-validate-notes``: raw/notes -> curated/notes/dt=... + quarantine/dt=... + summary.
- ``<prefix>-prepare-training-data``: raw/annotations -> curated/training/<dataset_version>/.

The core package ships as a content-addressed zip asset passed with ``--extra-py-files``
(`stacks.packaging`). Each job has its own role with one customer-managed policy that names
exactly the lake prefixes the job reads and writes. A Glue security configuration encrypts
S3 output (SSE-KMS), CloudWatch logs and bookmarks with the lake key. The Glue database holds
the curated_notes and quarantine tables (partition projection on ``dt``, so no crawler).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from clinical_ner.data import data_prep as dp
from clinical_ner.data.schemas import QUARANTINE_SCHEMA
from clinical_ner.pipeline.stage_config import StageConfig
from stacks.checks import acknowledge
from stacks.common import encrypted_log_group
from stacks.data_lake import DataLakeStack
from stacks.glue_tables import partitioned_parquet_table
from stacks.iam_roles import service_role
from stacks.packaging import REPO_ROOT, build_core_zip
from stacks.retention import removal_policy

GLUE_VERSION = "5.0"  # Spark 3.5.4, Python 3.11, Java 17


@dataclass(frozen=True)
class JobSpec:
    name: str  # script name in glue_jobs/ (without .py) and the job-name suffix
    description: str
    list_prefixes: tuple[str, ...]  # prefixes the job may list
    read_prefixes: tuple[str, ...]
    write_prefixes: tuple[str, ...]
    delete_prefixes: tuple[str, ...]
    extra_args: tuple[tuple[str, str], ...] = ()


class DataPrepStack(Stack):
    """Exposes `jobs` (name -> CfnJob), `roles`, `database_name`, `security_configuration`."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        data_lake: DataLakeStack,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        lake = config.lake
        bucket, key = data_lake.lake, data_lake.key
        removal = removal_policy(config)
        self.bucket_name = bucket.bucket_name

        self.core_package = s3_assets.Asset(
            self, "CorePackage", path=str(build_core_zip()), display_name="clinical_ner core zip"
        )
        self.security_configuration = glue.CfnSecurityConfiguration(
            self,
            "SecurityConfiguration",
            name=f"{config.resource_prefix}-data-prep",
            encryption_configuration=glue.CfnSecurityConfiguration.EncryptionConfigurationProperty(
                s3_encryptions=[
                    glue.CfnSecurityConfiguration.S3EncryptionProperty(
                        s3_encryption_mode="SSE-KMS", kms_key_arn=key.key_arn
                    )
                ],
                cloud_watch_encryption=glue.CfnSecurityConfiguration.CloudWatchEncryptionProperty(
                    cloud_watch_encryption_mode="SSE-KMS", kms_key_arn=key.key_arn
                ),
                job_bookmarks_encryption=glue.CfnSecurityConfiguration.JobBookmarksEncryptionProperty(
                    job_bookmarks_encryption_mode="CSE-KMS", kms_key_arn=key.key_arn
                ),
            ),
        )

        self.database_name = f"clinical_ner_{config.stage.value}"
        self.database = glue.CfnDatabase(
            self,
            "Database",
            catalog_id=self.account,
            database_input=glue.CfnDatabase.DatabaseInputProperty(
                name=self.database_name,
                description="Clinical NER curated data (validated notes, quarantine)",
                location_uri=f"s3://{bucket.bucket_name}/curated/",
            ),
        )
        self.tables = {
            "curated_notes": self._table(
                "CuratedNotesTable",
                "curated_notes",
                dp.CURATED_NOTE_SCHEMA,
                f"s3://{bucket.bucket_name}/{lake.curated_notes}",
                "Validated, normalised notes written by the validate_notes job. PHI.",
            ),
            "quarantine": self._table(
                "QuarantineTable",
                "quarantine",
                QUARANTINE_SCHEMA,
                f"s3://{bucket.bucket_name}/{lake.quarantine}",
                "Every record the validate_notes job rejected, with a reason code.",
            ),
        }

        temp = f"{lake.job_state}glue-temp/"
        specs = [
            JobSpec(
                name=dp.VALIDATE_JOB,
                description="Validate and normalise raw notes into curated/notes and quarantine",
                list_prefixes=(
                    lake.raw_notes,
                    lake.curated_notes,
                    lake.quarantine,
                    f"{lake.job_state}{dp.VALIDATE_JOB}/",
                    f"{lake.run_reports}{dp.VALIDATE_JOB}/",
                    f"{temp}{dp.VALIDATE_JOB}/",
                ),
                read_prefixes=(
                    lake.raw_notes,
                    lake.curated_notes,
                    lake.quarantine,
                    f"{lake.job_state}{dp.VALIDATE_JOB}/",
                    f"{temp}{dp.VALIDATE_JOB}/",
                ),
                write_prefixes=(
                    lake.curated_notes,
                    lake.quarantine,
                    f"{lake.job_state}{dp.VALIDATE_JOB}/",
                    f"{lake.run_reports}{dp.VALIDATE_JOB}/",
                    f"{temp}{dp.VALIDATE_JOB}/",
                ),
                # Spark's output committer removes its _temporary markers under the outputs.
                delete_prefixes=(
                    lake.curated_notes,
                    lake.quarantine,
                    f"{lake.job_state}{dp.VALIDATE_JOB}/",
                    f"{temp}{dp.VALIDATE_JOB}/",
                ),
            ),
            JobSpec(
                name=dp.PREPARE_JOB,
                description="Build a versioned train/dev/test dataset from raw/annotations",
                list_prefixes=(
                    lake.raw_annotations,
                    lake.curated_training,
                    f"{lake.run_reports}{dp.PREPARE_JOB}/",
                    f"{temp}{dp.PREPARE_JOB}/",
                ),
                read_prefixes=(
                    lake.raw_annotations,
                    lake.curated_training,
                    f"{temp}{dp.PREPARE_JOB}/",
                ),
                write_prefixes=(
                    lake.curated_training,
                    f"{lake.run_reports}{dp.PREPARE_JOB}/",
                    f"{temp}{dp.PREPARE_JOB}/",
                ),
                # Datasets are immutable: this role cannot delete under curated/training/.
                delete_prefixes=(f"{temp}{dp.PREPARE_JOB}/",),
            ),
        ]
        self.jobs: dict[str, glue.CfnJob] = {}
        self.roles: dict[str, iam.Role] = {}
        self.policies: dict[str, iam.ManagedPolicy] = {}
        self.log_groups: dict[str, logs.LogGroup] = {}
        for spec in specs:
            self._job(spec, data_lake, removal)

    # ------------------------------------------------------------------ catalog

    def _table(
        self, cid: str, name: str, schema: pa.Schema, location: str, description: str
    ) -> glue.CfnTable:
        table = partitioned_parquet_table(
            self,
            cid,
            catalog_id=self.account,
            database_name=self.database_name,
            name=name,
            description=description,
            schema=schema,
            location=location,
        )
        table.add_resource_dependency(self.database)
        return table

    # ------------------------------------------------------------------ jobs

    def _job(self, spec: JobSpec, data_lake: DataLakeStack, removal: RemovalPolicy) -> None:
        cfg = self.config
        bucket, key = data_lake.lake, data_lake.key
        title = "".join(p.capitalize() for p in spec.name.split("_"))
        job_name = f"{cfg.resource_prefix}-{spec.name.replace('_', '-')}"
        script = s3_assets.Asset(
            self,
            f"{title}Script",
            path=str(REPO_ROOT / "glue_jobs" / f"{spec.name}.py"),
            display_name=f"{spec.name} Glue script",
        )
        log_group = encrypted_log_group(
            self, f"{title}Logs", name=f"/aws-glue/jobs/{job_name}", key=key, config=cfg
        )

        objects = data_lake.lake_object_arn
        statements = [
            iam.PolicyStatement(
                sid="ListOwnPrefixes",
                actions=["s3:ListBucket"],
                resources=[data_lake.lake_arn_ref()],
                conditions={
                    "StringLike": {
                        "s3:prefix": sorted(
                            {v for p in spec.list_prefixes for v in (p, p + "*", p.rstrip("/"))}
                        )
                    }
                },
            ),
            iam.PolicyStatement(
                sid="ReadInputs",
                actions=["s3:GetObject"],
                resources=[objects(p) for p in spec.read_prefixes],
            ),
            iam.PolicyStatement(
                sid="WriteOutputs",
                actions=["s3:PutObject"],
                resources=[objects(p) for p in spec.write_prefixes],
            ),
            iam.PolicyStatement(
                sid="DeleteSparkTemporaries",
                actions=["s3:DeleteObject"],
                resources=[objects(p) for p in spec.delete_prefixes],
            ),
            iam.PolicyStatement(
                sid="ReadJobCode",
                actions=["s3:GetObject"],
                resources=[
                    script.bucket.arn_for_objects(script.s3_object_key),
                    self.core_package.bucket.arn_for_objects(self.core_package.s3_object_key),
                ],
            ),
            iam.PolicyStatement(
                sid="UseLakeKey",
                actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
                resources=[key.key_arn],
            ),
            iam.PolicyStatement(
                sid="WriteGlueJobLogs",
                actions=[
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                    "logs:AssociateKmsKey",
                ],
                resources=[
                    f"arn:{self.partition}:logs:{self.region}:{self.account}"
                    ":log-group:/aws-glue/jobs/*"
                ],
            ),
            iam.PolicyStatement(
                sid="PublishGlueJobMetrics",
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": "Glue"}},
            ),
        ]
        role, policy = service_role(
            self,
            title,
            service="glue.amazonaws.com",
            role_description=f"Glue job {job_name}: only the lake prefixes it reads and writes",
            policy_description=f"Least-privilege access of Glue job {job_name}",
            statements=statements,
        )
        self._acknowledge_policy(policy, spec, data_lake)

        args = {
            "--job-language": "python",
            "--lake_root": f"s3://{bucket.bucket_name}",
            "--extra-py-files": self.core_package.s3_object_url,
            "--TempDir": f"s3://{bucket.bucket_name}/{cfg.lake.job_state}glue-temp/{spec.name}/",
            # Each object is processed once through the job's own ledger (validate_notes) or
            # content-hash versioning (prepare_training_data); Glue bookmarks only track
            # DynamicFrame sources, which these byte-level readers do not use.
            "--job-bookmark-option": "job-bookmark-disable",
            "--enable-metrics": "true",
            "--enable-continuous-cloudwatch-log": "true",
            "--continuous-log-logGroup": log_group.log_group_name,
            "--enable-spark-ui": "false",
            "--enable-glue-datacatalog": "false",
            **dict(spec.extra_args),
        }
        job = glue.CfnJob(
            self,
            f"{title}Job",
            name=job_name,
            description=spec.description,
            role=role.role_arn,
            glue_version=GLUE_VERSION,
            command=glue.CfnJob.JobCommandProperty(
                name="glueetl", python_version="3", script_location=script.s3_object_url
            ),
            default_arguments=args,
            worker_type=cfg.glue.worker_type,
            number_of_workers=cfg.glue.number_of_workers,
            timeout=cfg.glue.timeout_minutes,
            max_retries=cfg.glue.max_retries,
            execution_property=glue.CfnJob.ExecutionPropertyProperty(
                max_concurrent_runs=cfg.glue.max_concurrent_runs
            ),
            security_configuration=self.security_configuration.name,
        )
        job.add_resource_dependency(self.security_configuration)
        job.node.add_dependency(policy)
        self.jobs[spec.name] = job
        self.roles[spec.name] = role
        self.policies[spec.name] = policy
        self.log_groups[spec.name] = log_group

    def _acknowledge_policy(
        self, policy: iam.ManagedPolicy, spec: JobSpec, data_lake: DataLakeStack
    ) -> None:
        for prefix in sorted(
            set(spec.read_prefixes) | set(spec.write_prefixes) | set(spec.delete_prefixes)
        ):
            acknowledge(
                policy,
                f"AwsSolutions-IAM5[Resource::{data_lake.nag_object_resource(prefix)}]",
                f"Glue job {spec.name} reads or writes objects whose keys are generated at run "
                f"time (partition dates, Spark part files, run ids) under the lake prefix "
                f"{prefix}; the wildcard covers exactly that prefix of the lake bucket.",
            )
        acknowledge(
            policy,
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:"
            "<AWS::AccountId>:log-group:/aws-glue/jobs/*]",
            "Glue names the driver/executor output and error log groups after the security "
            "configuration and role at run time under /aws-glue/jobs/; the grant is limited "
            "to that Glue-reserved log-group path in this account and region.",
        )
        acknowledge(
            policy,
            "AwsSolutions-IAM5[Resource::*]",
            "cloudwatch:PutMetricData supports no resource-level permissions; the statement "
            "is restricted by the cloudwatch:namespace=Glue condition to Glue job metrics.",
        )
