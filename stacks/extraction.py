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
  package ships as our own layer (pure Python; spaCy is never imported on these paths).
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnParameter, Duration, RemovalPolicy, Size, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from clinical_ner.data.data_prep import VALIDATE_JOB
from clinical_ner.data.publish import TRANSFORM_PREFIX
from clinical_ner.pipeline.monitoring import NAMESPACE
from clinical_ner.pipeline.stage_config import StageConfig
from stacks.checks import acknowledge, acknowledge_state_machine_policy
from stacks.data_lake import DataLakeStack
from stacks.data_prep import DataPrepStack
from stacks.iam_roles import service_role
from stacks.lambda_functions import vpc_step_function
from stacks.monitoring import LAMBDA_RUNTIME, MonitoringStack, extraction_names
from stacks.retention import removal_policy
from stacks.rules import start_execution_rule
from stacks.sagemaker_roles import (
    NETWORK_INTERFACES_ACK,
    container_statements,
    network_interfaces_rule,
    vpc_placement,
)
from stacks.serving import serving_names
from stacks.training import TrainingStack, build_layer_zip
from step_functions.extraction import ExtractionFunctions, ExtractionPipeline, TransformSettings

TRANSFORM = TransformSettings(
    instance_type="ml.m5.xlarge",
    instance_count=1,
    max_payload_mb=6,
    max_concurrent_transforms=2,
    timeout=Duration.hours(6),
)
STATE_MACHINE_TIMEOUT = Duration.hours(8)
LAMBDA_CONCURRENCY = 5
PANDAS_LAYER_DOC = "https://aws-sdk-pandas.readthedocs.io/en/stable/layers.html"


class ExtractionStack(Stack):
    """Exposes `state_machine`, `functions`, `transform_role`, `rule`."""

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
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        lake = config.lake
        prefix = config.resource_prefix
        names = extraction_names(prefix)
        self.names = names
        removal = removal_policy(config)
        key = data_lake.key
        bucket = data_lake.lake
        partition, region, account = self.partition, self.region, self.account
        sm_arn = f"arn:{partition}:sagemaker:{region}:{account}"
        self.model_prefix = f"{prefix}-bt"

        pandas_layer_arn = CfnParameter(
            self,
            "AwsSdkPandasLayerArn",
            type="String",
            allowed_pattern=r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:layer:AWSSDKPandas-Python312-Arm64:\d+$",
            description=(
                "ARN of the AWS-managed AWS SDK for pandas layer (Python 3.12, arm64) in the "
                f"deployment region, from {PANDAS_LAYER_DOC}"
            ),
        )
        self.layers = [
            lambda_.LayerVersion.from_layer_version_arn(
                self, "AwsSdkPandasLayer", pandas_layer_arn.value_as_string
            ),
            lambda_.LayerVersion(
                self,
                "CoreLayer",
                code=lambda_.Code.from_asset(str(build_layer_zip())),
                compatible_runtimes=[LAMBDA_RUNTIME],
                description="clinical_ner core package (pure Python)",
            ),
        ]

        # ------------------------------------------------- transform model role
        self.transform_role, transform_policy = service_role(
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
            acknowledge(
                transform_policy,
                f"AwsSolutions-IAM5[Resource::{data_lake.nag_object_resource(p)}]",
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

        # ---------------------------------------------------------------- Lambdas
        metrics_stmt = iam.PolicyStatement(
            sid="PublishPipelineMetrics",
            actions=["cloudwatch:PutMetricData"],
            resources=["*"],
            conditions={"StringEquals": {"cloudwatch:namespace": NAMESPACE}},
        )
        lake_key_stmt = iam.PolicyStatement(
            sid="UseLakeKey",
            actions=["kms:Decrypt", "kms:GenerateDataKey"],
            resources=[key.key_arn],
        )

        def listing(*prefixes: str) -> iam.PolicyStatement:
            return iam.PolicyStatement(
                sid="ListOwnPrefixes",
                actions=["s3:ListBucket"],
                resources=[data_lake.lake_arn_ref()],
                conditions={"StringLike": {"s3:prefix": sorted(f"{p}*" for p in prefixes)}},
            )

        def objects(sid: str, actions: list[str], *prefixes: str) -> iam.PolicyStatement:
            return iam.PolicyStatement(
                sid=sid,
                actions=actions,
                resources=[data_lake.lake_object_arn(p) for p in prefixes],
            )

        runs = f"{lake.run_reports}{VALIDATE_JOB}/"
        common_env = {
            "LAKE_BUCKET": bucket.bucket_name,
            "STAGE": config.stage.value,
            "LOG_LEVEL": "INFO",
        }
        self.functions: dict[str, lambda_.Function] = {}
        self.functions["stage"] = self._function(
            "stage",
            "StageTransformInput",
            "publish_extractions",
            "handler.stage",
            {**common_env, "JOB_PREFIX": prefix},
            [
                listing(runs, lake.curated_notes),
                objects("ReadRunReportsAndNotes", ["s3:GetObject"], runs, lake.curated_notes),
                objects("WriteTransformInput", ["s3:PutObject"], TRANSFORM_PREFIX),
                lake_key_stmt,
                metrics_stmt,
            ],
            (runs, lake.curated_notes, TRANSFORM_PREFIX),
            data_lake,
            training,
            removal,
        )
        group_arn = f"{sm_arn}:model-package-group/{training.model_package_group_name}"
        packages_arn = f"{sm_arn}:model-package/{training.model_package_group_name}/*"
        self.functions["resolve_model"] = self._function(
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
            data_lake,
            training,
            removal,
        )
        policy = self.function_policies["resolve_model"]
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
        self.functions["publish"] = self._function(
            "publish",
            "PublishExtractions",
            "publish_extractions",
            "handler.handler",
            dict(common_env),
            [
                listing(
                    TRANSFORM_PREFIX,
                    lake.curated_notes,
                    lake.inference_entities,
                    lake.inference_notes,
                ),
                objects(
                    "ReadTransformOutputAndNotes",
                    ["s3:GetObject"],
                    TRANSFORM_PREFIX,
                    lake.curated_notes,
                    lake.models,  # the transform model's metrics.json: its label set
                ),
                objects(
                    "WriteTables",
                    ["s3:PutObject", "s3:DeleteObject"],
                    lake.inference_entities,
                    lake.inference_notes,
                ),
                lake_key_stmt,
                metrics_stmt,
            ],
            (
                TRANSFORM_PREFIX,
                lake.curated_notes,
                lake.models,
                lake.inference_entities,
                lake.inference_notes,
            ),
            data_lake,
            training,
            removal,
        )
        # The capture schedule invokes the monitor asynchronously: invocations that still fail
        # after Lambda's retries land here (the event holds a window, never note text).
        self.monitor_dead_letters = sqs.Queue(
            self,
            "DriftMonitorDeadLetters",
            queue_name=f"{prefix}-drift-monitor-dlq",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
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
        self.functions["monitor"] = self._function(
            "monitor",
            "DriftMonitor",
            "drift_monitor",
            "handler.handler",
            {
                **common_env,
                "STAGE_CONFIG": config.to_json(),
                "ENDPOINT_NAME": serving_names(config).endpoint,
            },
            [
                iam.PolicyStatement(
                    sid="DeadLetters",
                    actions=["sqs:SendMessage"],
                    resources=[self.monitor_dead_letters.queue_arn],
                ),
                listing(lake.curated_notes, lake.monitoring),
                objects(
                    "ReadWindowAndBaselines",
                    ["s3:GetObject"],
                    lake.curated_notes,
                    lake.inference_entities,
                    lake.models,
                    lake.monitoring,
                ),
                objects("WriteReports", ["s3:PutObject"], lake.monitoring),
                lake_key_stmt,
                metrics_stmt,
            ],
            (lake.curated_notes, lake.inference_entities, lake.models, lake.monitoring),
            data_lake,
            training,
            removal,
            dead_letter_queue=self.monitor_dead_letters,
        )
        # Endpoint traffic: once a day, the drift of the previous day's captured invocations
        # (window = the 24 whole hours before the event time; clinical_ner.runtime.capture).
        self.capture_rule = events.Rule(
            self,
            "CaptureMonitorSchedule",
            description="Daily drift monitoring of the endpoint's SageMaker data capture",
            schedule=events.Schedule.cron(minute="15", hour="0"),
        )
        self.capture_rule.add_target(
            targets.LambdaFunction(
                self.functions["monitor"],
                event=events.RuleTargetInput.from_object(
                    {"source": "endpoint_capture", "window_end": events.EventField.time}
                ),
                retry_attempts=4,
                max_event_age=Duration.hours(6),
            )
        )

        # ----------------------------------------------------------- state machine
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
        sm_logs = logs.LogGroup(
            self,
            "StateMachineLogs",
            log_group_name=f"/aws/vendedlogs/states/{names['state_machine']}",
            encryption_key=key,
            removal_policy=removal,
        )
        _retention(sm_logs, config.retention.log_group_days)
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=names["state_machine"],
            definition_body=sfn.DefinitionBody.from_chainable(pipeline.definition),
            timeout=STATE_MACHINE_TIMEOUT,
            tracing_enabled=True,
            logs=sfn.LogOptions(
                destination=sm_logs, level=sfn.LogLevel.ALL, include_execution_data=False
            ),
            comment="Clinical NER extraction: validate -> batch transform -> publish -> monitor",
        )
        monitoring.alerts_key.grant(self.state_machine, "kms:GenerateDataKey", "kms:Decrypt")
        key.grant(self.state_machine, "kms:CreateGrant", "kms:DescribeKey")
        acknowledge_state_machine_policy(
            self,
            self.state_machine,
            self.functions,
            integrations="Lambda, Glue job, topic and keys",
            job_resource="transform-job/*",
            job_reason="Transform job names are generated per run (<prefix>-bt-<hash of run id>); "
            "the .sync integration creates, describes and stops them, so the grant covers "
            "transform jobs in this account and region only.",
        )

        # ---------------------------------------------- raw/notes/ -> extraction
        self.rule = start_execution_rule(
            self,
            "NewNotesRule",
            state_machine=self.state_machine,
            description="Notes dropped under raw/notes/ start an extraction run",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={
                    "bucket": {"name": [bucket.bucket_name]},
                    "object": {"key": [{"prefix": lake.raw_notes}]},
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

    # ------------------------------------------------------------------ helpers

    function_policies: dict[str, iam.ManagedPolicy]

    def _function(
        self,
        key_name: str,
        title: str,
        code_dir: str,
        handler: str,
        environment: dict[str, str],
        statements: list[iam.PolicyStatement],
        lake_prefixes: tuple[str, ...],
        data_lake: DataLakeStack,
        training: TrainingStack,
        removal: RemovalPolicy,
        dead_letter_queue: sqs.IQueue | None = None,
    ) -> lambda_.Function:
        if not hasattr(self, "function_policies"):
            self.function_policies = {}
        fn_name = self.names[key_name]
        log_group = logs.LogGroup(
            self,
            f"{title}Logs",
            log_group_name=f"/aws/lambda/{fn_name}",
            encryption_key=data_lake.key,
            removal_policy=removal,
        )
        _retention(log_group, self.config.retention.log_group_days)
        fn, policy = vpc_step_function(
            self,
            title,
            function_name=fn_name,
            pipeline="extraction",
            code_dir=code_dir,
            handler=handler,
            runtime=LAMBDA_RUNTIME,
            layers=self.layers,
            environment=environment,
            statements=statements,
            log_group=log_group,
            vpc=training.vpc,
            subnets=training.subnets,
            security_group=training.security_group,
            memory_size=256 if key_name == "resolve_model" else 3008,
            # /tmp holds one run's curated Parquet and the files being published
            ephemeral_storage_size=Size.gibibytes(0.5 if key_name == "resolve_model" else 4),
            timeout=Duration.minutes(2 if key_name == "resolve_model" else 15),
            reserved_concurrency=LAMBDA_CONCURRENCY,
            description=f"Extraction pipeline step {key_name} (thin handler over clinical_ner)",
            star_reason="A Lambda function in a VPC manages its network interfaces through EC2 "
            "actions that support no resource-level permissions; cloudwatch:PutMetricData is "
            "limited by the cloudwatch:namespace condition, sagemaker:ListModelPackages has no "
            "resource type.",
            runtime_reason="The runtime is pinned to Python 3.12, the newest version the core "
            "package declares and is tested on, and the version the AWS SDK for pandas layer "
            "is built for.",
            dead_letter_queue=dead_letter_queue,
        )
        self.function_policies[key_name] = policy
        for p in lake_prefixes:
            acknowledge(
                policy,
                f"AwsSolutions-IAM5[Resource::{data_lake.nag_object_resource(p)}]",
                f"Lambda {fn_name} reads or writes objects whose keys are generated per run "
                f"(partition dates, run ids, part files) under {p}; the wildcard covers "
                "exactly that lake prefix.",
            )
        return fn


def _retention(group: logs.LogGroup, days: int) -> None:
    cfn = group.node.default_child
    assert isinstance(cfn, logs.CfnLogGroup)
    cfn.retention_in_days = days
