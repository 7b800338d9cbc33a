"""Extraction stack: raw/notes/ drop -> validate -> Batch Transform -> publish -> drift monitor.

- An EventBridge rule on S3 "Object Created" under ``raw/notes/`` of the lake starts the
  extraction state machine (`step_functions.extraction`). Many objects dropped together start
  many executions; the validate_notes job (max one concurrent run, retried on
  ConcurrentRunsExceeded) admits each object once through its ledger, so later executions find
  nothing new and end in ``NothingToExtract``.
- Batch Transform runs the serving container (the image and ``model.tar.gz`` of the newest
  Approved package of the model package group, wrapped once per version in a SageMaker Model
  with network isolation in the stage VPC) over the run's notes as JSON Lines. The real-time
  endpoint (serving stack) is for on-demand callers that need one note answered in seconds;
  volume goes through Batch Transform, which costs nothing when idle and scales per job.
- Four Lambdas (code in ``lambdas/``, logic in `clinical_ner.runtime.extraction_steps`) run in the
  stage VPC. ``publish`` and ``drift_monitor`` (and ``stage``, which reads the curated Parquet)
  need pyarrow and numpy, which do not fit a hand-made zip built without Docker: they use the
  AWS-managed "AWS SDK for pandas" Lambda layer (Python 3.12, arm64), whose regional ARN is the
  stack parameter ``AwsSdkPandasLayerArn`` (docs/analytics.md lists where to find it). The core
  package ships as our own layer (pure Python; spaCy is never imported on these paths), and
  Powertools as the AWS-managed layer (`stacks.common.pipeline_function`).
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, Size, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from clinical_ner.data.data_prep import VALIDATE_JOB
from clinical_ner.data.publish import TRANSFORM_PREFIX
from clinical_ner.pipeline.monitoring import NAMESPACE
from clinical_ner.pipeline.stage_config import StageConfig
from stacks.checks import acknowledge, acknowledge_state_machine_policy
from stacks.common import (
    LambdaNetwork,
    pandas_layer,
    pipeline_function,
    pipeline_state_machine,
)
from stacks.data_lake import DataLakeStack
from stacks.data_prep import DataPrepStack
from stacks.iam_roles import service_role
from stacks.monitoring import MonitoringStack
from stacks.naming import extraction_names, review_names, serving_names
from stacks.review import ReviewStack
from stacks.rules import start_execution_rule
from stacks.sagemaker_roles import (
    NETWORK_INTERFACES_ACK,
    container_statements,
    network_interfaces_rule,
    vpc_placement,
)
from stacks.training import TrainingStack
from step_functions.extraction import ExtractionFunctions, ExtractionPipeline, TransformSettings

TRANSFORM = TransformSettings(
    instance_type="ml.m5.xlarge",
    instance_count=1,
    max_payload_mb=6,
    max_concurrent_transforms=2,
    timeout=Duration.hours(6),
)
STATE_MACHINE_TIMEOUT = Duration.hours(8)


class ExtractionStack(Stack):
    """Exposes `state_machine`, `functions`, `function_policies`, `transform_role`, `rule`."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        data_lake: DataLakeStack,
        data_prep: DataPrepStack,
        training: TrainingStack,
        monitoring: MonitoringStack,
        review: ReviewStack,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.review = review
        self.names = extraction_names(config.resource_prefix)
        self.model_prefix = f"{config.resource_prefix}-bt"
        self.data_lake = data_lake
        self.training = training
        self.pandas_layer = pandas_layer(self)
        self.transform_role = self._transform_role()
        self.functions: dict[str, lambda_.Function] = {}
        self.function_policies: dict[str, iam.ManagedPolicy] = {}
        self._stage_function()
        self._resolve_model_function()
        self._publish_function()
        self._monitor_function()
        self.capture_rule = self._capture_schedule()
        self.state_machine = self._state_machine(data_prep, monitoring)
        self.rule = self._new_notes_rule()

    # ------------------------------------------------------------------ building blocks

    def _transform_role(self) -> iam.Role:
        """The role of the SageMaker Models that Batch Transform runs (findings acknowledged)."""
        data_lake, training = self.data_lake, self.training
        lake, key = self.config.lake, data_lake.key
        partition, region, account = self.partition, self.region, self.account
        role, transform_policy = service_role(
            self,
            "TransformModel",
            service="sagemaker.amazonaws.com",
            role_description="SageMaker Models used by extraction Batch Transform jobs",
            policy_description="Batch Transform model: model artifacts, transform I/O, image, logs",
            statements=[
                iam.PolicyStatement(
                    sid="ReadModelArtifacts",
                    actions=["s3:GetObject"],
                    resources=[data_lake.lake_object_arn(lake.models)],
                ),
                iam.PolicyStatement(
                    sid="TransformIO",
                    actions=["s3:GetObject", "s3:PutObject"],
                    resources=[data_lake.lake_object_arn(TRANSFORM_PREFIX)],
                ),
                iam.PolicyStatement(
                    sid="ListTransformIO",
                    actions=["s3:ListBucket"],
                    resources=[data_lake.lake_arn_ref()],
                    conditions={"StringLike": {"s3:prefix": [f"{TRANSFORM_PREFIX}*"]}},
                ),
                iam.PolicyStatement(
                    sid="UseLakeKey",
                    actions=[
                        "kms:Decrypt",
                        "kms:Encrypt",
                        "kms:GenerateDataKey",
                        "kms:DescribeKey",
                        "kms:CreateGrant",
                    ],
                    resources=[key.key_arn],
                ),
                *container_statements(
                    image_repository_arn=training.image_repository_arn,
                    log_resources=[
                        f"arn:{partition}:logs:{region}:{account}:log-group:"
                        "/aws/sagemaker/TransformJobs:*"
                    ],
                    metric_namespace_condition={
                        "StringEquals": {"cloudwatch:namespace": "/aws/sagemaker/TransformJobs"}
                    },
                    placement=vpc_placement(
                        self, training.vpc, training.vpc.isolated_subnets, [training.security_group]
                    ),
                ),
            ],
        )
        for p in (lake.models, TRANSFORM_PREFIX):
            data_lake.acknowledge_prefixes(
                transform_policy,
                [p],
                f"Model artifacts and transform files have per-version / per-run keys under "
                f"{p}; the wildcard covers exactly that lake prefix.",
            )
        acknowledge(
            transform_policy,
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken, the EC2 describe calls SageMaker makes to attach the "
            "job to the VPC, and cloudwatch:PutMetricData (limited to the "
            "/aws/sagemaker/TransformJobs namespace by condition) support no resource-level "
            "permissions.",
        )
        acknowledge(transform_policy, network_interfaces_rule(), NETWORK_INTERFACES_ACK)
        acknowledge(
            transform_policy,
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:/aws/sagemaker/TransformJobs:*]",
            "SageMaker writes one log stream per transform job and instance, named at run "
            "time, into the service-owned /aws/sagemaker/TransformJobs log group only.",
        )
        return role

    def _listing(self, *prefixes: str) -> iam.PolicyStatement:
        return iam.PolicyStatement(
            sid="ListOwnPrefixes",
            actions=["s3:ListBucket"],
            resources=[self.data_lake.lake_arn_ref()],
            conditions={"StringLike": {"s3:prefix": sorted(f"{p}*" for p in prefixes)}},
        )

    def _objects(self, sid: str, actions: list[str], *prefixes: str) -> iam.PolicyStatement:
        return iam.PolicyStatement(
            sid=sid,
            actions=actions,
            resources=[self.data_lake.lake_object_arn(p) for p in prefixes],
        )

    def _review_queue(self) -> list[iam.PolicyStatement]:
        """Publish enqueues each note for review (docs/review.md): the table by name, its key."""
        name = review_names(self.config.resource_prefix)["table"]
        return [
            iam.PolicyStatement(
                sid="EnqueueForReview",
                actions=["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
                resources=[
                    f"arn:{self.partition}:dynamodb:{self.region}:{self.account}:table/{name}"
                ],
            ),
            iam.PolicyStatement(
                sid="UseReviewKey",
                actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
                resources=[self.review.key.key_arn],
            ),
        ]

    def _lake_key(self) -> iam.PolicyStatement:
        return iam.PolicyStatement(
            sid="UseLakeKey",
            actions=["kms:Decrypt", "kms:GenerateDataKey"],
            resources=[self.data_lake.key.key_arn],
        )

    def _metrics(self) -> iam.PolicyStatement:
        return iam.PolicyStatement(
            sid="PublishPipelineMetrics",
            actions=["cloudwatch:PutMetricData"],
            resources=["*"],
            conditions={"StringEquals": {"cloudwatch:namespace": NAMESPACE}},
        )

    def _common_env(self) -> dict[str, str]:
        return {
            "LAKE_BUCKET": self.data_lake.lake.bucket_name,
            "STAGE": self.config.stage.value,
            "LOG_LEVEL": "INFO",
        }

    def _stage_function(self) -> None:
        """Stage the run's curated notes as Batch Transform input."""
        lake = self.config.lake
        runs = f"{lake.run_reports}{VALIDATE_JOB}/"
        self._function(
            "stage",
            "StageTransformInput",
            "publish_extractions",
            "handler.stage",
            {**self._common_env(), "JOB_PREFIX": self.config.resource_prefix},
            [
                self._listing(runs, lake.curated_notes),
                self._objects("ReadRunReportsAndNotes", ["s3:GetObject"], runs, lake.curated_notes),
                self._objects("WriteTransformInput", ["s3:PutObject"], TRANSFORM_PREFIX),
                self._lake_key(),
                self._metrics(),
            ],
            (runs, lake.curated_notes, TRANSFORM_PREFIX),
        )

    def _resolve_model_function(self) -> None:
        """The newest Approved package as a SageMaker Model for Batch Transform."""
        training = self.training
        sm_arn = f"arn:{self.partition}:sagemaker:{self.region}:{self.account}"
        group_arn = f"{sm_arn}:model-package-group/{training.model_package_group_name}"
        packages_arn = f"{sm_arn}:model-package/{training.model_package_group_name}/*"
        policy = self._function(
            "resolve_model",
            "ResolveModel",
            "publish_extractions",
            "handler.resolve_model",
            {
                "MODEL_PACKAGE_GROUP": training.model_package_group_name,
                "TRANSFORM_ROLE_ARN": self.transform_role.role_arn,
                "MODEL_PREFIX": self.model_prefix,
                "SUBNET_IDS": ",".join(s.subnet_id for s in training.vpc.isolated_subnets),
                "SECURITY_GROUP_IDS": training.security_group.security_group_id,
                "LOG_LEVEL": "INFO",
            },
            [
                iam.PolicyStatement(
                    sid="ListPackages",
                    actions=["sagemaker:ListModelPackages"],
                    resources=["*"],
                ),
                iam.PolicyStatement(
                    sid="ReadPackages",
                    actions=[
                        "sagemaker:DescribeModelPackage",
                        "sagemaker:DescribeModelPackageGroup",
                    ],
                    resources=[group_arn, packages_arn],
                ),
                iam.PolicyStatement(
                    sid="TransformModels",
                    actions=[
                        "sagemaker:DescribeModel",
                        "sagemaker:CreateModel",
                        "sagemaker:AddTags",
                    ],
                    resources=[f"{sm_arn}:model/{self.model_prefix}-*"],
                ),
                iam.PolicyStatement(
                    sid="PassTransformRole",
                    actions=["iam:PassRole"],
                    resources=[self.transform_role.role_arn],
                    conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
                ),
            ],
            (),
        )
        acknowledge(
            policy,
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:model-package/{training.model_package_group_name}/*]",
            "Model package versions are numbered by SageMaker at registration; the wildcard "
            "covers the versions of this stage's one model package group.",
        )
        acknowledge(
            policy,
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:model/{self.model_prefix}-*]",
            "Transform models are named <prefix>-bt-v<package version> when a new version is "
            "first used; the wildcard covers only this stage's transform models.",
        )

    def _publish_function(self) -> None:
        """Transform output -> the entity and note tables under inference/."""
        lake = self.config.lake
        self._function(
            "publish",
            "PublishExtractions",
            "publish_extractions",
            "handler.handler",
            {**self._common_env(), "REVIEW_TABLE": self.review.names["table"]},
            [
                *self._review_queue(),
                self._listing(
                    TRANSFORM_PREFIX,
                    lake.curated_notes,
                    lake.inference_entities,
                    lake.inference_notes,
                ),
                self._objects(
                    "ReadTransformOutputAndNotes",
                    ["s3:GetObject"],
                    TRANSFORM_PREFIX,
                    lake.curated_notes,
                    lake.models,  # the transform model's metrics.json: its label set
                ),
                self._objects(
                    "WriteTables",
                    ["s3:PutObject", "s3:DeleteObject"],
                    lake.inference_entities,
                    lake.inference_notes,
                ),
                self._lake_key(),
                self._metrics(),
            ],
            (
                TRANSFORM_PREFIX,
                lake.curated_notes,
                lake.models,
                lake.inference_entities,
                lake.inference_notes,
            ),
        )

    def _monitor_function(self) -> None:
        """The drift monitor, with the dead-letter queue of its scheduled (async) runs."""
        config, lake = self.config, self.config.lake
        # The capture schedule invokes the monitor asynchronously: invocations that still fail
        # after Lambda's retries land here (the event holds a window, never note text).
        self.monitor_dead_letters = sqs.Queue(
            self,
            "DriftMonitorDeadLetters",
            queue_name=f"{config.resource_prefix}-drift-monitor-dlq",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.data_lake.key,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        acknowledge(
            self.monitor_dead_letters,
            "AwsSolutions-SQS3",
            "This queue is itself the dead-letter queue of the drift monitor's scheduled "
            "capture runs; a dead-letter queue for it would only move the same failed "
            "window events one hop further.",
        )
        self._function(
            "monitor",
            "DriftMonitor",
            "drift_monitor",
            "handler.handler",
            {
                **self._common_env(),
                "STAGE_CONFIG": config.to_json(),
                "ENDPOINT_NAME": serving_names(config).endpoint,
            },
            [
                self._listing(lake.curated_notes, lake.monitoring),
                self._objects(
                    "ReadWindowAndBaselines",
                    ["s3:GetObject"],
                    lake.curated_notes,
                    lake.inference_entities,
                    lake.models,
                    lake.monitoring,
                ),
                self._objects("WriteReports", ["s3:PutObject"], lake.monitoring),
                self._lake_key(),
                self._metrics(),
            ],
            (lake.curated_notes, lake.inference_entities, lake.models, lake.monitoring),
            dead_letter_queue=self.monitor_dead_letters,
        )

    def _capture_schedule(self) -> events.Rule:
        """Once a day, the drift of the previous day's captured endpoint invocations.

        Window = the 24 whole hours before the event time (clinical_ner.runtime.capture).
        """
        rule = events.Rule(
            self,
            "CaptureMonitorSchedule",
            description="Daily drift monitoring of the endpoint's SageMaker data capture",
            schedule=events.Schedule.cron(minute="15", hour="0"),
        )
        rule.add_target(
            targets.LambdaFunction(
                self.functions["monitor"],
                event=events.RuleTargetInput.from_object(
                    {"source": "endpoint_capture", "window_end": events.EventField.time}
                ),
                retry_attempts=4,
                max_event_age=Duration.hours(6),
            )
        )
        return rule

    def _state_machine(
        self, data_prep: DataPrepStack, monitoring: MonitoringStack
    ) -> sfn.StateMachine:
        """The extraction state machine (`step_functions.extraction`) and its findings."""
        key = self.data_lake.key
        pipeline = ExtractionPipeline(
            self,
            "Pipeline",
            validate_job_name=data_prep.jobs[VALIDATE_JOB].name or "",
            functions=ExtractionFunctions(
                stage=self.functions["stage"],
                resolve_model=self.functions["resolve_model"],
                publish=self.functions["publish"],
                monitor=self.functions["monitor"],
            ),
            topic=monitoring.topic,
            transform=TRANSFORM,
            volume_key=key,
            output_key=key,
            transform_role=self.transform_role,
        )
        self.pipeline = pipeline
        state_machine = pipeline_state_machine(
            self,
            config=self.config,
            name=self.names["state_machine"],
            definition=pipeline.definition,
            timeout=STATE_MACHINE_TIMEOUT,
            log_key=key,
            comment="Clinical NER extraction: validate -> batch transform -> publish -> monitor",
        )
        monitoring.alerts_key.grant(state_machine, "kms:GenerateDataKey", "kms:Decrypt")
        key.grant(state_machine, "kms:CreateGrant", "kms:DescribeKey")
        acknowledge_state_machine_policy(
            self,
            state_machine,
            self.functions,
            integrations="Lambda, Glue job, topic and keys",
            job_resource="transform-job/*",
            job_reason="Transform job names are generated per run (<prefix>-bt-<hash of run id>); "
            "the .sync integration creates, describes and stops them, so the grant covers "
            "transform jobs in this account and region only.",
        )
        return state_machine

    def _new_notes_rule(self) -> events.Rule:
        """Notes dropped under raw/notes/ start an extraction run."""
        return start_execution_rule(
            self,
            "NewNotesRule",
            state_machine=self.state_machine,
            description="Notes dropped under raw/notes/ start an extraction run",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={
                    "bucket": {"name": [self.data_lake.lake.bucket_name]},
                    "object": {"key": [{"prefix": self.config.lake.raw_notes}]},
                },
            ),
            execution_input={
                "trigger": "new_notes",
                "object_key": events.EventField.from_path("$.detail.object.key"),
                "event_time": events.EventField.time,
            },
            retry_attempts=8,
            max_event_age=Duration.hours(24),
        )

    def _function(
        self,
        key_name: str,
        title: str,
        code_dir: str,
        handler: str,
        environment: dict[str, str],
        statements: list[iam.PolicyStatement],
        lake_prefixes: tuple[str, ...],
        dead_letter_queue: sqs.Queue | None = None,
    ) -> iam.ManagedPolicy:
        """One extraction step in the stage VPC; registers it in `functions`, returns its policy."""
        training = self.training
        fn_name = self.names[key_name]
        light = key_name == "resolve_model"  # API calls only; the others move Parquet through /tmp
        fn, policy = pipeline_function(
            self,
            title,
            config=self.config,
            function_name=fn_name,
            code_dir=code_dir,
            handler=handler,
            description=f"Extraction pipeline step {key_name} (thin handler over clinical_ner)",
            role_description=f"Lambda {fn_name} of the extraction pipeline",
            statements=statements,
            environment=environment,
            log_key=self.data_lake.key,
            memory_size=256 if light else 3008,
            # /tmp holds one run's curated Parquet and the files being published
            ephemeral_storage_size=Size.gibibytes(0.5 if light else 4),
            timeout=Duration.minutes(2 if light else 15),
            network=LambdaNetwork(training.vpc, training.subnets, training.security_group),
            extra_layers=[self.pandas_layer],
            dead_letter_queue=dead_letter_queue,
            star_reason="A Lambda function in a VPC manages its network interfaces through EC2 "
            "actions that support no resource-level permissions; cloudwatch:PutMetricData is "
            "limited by the cloudwatch:namespace condition, sagemaker:ListModelPackages has no "
            "resource type.",
        )
        self.functions[key_name] = fn
        self.function_policies[key_name] = policy
        for p in lake_prefixes:
            self.data_lake.acknowledge_prefixes(
                policy,
                [p],
                f"Lambda {fn_name} reads or writes objects whose keys are generated per run "
                f"(partition dates, run ids, part files) under {p}; the wildcard covers "
                "exactly that lake prefix.",
            )
        return policy
