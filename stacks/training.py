"""Training stack: the retraining state machine and everything it runs on.

- ``PipelineKey`` (KMS): the SNS topic, the Lambda and state-machine log groups.
- ``Notifications`` topic (KMS, TLS-only) with the stage's alarm e-mail subscribed.
- ``Vpc``: two private isolated subnets (no internet route), an S3 gateway endpoint and
  interface endpoints for the SageMaker API, SageMaker MLflow (experiments), CloudWatch and
  Application Auto Scaling, flow logs. The training job (network isolation on) and the Lambdas
  run here.
- ``MlflowTrackingServer``: the SageMaker managed MLflow tracking server ``<prefix>-mlflow``
  (artifact store ``s3://<lake>/mlflow/``, size from the stage config). The training job is
  network-isolated, so the register Lambda logs each training run to it from the job's
  metrics.json (experiment ``<prefix>``).
- ``SageMakerImage``: the container (``sagemaker_src/Dockerfile``, repository root as context,
  filtered by ``sagemaker_src/Dockerfile.dockerignore``) as a CDK image asset: staged at synth,
  built and pushed by ``cdk deploy``; used by training jobs and, through the model package's
  inference specification, by the endpoint.
- ``ModelPackageGroup`` ``<prefix>-ner`` and the training-job role.
- Lambdas ``resolve_dataset``, ``register_model``, ``gate_model``, ``approve_or_reject``,
  ``deploy_model`` (code in ``lambdas/<name>/``, the core package as a layer built at synth).
- The state machine (`step_functions.training.TrainingPipeline`), and in manual approval mode
  the EventBridge rule that starts the deployment when a human approves a package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import Duration, IgnoreMode, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from clinical_ner.pipeline.stage_config import ApprovalMode, StageConfig
from clinical_ner.runtime.capture import capture_s3_uri
from stacks.checks import acknowledge, acknowledge_state_machine_policy
from stacks.common import (
    LambdaNetwork,
    encrypted_log_group,
    pipeline_function,
    pipeline_state_machine,
    stage_key,
)
from stacks.data_lake import DataLakeStack
from stacks.data_prep import DataPrepStack
from stacks.iam_roles import service_role
from stacks.naming import construct_title, resource_name, serving_names
from stacks.packaging import REPO_ROOT
from stacks.retention import removal_policy
from stacks.rules import start_execution_rule
from stacks.sagemaker_roles import (
    NETWORK_INTERFACES_ACK,
    container_statements,
    network_interfaces_rule,
    vpc_placement,
)
from step_functions.training import (
    APPROVAL_TRIGGER,
    PipelineFunctions,
    TrainingJobSettings,
    TrainingPipeline,
)

TRAINING_INSTANCE = "ml.m5.xlarge"
BAKE_TIME = Duration.minutes(10)
STATE_MACHINE_TIMEOUT = Duration.hours(12)
# What the register step does on the tracking server (sagemaker-mlflow IAM actions).
MLFLOW_ACTIONS = (
    "GetExperimentByName",
    "CreateExperiment",
    "SearchRuns",
    "CreateRun",
    "LogBatch",
    "UpdateRun",
    "SetTag",
)
FUNCTIONS = ("resolve_dataset", "register_model", "gate_model", "approve_or_reject", "deploy_model")
# Lake object prefixes each function's policy grants (acknowledged per prefix).
LAKE_PREFIXES = {
    "resolve_dataset": ("curated/training/",),
    "register_model": ("models/",),
    "gate_model": ("models/",),
    "approve_or_reject": (),
    "deploy_model": (),
}


def image_excludes(root: Path = REPO_ROOT) -> list[str]:
    """The Docker build context filter, read from sagemaker_src/Dockerfile.dockerignore."""
    text = (root / "sagemaker_src" / "Dockerfile.dockerignore").read_text()
    patterns = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    # The staged context must also carry the Dockerfile (and its ignore file) that
    # `cdk deploy` builds with; docker itself never sends them as build context.
    return [*patterns, "!sagemaker_src/Dockerfile", "!sagemaker_src/Dockerfile.dockerignore"]


class TrainingStack(Stack):
    """Exposes `key`, `topic`, `vpc`, `subnets`, `security_group`, `vpc_placement`, `image`,
    `model_package_group_name`, `training_role`, `functions`, `deploy_role`, `state_machine`."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        data_lake: DataLakeStack,
        data_prep: DataPrepStack,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.key, self.topic = self._key_and_topic()
        self._network()
        self._image_and_registry()
        self.training_role = self._training_role(data_lake)
        tracking_server_arn = self._tracking_server(data_lake)
        self.experiment_name = config.resource_prefix
        self._functions(data_lake, tracking_server_arn)
        self.deploy_role = self.functions["deploy_model"].role
        self.state_machine = self._state_machine(data_lake, data_prep)
        self.approval_rule = self._approval_rule()

    def _key_and_topic(self) -> tuple[kms.Key, sns.Topic]:
        """The pipeline key (topic, Lambda and state-machine logs) and the e-mail topic."""
        config = self.config
        key = stage_key(
            self,
            "PipelineKey",
            config=config,
            alias=f"alias/{config.resource_prefix}-pipeline",
            description=f"Clinical NER {config.stage.value}: pipeline topic and logs",
            cloudwatch_logs=True,
            cloudwatch_alarms=True,
        )
        topic = sns.Topic(
            self,
            "Notifications",
            display_name=f"Clinical NER {config.stage.value} pipeline",
            master_key=key,
            enforce_ssl=True,
        )
        topic.add_subscription(subs.EmailSubscription(config.alarm_email))
        return key, topic

    def _network(self) -> None:
        """Isolated subnets, the pipeline and endpoint security groups, endpoints, flow logs."""
        prefix = self.config.resource_prefix
        flow_logs = encrypted_log_group(
            self, "VpcFlowLogs", name=f"/{prefix}/vpc-flow-logs", key=self.key, config=self.config
        )
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="isolated", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24
                )
            ],
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3),
                # the review Lambda's queue table (stacks/review.py); gateway endpoints are free
                "DynamoDB": ec2.GatewayVpcEndpointOptions(
                    service=ec2.GatewayVpcEndpointAwsService.DYNAMODB
                ),
            },
            restrict_default_security_group=False,
        )
        flow_log_role, flow_log_policy = service_role(
            self,
            "FlowLog",
            service="vpc-flow-logs.amazonaws.com",
            role_description="VPC flow logs delivery to the KMS-encrypted log group",
            statements=[
                iam.PolicyStatement(
                    actions=[
                        "logs:CreateLogStream",
                        "logs:PutLogEvents",
                        "logs:DescribeLogStreams",
                    ],
                    resources=[flow_logs.log_group_arn],
                )
            ],
        )
        # CfnFlowLog rather than vpc.add_flow_log: the latter adds an inline policy to the role.
        flow_log = ec2.CfnFlowLog(
            self,
            "FlowLog",
            resource_id=self.vpc.vpc_id,
            resource_type="VPC",
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_group_name=flow_logs.log_group_name,
            deliver_logs_permission_arn=flow_log_role.role_arn,
        )
        flow_log.node.add_dependency(flow_log_policy)
        acknowledge(
            self.vpc.node.default_child,
            "HIPAA.Security-VPCDefaultSecurityGroupClosed",
            "Nothing in this VPC uses the default security group: the Lambdas, training jobs, "
            "endpoint models and VPC endpoints each name their own group. Closing it through "
            "CDK adds a custom-resource Lambda with an AWS-managed policy to every stage.",
        )
        self.subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        self.security_group = ec2.SecurityGroup(
            self,
            "PipelineSecurityGroup",
            vpc=self.vpc,
            description="Pipeline Lambdas and SageMaker models: egress to the VPC endpoints only",
            allow_all_outbound=False,
        )
        self.endpoint_security_group = ec2.SecurityGroup(
            self,
            "EndpointSecurityGroup",
            vpc=self.vpc,
            description="VPC interface endpoints: HTTPS from the pipeline security group only",
            allow_all_outbound=False,
        )
        self.endpoint_security_group.add_ingress_rule(
            self.security_group, ec2.Port.tcp(443), "pipeline Lambdas and models"
        )
        self.security_group.add_egress_rule(
            self.endpoint_security_group, ec2.Port.tcp(443), "VPC interface endpoints"
        )
        self.security_group.add_egress_rule(
            ec2.Peer.any_ipv4(),
            ec2.Port.tcp(443),
            # DynamoDB's gateway endpoint uses this rule too (AWS-published address ranges)
            "S3 through the gateway endpoint (isolated subnets have no other route)",
        )
        for cid, service in (
            ("SageMakerApiEndpoint", ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_API),
            ("MlflowEndpoint", ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_EXPERIMENTS),
            ("CloudWatchEndpoint", ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING),
            ("AutoScalingEndpoint", ec2.InterfaceVpcEndpointAwsService.APPLICATION_AUTOSCALING),
            # the review Lambda invokes the retraining trigger (stacks/review.py)
            ("LambdaEndpoint", ec2.InterfaceVpcEndpointAwsService.LAMBDA_),
        ):
            self.vpc.add_interface_endpoint(
                cid,
                service=service,
                subnets=self.subnets,
                private_dns_enabled=True,
                security_groups=[self.endpoint_security_group],
                open=False,
            )

    def _image_and_registry(self) -> None:
        """The SageMaker image asset and the stage's model package group."""
        config = self.config
        prefix = config.resource_prefix
        self.image = ecr_assets.DockerImageAsset(
            self,
            "SageMakerImage",
            directory=str(REPO_ROOT),
            file="sagemaker_src/Dockerfile",
            exclude=image_excludes(),
            ignore_mode=IgnoreMode.DOCKER,
            platform=ecr_assets.Platform.LINUX_AMD64,
            display_name="clinical NER SageMaker image (train + serve)",
        )
        self.image_repository_arn = self.image.repository.repository_arn
        self.model_package_group_name = f"{prefix}-ner"
        group = sagemaker.CfnModelPackageGroup(
            self,
            "ModelPackageGroup",
            model_package_group_name=self.model_package_group_name,
            model_package_group_description=(
                f"Clinical NER (DISEASE/TREATMENT) models, stage {config.stage.value}"
            ),
        )
        group.apply_removal_policy(removal_policy(config))

    def _registry_arns(self) -> tuple[str, str]:
        """ARNs of the model package group and of its package versions."""
        sm_arn = f"arn:{self.partition}:sagemaker:{self.region}:{self.account}"
        group = self.model_package_group_name
        return f"{sm_arn}:model-package-group/{group}", f"{sm_arn}:model-package/{group}/*"

    def _training_role(self, data_lake: DataLakeStack) -> iam.Role:
        """The training job's role: datasets in, models out, in the VPC (findings acknowledged)."""
        lake = self.config.lake
        partition, region, account = self.partition, self.region, self.account
        lake_key = data_lake.key
        # Where SageMaker containers (training, transform, provisioned endpoints) get ENIs.
        self.vpc_placement = vpc_placement(
            self, self.vpc, self.vpc.isolated_subnets, [self.security_group]
        )
        job_logs = f"arn:{partition}:logs:{region}:{account}:log-group:/aws/sagemaker/TrainingJobs"
        training_role, training_policy = service_role(
            self,
            "TrainingJob",
            service="sagemaker.amazonaws.com",
            role_description="SageMaker training jobs: read datasets, write models/, in the VPC",
            policy_description="Least privilege of the training job",
            statements=[
                iam.PolicyStatement(
                    sid="ListDatasetsAndModels",
                    actions=["s3:ListBucket"],
                    resources=[data_lake.lake_arn_ref()],
                    conditions={
                        "StringLike": {
                            "s3:prefix": [
                                f"{lake.curated_training}*",
                                f"{lake.models}*",
                                f"{lake.validated_eval}*",  # the validated evaluation channel
                            ]
                        }
                    },
                ),
                iam.PolicyStatement(
                    sid="ReadDatasetsAndProductionModel",
                    actions=["s3:GetObject"],
                    resources=[
                        data_lake.lake_object_arn(lake.curated_training),
                        data_lake.lake_object_arn(lake.models),
                        data_lake.lake_object_arn(lake.validated_eval),
                    ],
                ),
                iam.PolicyStatement(
                    sid="WriteModels",
                    actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                    resources=[data_lake.lake_object_arn(lake.models)],
                ),
                iam.PolicyStatement(
                    sid="UseLakeKey",
                    actions=[
                        "kms:Decrypt",
                        "kms:Encrypt",
                        "kms:GenerateDataKey",
                        "kms:DescribeKey",
                    ],
                    resources=[lake_key.key_arn],
                ),
                iam.PolicyStatement(
                    sid="EncryptTrainingVolume",
                    actions=["kms:CreateGrant"],
                    resources=[lake_key.key_arn],
                    conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}},
                ),
                *container_statements(
                    image_repository_arn=self.image_repository_arn,
                    log_resources=[job_logs, f"{job_logs}:*"],
                    metric_namespace_condition={
                        "StringEquals": {"cloudwatch:namespace": "/aws/sagemaker/TrainingJobs"}
                    },
                    placement=self.vpc_placement,
                ),
            ],
        )
        data_lake.acknowledge_prefixes(
            training_policy,
            [lake.curated_training, lake.models, lake.validated_eval],
            "The training job reads the dataset version chosen at run time, the production "
            "model's models/<job>/output/model.tar.gz and the reviewed notes of the validated "
            "evaluation set (one file per note hash), and writes its own "
            "models/<training job name>/output/model.tar.gz; the wildcard covers that prefix.",
        )
        acknowledge(
            training_policy,
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken, cloudwatch:PutMetricData (limited to the "
            "/aws/sagemaker/TrainingJobs namespace by condition) and the EC2 describe calls "
            "SageMaker makes to attach the job to the VPC support no resource-level permissions.",
        )
        acknowledge(training_policy, network_interfaces_rule(), NETWORK_INTERFACES_ACK)
        acknowledge(
            training_policy,
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:/aws/sagemaker/TrainingJobs:*]",
            "SageMaker names one log stream per training job at run time inside the "
            "service-owned /aws/sagemaker/TrainingJobs log group; only that group's streams.",
        )

        return training_role

    def _functions(self, data_lake: DataLakeStack, tracking_server_arn: str) -> None:
        """The five pipeline steps (`functions`, `function_policies`)."""
        config = self.config
        lake = config.lake
        names = serving_names(config)
        partition, account = self.partition, self.account
        bucket, lake_key = data_lake.lake, data_lake.key
        group_arn, packages_arn = self._registry_arns()
        common_env = {"MODEL_PACKAGE_GROUP": self.model_package_group_name, "LOG_LEVEL": "INFO"}
        env = {
            "resolve_dataset": {**common_env, "LAKE_BUCKET": bucket.bucket_name},
            "register_model": {
                **common_env,
                "MLFLOW_TRACKING_URI": tracking_server_arn,
                "MLFLOW_EXPERIMENT_NAME": self.experiment_name,
            },
            "gate_model": {**common_env, "STAGE_CONFIG": config.to_json()},
            "approve_or_reject": {},
            "deploy_model": {
                "ENDPOINT_NAME": names.endpoint,
                "MODEL_ROLE_ARN": f"arn:{partition}:iam::{account}:role/{names.model_role}",
                "SERVERLESS_MEMORY_MB": str(config.serverless.memory_mb),
                "SERVERLESS_MAX_CONCURRENCY": str(config.serverless.max_concurrency),
                "PROVISIONED": str(config.serverless.provisioned).lower(),
                "INSTANCE_TYPE": config.serverless.instance_type,
                "ROLLBACK_ALARMS": ",".join(names.alarms),
                "SUBNET_IDS": ",".join(s.subnet_id for s in self.vpc.isolated_subnets),
                "SECURITY_GROUP_IDS": self.security_group.security_group_id,
                "KMS_KEY_ARN": lake_key.key_arn,
                "BAKE_SECONDS": str(int(BAKE_TIME.to_seconds())),
                # SageMaker data capture (provisioned variants): clinical_ner.runtime.capture
                "CAPTURE_S3_URI": capture_s3_uri(bucket.bucket_name, lake.monitoring),
                "CAPTURE_SAMPLING_PERCENTAGE": str(config.serverless.capture_sampling_percentage),
            },
        }
        read_models = data_lake.lake_object_arn(lake.models)
        grants: dict[str, list[iam.PolicyStatement]] = {
            "resolve_dataset": [
                iam.PolicyStatement(
                    sid="ListDatasets",
                    actions=["s3:ListBucket"],
                    resources=[data_lake.lake_arn_ref()],
                    conditions={
                        "StringLike": {
                            # does a validated evaluation set exist (a training channel)?
                            "s3:prefix": [f"{lake.curated_training}*", f"{lake.validated_eval}*"]
                        }
                    },
                ),
                iam.PolicyStatement(
                    sid="ReadManifests",
                    actions=["s3:GetObject"],
                    resources=[data_lake.lake_object_arn(lake.curated_training)],
                ),
                _decrypt(lake_key),
                _read_registry(group_arn, packages_arn),  # which model is in production
                _list_registry(),
            ],
            "register_model": [
                iam.PolicyStatement(
                    sid="ReadModelWriteMetrics",
                    actions=["s3:GetObject", "s3:PutObject"],
                    resources=[read_models],
                ),
                iam.PolicyStatement(
                    sid="UseLakeKey",
                    actions=["kms:Decrypt", "kms:GenerateDataKey"],
                    resources=[lake_key.key_arn],
                ),
                iam.PolicyStatement(
                    sid="RegisterPackages",
                    actions=["sagemaker:CreateModelPackage"],
                    resources=[group_arn, packages_arn],
                ),
                _read_registry(group_arn, packages_arn),
                _list_registry(),
                iam.PolicyStatement(
                    sid="LogTrainingRuns",
                    actions=[f"sagemaker-mlflow:{a}" for a in MLFLOW_ACTIONS],
                    resources=[tracking_server_arn],
                ),
            ],
            "gate_model": [
                iam.PolicyStatement(
                    sid="ReadMetrics", actions=["s3:GetObject"], resources=[read_models]
                ),
                _decrypt(lake_key),
                _read_registry(group_arn, packages_arn),
                _list_registry(),
            ],
            "approve_or_reject": [
                iam.PolicyStatement(
                    sid="SetApproval",
                    actions=["sagemaker:UpdateModelPackage"],
                    resources=[packages_arn],
                )
            ],
            "deploy_model": [_read_registry(group_arn, packages_arn)],
        }
        self.functions: dict[str, lambda_.Function] = {}
        self.function_policies: dict[str, iam.ManagedPolicy] = {}
        for name in FUNCTIONS:
            self.functions[name] = self._function(
                name, env[name], grants[name], data_lake, LAKE_PREFIXES[name]
            )

    def _state_machine(
        self, data_lake: DataLakeStack, data_prep: DataPrepStack
    ) -> sfn.StateMachine:
        """The retraining state machine (`step_functions.training`) and its findings."""
        config = self.config
        lake, prefix = config.lake, config.resource_prefix
        bucket, lake_key = data_lake.lake, data_lake.key
        pipeline = TrainingPipeline(
            self,
            "Pipeline",
            glue_job_name=data_prep.jobs["prepare_training_data"].ref,
            training=TrainingJobSettings(
                image=tasks.DockerImage.from_registry(self.image.image_uri),
                # Immutable reference: the task would otherwise add grantRead on "*" for the
                # run-time channel URIs and key grants as an inline policy; TrainingJobPolicy
                # already names the exact prefixes and key.
                role=iam.Role.from_role_arn(
                    self, "TrainingJobRoleRef", self.training_role.role_arn, mutable=False
                ),
                vpc=self.vpc,
                subnets=self.subnets,
                security_group=self.security_group,
                key=lake_key,
                output_location=StaticS3Location(f"s3://{bucket.bucket_name}/{lake.models}"),
                instance_type=TRAINING_INSTANCE,
                name_prefix=prefix,
            ),
            functions=PipelineFunctions(**{n: self.functions[n] for n in FUNCTIONS}),
            topic=self.topic,
            approval_mode=config.approval_mode,
            bake_time=BAKE_TIME,
        )
        self.pipeline = pipeline
        state_machine = pipeline_state_machine(
            self,
            config=config,
            name=resource_name(config, "training"),
            definition=pipeline.definition,
            timeout=STATE_MACHINE_TIMEOUT,
            log_key=self.key,
            comment="Clinical NER retraining: prepare -> train -> register -> gate -> deploy",
        )
        self.key.grant(state_machine, "kms:GenerateDataKey", "kms:Decrypt")
        lake_key.grant(state_machine, "kms:CreateGrant", "kms:DescribeKey")  # job volume
        acknowledge_state_machine_policy(
            self,
            state_machine,
            self.functions,
            integrations="Lambda, Glue job, topic, training role and key",
            job_resource="training-job/*",
            job_reason="Training job names are generated per execution "
            "(<prefix>-<execution name>); the .sync integration creates, describes and stops "
            "them, so the grant covers training jobs in this account and region only.",
        )

        return state_machine

    def _approval_rule(self) -> events.Rule | None:
        """Manual approval mode: a human's approval of a package continues with the deploy."""
        if self.config.approval_mode is not ApprovalMode.MANUAL:
            return None
        return start_execution_rule(
            self,
            "ApprovalRule",
            state_machine=self.state_machine,
            description="A human approved a model package: continue with the deployment",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=["SageMaker Model Package State Change"],
                detail={
                    "ModelPackageGroupName": [self.model_package_group_name],
                    "ModelApprovalStatus": ["Approved"],
                },
            ),
            execution_input={
                "trigger": APPROVAL_TRIGGER,
                "model_package_arn": events.EventField.from_path("$.detail.ModelPackageArn"),
            },
            retry_attempts=4,
            max_event_age=Duration.hours(2),
        )

    # ---------------------------------------------------------------- helpers

    def _tracking_server(self, data_lake: DataLakeStack) -> str:
        """The managed MLflow tracking server and its role; returns the server's ARN."""
        config = self.config
        lake = config.lake
        role, policy = service_role(
            self,
            "MlflowTrackingServer",
            service="sagemaker.amazonaws.com",
            role_description="SageMaker managed MLflow: artifact store under the lake's mlflow/",
            policy_description="Least privilege of the MLflow tracking server: lake mlflow/ prefix",
            statements=[
                iam.PolicyStatement(
                    sid="ListArtifacts",
                    actions=["s3:ListBucket", "s3:GetBucketLocation"],
                    resources=[data_lake.lake_arn_ref()],
                    conditions={"StringLike": {"s3:prefix": [f"{lake.experiments}*"]}},
                ),
                iam.PolicyStatement(
                    sid="ReadWriteArtifacts",
                    actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                    resources=[data_lake.lake_object_arn(lake.experiments)],
                ),
                iam.PolicyStatement(
                    sid="UseLakeKey",
                    actions=["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
                    resources=[data_lake.key.key_arn],
                ),
            ],
        )
        data_lake.acknowledge_prefixes(
            policy,
            [lake.experiments],
            "The tracking server names artifact keys per experiment and run "
            "(mlflow/<experiment id>/<run id>/...) at run time; the wildcard covers exactly "
            "its artifact-store prefix.",
        )
        server = sagemaker.CfnMlflowTrackingServer(
            self,
            "MlflowTrackingServer",
            tracking_server_name=f"{config.resource_prefix}-mlflow",
            artifact_store_uri=f"s3://{data_lake.lake.bucket_name}/{lake.experiments}",
            role_arn=role.role_arn,
            tracking_server_size=config.tracking_server_size,
            # The pipeline registers models itself (with the gate); MLflow must not add a
            # second, ungated path into the model registry.
            automatic_model_registration=False,
            weekly_maintenance_window_start="Sun:03:00",
        )
        server.node.add_dependency(policy)
        server.apply_removal_policy(removal_policy(config))
        self.tracking_server = server
        return server.attr_tracking_server_arn

    def _function(
        self,
        name: str,
        environment: dict[str, str],
        statements: list[iam.PolicyStatement],
        data_lake: DataLakeStack,
        lake_prefixes: tuple[str, ...],
    ) -> lambda_.Function:
        fn_name = resource_name(self.config, name)
        fn, policy = pipeline_function(
            self,
            construct_title(name),
            config=self.config,
            function_name=fn_name,
            code_dir=name,
            description=f"Training pipeline step {name} (thin handler over clinical_ner)",
            role_description=f"Lambda {fn_name} of the training pipeline",
            statements=statements,
            environment=environment,
            log_key=self.key,
            memory_size=512 if name == "register_model" else 256,
            timeout=Duration.minutes(3),
            network=LambdaNetwork(self.vpc, self.subnets, self.security_group),
            star_reason="A Lambda function in a VPC manages its network interfaces through EC2 "
            "actions that support no resource-level permissions (AWS documents Resource * for "
            "them); the same holds for sagemaker:ListModelPackages where the function lists "
            "the group.",
        )
        self.function_policies[name] = policy
        data_lake.acknowledge_prefixes(
            policy,
            lake_prefixes,
            f"Lambda {fn_name} reads (and for register_model writes metrics.json beside) "
            "objects whose keys are generated per run (training job names, dataset versions); "
            "the wildcard covers exactly that lake prefix.",
        )
        if any("sagemaker:" in a for s in statements for a in s.actions):
            acknowledge(
                policy,
                f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:model-package/{self.model_package_group_name}/*]",
                "Model package versions are numbered by SageMaker at registration; the wildcard "
                "covers the versions of this stage's one model package group.",
            )
        return fn


class StaticS3Location(tasks.S3Location):
    """A fixed S3 URI that grants nothing: the roles' own policies name exact prefixes.

    ``S3Location.from_bucket`` would add ``grantReadWrite`` (DeleteObject*, Abort*, the key's
    ReEncrypt*/GenerateDataKey*) to the training role as an inline policy.
    """

    def __init__(self, uri: str) -> None:
        super().__init__()
        self._uri = uri

    def bind(
        self, task: Any, *, for_reading: bool | None = None, for_writing: bool | None = None
    ) -> tasks.S3LocationConfig:
        return tasks.S3LocationConfig(uri=self._uri)


def _decrypt(key: kms.IKey) -> iam.PolicyStatement:
    return iam.PolicyStatement(sid="DecryptLake", actions=["kms:Decrypt"], resources=[key.key_arn])


def _read_registry(group_arn: str, packages_arn: str) -> iam.PolicyStatement:
    return iam.PolicyStatement(
        sid="ReadRegistry",
        actions=["sagemaker:DescribeModelPackage", "sagemaker:DescribeModelPackageGroup"],
        resources=[group_arn, packages_arn],
    )


def _list_registry() -> iam.PolicyStatement:
    # sagemaker:ListModelPackages supports no resource-level permissions.
    return iam.PolicyStatement(
        sid="ListPackages", actions=["sagemaker:ListModelPackages"], resources=["*"]
    )
