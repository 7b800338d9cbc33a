"""Serving stack: the SageMaker model execution role, the deploy Lambda's permissions and the
CloudWatch alarms that roll a deployment back.

The endpoint itself is created and updated by the training pipeline's ``deploy_model`` Lambda
(`clinical_ner.pipeline.deployment`), because its model comes from the registry at run time: an
Approved package, not a CloudFormation property. This stack owns everything that deployment
needs and that does not change per model:

- ``<prefix>-sagemaker-model`` role: what the endpoint's container may do (pull the image from
  the CDK asset repository, read ``models/`` artifacts in the lake, decrypt with the lake key,
  write its CloudWatch logs and ``/aws/sagemaker/Endpoints`` metrics; ENI management in the
  stage VPC's subnets for provisioned variants; SageMaker data capture writes, KMS-encrypted,
  under ``monitoring/capture/<endpoint>/`` only).
- The deploy Lambda's policy (attached to its role from the training stack): create models and
  endpoint configs named ``<endpoint>-*``, create/update the one endpoint, pass the model role,
  read the rollback alarms, manage the variant's auto scaling (SageMaker variant scalable
  targets only; the endpoint itself by name).
- Two alarms on the endpoint (5xx errors, p99 model latency) with fixed names: deployment
  guardrails (provisioned) roll back on them; the pipeline's verify step (serverless) does.
  Both notify the pipeline topic.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from constructs import Construct

from clinical_ner.pipeline.deployment import SCALABLE_DIMENSION, VARIANT
from clinical_ner.pipeline.stage_config import StageConfig
from clinical_ner.runtime.capture import endpoint_capture_prefix
from stacks.checks import acknowledge
from stacks.data_lake import DataLakeStack
from stacks.iam_roles import service_role
from stacks.naming import serving_names
from stacks.sagemaker_roles import (
    NETWORK_INTERFACES_ACK,
    container_statements,
    network_interfaces_rule,
)

# Rollback alarm thresholds (documented in docs/training-pipeline.md).
ERRORS_5XX_PER_MINUTE = 1  # any 5xx in two consecutive minutes
LATENCY_P99_MICROSECONDS = 2_000_000  # 2 s per request (a batch of up to 32 notes)
LATENCY_PERIODS = 3
ENDPOINT_METRICS_NAMESPACE = "/aws/sagemaker/Endpoints"


class ServingStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        data_lake: DataLakeStack,
        training: Any,  # stacks.training.TrainingStack: vpc_placement, topic, deploy_role
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.names = names = serving_names(config)
        lake = config.lake
        partition, region, account = self.partition, self.region, self.account
        # Where SageMaker data capture writes this endpoint's files (clinical_ner.runtime.capture).
        self.capture_prefix = endpoint_capture_prefix(lake.monitoring, names.endpoint)

        self._model_role(data_lake, training, partition, region, account)
        self._rollback_alarms(training)
        self._deploy_permissions(data_lake, training, partition, region, account)

    def _model_role(
        self, data_lake: DataLakeStack, training: Any, partition: str, region: str, account: str
    ) -> None:
        """The endpoint models' role: image, model artifacts, data capture, logs, metrics."""
        names, lake = self.names, self.config.lake
        endpoint_logs = (
            f"arn:{partition}:logs:{region}:{account}"
            f":log-group:/aws/sagemaker/Endpoints/{names.endpoint}"
        )
        self.model_role, model_policy = service_role(
            self,
            "Model",
            role_name=names.model_role,
            service="sagemaker.amazonaws.com",
            role_description="SageMaker endpoint models of the clinical NER pipeline",
            policy_description="What the endpoint container may do: image, model artifacts, logs",
            statements=[
                iam.PolicyStatement(
                    sid="ReadModelArtifacts",
                    actions=["s3:GetObject"],
                    resources=[data_lake.lake_object_arn(lake.models)],
                ),
                iam.PolicyStatement(
                    sid="DecryptModelArtifacts",
                    actions=["kms:Decrypt", "kms:DescribeKey"],
                    resources=[data_lake.key.key_arn],
                ),
                # SageMaker data capture writes this endpoint's requests and responses (note
                # text: PHI) with this role, SSE-KMS with the lake key, under its own prefix.
                iam.PolicyStatement(
                    sid="WriteDataCapture",
                    actions=["s3:PutObject"],
                    resources=[data_lake.lake_object_arn(self.capture_prefix)],
                ),
                iam.PolicyStatement(
                    sid="EncryptDataCapture",
                    actions=["kms:Encrypt", "kms:GenerateDataKey"],
                    resources=[data_lake.key.key_arn],
                ),
                *container_statements(
                    image_repository_arn=training.image_repository_arn,
                    log_resources=[endpoint_logs, f"{endpoint_logs}:*"],
                    # Instance metrics of an endpoint go to exactly this namespace; the
                    # container publishes none of its own.
                    metric_namespace_condition={
                        "StringEquals": {"cloudwatch:namespace": ENDPOINT_METRICS_NAMESPACE}
                    },
                    placement=training.vpc_placement,
                ),
            ],
        )
        acknowledge(
            model_policy,
            f"AwsSolutions-IAM5[Resource::{data_lake.nag_object_resource(self.capture_prefix)}]",
            "SageMaker data capture names its files <variant>/YYYY/MM/DD/HH/<id>.jsonl at run "
            "time; the wildcard covers only this endpoint's capture prefix and only PutObject.",
        )
        acknowledge(model_policy, network_interfaces_rule(), NETWORK_INTERFACES_ACK)
        acknowledge(
            model_policy,
            f"AwsSolutions-IAM5[Resource::{data_lake.nag_object_resource(lake.models)}]",
            "The endpoint reads the model.tar.gz of whichever approved training job it serves; "
            "job names are generated per run, so the grant covers the lake's models/ prefix "
            "and nothing else.",
        )
        acknowledge(
            model_policy,
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken, cloudwatch:PutMetricData and the EC2 describe calls "
            "SageMaker makes to place a provisioned variant in the VPC support no "
            "resource-level permissions; metrics are limited to the /aws/sagemaker/Endpoints "
            "namespace by condition.",
        )
        acknowledge(
            model_policy,
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:/aws/sagemaker/Endpoints/{names.endpoint}:*]",
            "SageMaker names one log stream per variant instance at run time inside the "
            "endpoint's own log group; the wildcard covers that one log group's streams.",
        )

    def _rollback_alarms(self, training: Any) -> None:
        """The 5xx and p99-latency alarms a deployment rolls back on (to the pipeline topic)."""
        names = self.names
        dims = {"EndpointName": names.endpoint, "VariantName": VARIANT}
        alarm_action = cw_actions.SnsAction(training.topic)
        self.alarm_5xx = cw.Alarm(
            self,
            "Endpoint5xxAlarm",
            alarm_name=names.alarm_5xx,
            alarm_description="Endpoint returned 5xx: deployments roll back on this alarm",
            metric=cw.Metric(
                namespace="AWS/SageMaker",
                metric_name="Invocation5XXErrors",
                dimensions_map=dims,
                statistic="Sum",
                period=Duration.minutes(1),
            ),
            threshold=ERRORS_5XX_PER_MINUTE,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=2,
            datapoints_to_alarm=2,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        self.alarm_latency = cw.Alarm(
            self,
            "EndpointLatencyAlarm",
            alarm_name=names.alarm_latency,
            alarm_description="Endpoint p99 model latency too high: deployments roll back",
            metric=cw.Metric(
                namespace="AWS/SageMaker",
                metric_name="ModelLatency",
                dimensions_map=dims,
                statistic="p99",
                period=Duration.minutes(1),
            ),
            threshold=LATENCY_P99_MICROSECONDS,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=LATENCY_PERIODS,
            datapoints_to_alarm=LATENCY_PERIODS,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        for alarm in (self.alarm_5xx, self.alarm_latency):
            alarm.add_alarm_action(alarm_action)
            alarm.add_ok_action(alarm_action)

    def _deploy_permissions(
        self, data_lake: DataLakeStack, training: Any, partition: str, region: str, account: str
    ) -> None:
        """What the deploy_model Lambda may do: this stage's models, configs, endpoint, scaling."""
        names = self.names
        sm_arn = f"arn:{partition}:sagemaker:{region}:{account}"
        deploy_policy = iam.ManagedPolicy(
            self,
            "DeployPolicy",
            description="deploy_model Lambda: models/configs/endpoint of this stage only",
            roles=[training.deploy_role],
            statements=[
                iam.PolicyStatement(
                    sid="CreateModelsAndConfigs",
                    actions=["sagemaker:CreateModel", "sagemaker:CreateEndpointConfig"],
                    resources=[
                        f"{sm_arn}:model/{names.endpoint}-*",
                        f"{sm_arn}:endpoint-config/{names.endpoint}-*",
                    ],
                ),
                iam.PolicyStatement(
                    sid="ReadConfigs",
                    actions=["sagemaker:DescribeEndpointConfig"],
                    resources=[f"{sm_arn}:endpoint-config/{names.endpoint}-*"],
                ),
                iam.PolicyStatement(
                    sid="CreateOrUpdateEndpoint",
                    actions=[
                        "sagemaker:CreateEndpoint",
                        "sagemaker:UpdateEndpoint",
                        "sagemaker:DescribeEndpoint",
                    ],
                    resources=[
                        f"{sm_arn}:endpoint/{names.endpoint}",
                        f"{sm_arn}:endpoint-config/{names.endpoint}-*",
                    ],
                ),
                iam.PolicyStatement(
                    sid="PassModelRole",
                    actions=["iam:PassRole"],
                    resources=[self.model_role.role_arn],
                    conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
                ),
                iam.PolicyStatement(
                    sid="ReadRollbackAlarms",
                    actions=["cloudwatch:DescribeAlarms"],
                    resources=[self.alarm_5xx.alarm_arn, self.alarm_latency.alarm_arn],
                ),
                # Scalable targets have ARNs with a generated id (scalable-target/<id>), so the
                # statement names that pattern and is held to SageMaker variant instance counts
                # by the two Application Auto Scaling condition keys.
                iam.PolicyStatement(
                    sid="VariantAutoScaling",
                    actions=[
                        "application-autoscaling:RegisterScalableTarget",
                        "application-autoscaling:DeregisterScalableTarget",
                        "application-autoscaling:PutScalingPolicy",
                    ],
                    resources=[
                        f"arn:{partition}:application-autoscaling:{region}:{account}"
                        ":scalable-target/*"
                    ],
                    conditions={
                        "StringEquals": {
                            "application-autoscaling:service-namespace": "sagemaker",
                            "application-autoscaling:scalable-dimension": SCALABLE_DIMENSION,
                        }
                    },
                ),
                # Registering a SageMaker variant calls these on the caller's behalf.
                iam.PolicyStatement(
                    sid="AutoScaledEndpoint",
                    actions=[
                        "sagemaker:DescribeEndpoint",
                        "sagemaker:UpdateEndpointWeightsAndCapacities",
                    ],
                    resources=[f"{sm_arn}:endpoint/{names.endpoint}"],
                ),
                iam.PolicyStatement(
                    sid="AutoScalingServiceLinkedRole",
                    actions=["iam:CreateServiceLinkedRole"],
                    resources=[
                        f"arn:{partition}:iam::{account}:role/aws-service-role/"
                        "sagemaker.application-autoscaling.amazonaws.com/"
                        "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
                    ],
                    conditions={
                        "StringLike": {
                            "iam:AWSServiceName": "sagemaker.application-autoscaling.amazonaws.com"
                        }
                    },
                ),
                iam.PolicyStatement(
                    sid="EncryptProvisionedVolumes",
                    actions=["kms:CreateGrant", "kms:DescribeKey"],
                    resources=[data_lake.key.key_arn],
                    conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}},
                ),
            ],
        )
        acknowledge(
            deploy_policy,
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:model/{names.endpoint}-*]",
            "Each deployment creates a new model named <endpoint>-v<package version>-<UTC "
            "timestamp>; the wildcard is limited to models carrying this endpoint's name.",
        )
        acknowledge(
            deploy_policy,
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:endpoint-config/{names.endpoint}-*]",
            "Each deployment creates a new endpoint config named like its model; the wildcard "
            "is limited to configs carrying this endpoint's name (old ones are rollback targets).",
        )
        acknowledge(
            deploy_policy,
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:application-autoscaling:"
            "<AWS::Region>:<AWS::AccountId>:scalable-target/*]",
            "A scalable target's ARN ends in an id Application Auto Scaling generates when the "
            "variant is registered, so it cannot be named in advance; the statement is held to "
            "the sagemaker service namespace and the variant DesiredInstanceCount dimension.",
        )
