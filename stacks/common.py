"""Building blocks every stack composes: Lambda runtime and layers, keys, log groups, functions.

One place for each cross-cutting choice, so the stacks only say what is particular to them:

- `LAMBDA_RUNTIME` / `LAMBDA_ARCHITECTURE`: every function of the app.
- `core_layer`: the ``clinical_ner`` package as a Lambda layer, zipped once per synth. Each
  stack that has functions holds its own ``CoreLayer`` LayerVersion built from that one zip:
  sharing one LayerVersion across stacks would make its ARN a cross-stack export, and
  CloudFormation refuses to update an export another stack imports, which a new layer version
  (every change to the core package) always does.
- `powertools_layer`: the AWS-managed Powertools for AWS Lambda (Python) v3 layer, on every
  function, with its service name and metrics namespace in the environment.
- `stage_key`: a stage KMS key; its CloudWatch Logs and CloudWatch alarm statements are built
  here only, so every key grants the services the same actions.
- `encrypted_log_group`, `pipeline_function`, `pipeline_state_machine`: the shapes of a log
  group, a Lambda function (role, one managed policy, log group, layers, findings) and a
  state machine (logged, traced) in this app.

`stacks.aspects` checks on every synth that each function and log group has what these give.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import CfnParameter, Duration, Size, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from clinical_ner.pipeline.monitoring import NAMESPACE
from clinical_ner.pipeline.stage_config import StageConfig
from stacks.checks import acknowledge
from stacks.iam_roles import service_role
from stacks.naming import lambda_log_group_name, state_machine_log_group_name
from stacks.packaging import REPO_ROOT, build_layer_zip
from stacks.retention import removal_policy

LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_12
LAMBDA_ARCHITECTURE = lambda_.Architecture.ARM_64
RUNTIME_REASON = (
    "The runtime is pinned to Python 3.12, the newest version the core package declares and "
    "is tested on (pyproject requires-python >=3.11,<3.13); the core layer ships that code and "
    "the AWS-managed layers (Powertools, AWS SDK for pandas) are the Python 3.12 builds, so "
    "the runtime moves together with that pin."
)
SYNCHRONOUS_ONLY_REASON = (
    "Step Functions invokes this function synchronously (RequestResponse); a failure "
    "returns to the state machine, which retries and then notifies SNS. A dead-letter "
    "queue only receives failed asynchronous invocations, which never happen here."
)

CORE_LAYER_ID = "CoreLayer"
POWERTOOLS_LAYER_ID = "PowertoolsLayer"
PANDAS_LAYER_ID = "AwsSdkPandasLayer"
PANDAS_LAYER_PARAMETER = "AwsSdkPandasLayerArn"
PANDAS_LAYER_DOC = "https://aws-sdk-pandas.readthedocs.io/en/stable/layers.html"
# AWS publishes the Powertools layer from this account in every commercial region
# (docs.aws.amazon.com/powertools/python/latest/#lambda-layer). The layer version number is
# AWS's own counter, not the library version: bump it together with the aws-lambda-powertools
# pin in pyproject.toml (what the handlers are tested with) and check the pair with
# `aws lambda get-layer-version-by-arn --arn <arn>` (its Description names the release).
POWERTOOLS_ACCOUNT = "017000801446"
POWERTOOLS_LAYER_VERSION = 38
POWERTOOLS_SERVICE_NAME = "clinical-ner"
LAMBDA_CONCURRENCY = 5  # a pipeline runs one execution at a time; 5 leaves room for retries
LAMBDA_ENI_ACTIONS = (
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
)
# What CloudWatch Logs does with a log group's key (the symmetric-key calls it makes).
LOGS_KEY_ACTIONS = (
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:DescribeKey",
)
# What CloudWatch alarms need to publish to a topic encrypted with the key.
ALARMS_KEY_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey")


# ---------------------------------------------------------------------------- layers


@functools.cache
def core_layer_zip() -> Path:
    """The core-package layer zip, built once per process (content-addressed)."""
    return build_layer_zip(REPO_ROOT)


def core_layer(scope: Construct) -> lambda_.ILayerVersion:
    """The stack's one ``CoreLayer`` (created on first use)."""
    stack = Stack.of(scope)
    found = stack.node.try_find_child(CORE_LAYER_ID)
    if isinstance(found, lambda_.LayerVersion):
        return found
    return lambda_.LayerVersion(
        stack,
        CORE_LAYER_ID,
        code=lambda_.Code.from_asset(str(core_layer_zip())),
        compatible_runtimes=[LAMBDA_RUNTIME],
        description="clinical_ner core package (pure Python)",
    )


def powertools_layer_arn(scope: Construct) -> str:
    """The managed Powertools v3 layer for our runtime and architecture, in the stack's region."""
    runtime = LAMBDA_RUNTIME.name.replace(".", "")  # python3.12 -> python312
    arch = LAMBDA_ARCHITECTURE.name  # arm64: the layer carries compiled pydantic-core
    return (
        f"arn:aws:lambda:{Stack.of(scope).region}:{POWERTOOLS_ACCOUNT}:layer:"
        f"AWSLambdaPowertoolsPythonV3-{runtime}-{arch}:{POWERTOOLS_LAYER_VERSION}"
    )


def powertools_layer(scope: Construct) -> lambda_.ILayerVersion:
    """The stack's reference to the Powertools layer (created on first use)."""
    stack = Stack.of(scope)
    found = stack.node.try_find_child(POWERTOOLS_LAYER_ID)
    if found is not None:
        return found  # type: ignore[return-value]
    return lambda_.LayerVersion.from_layer_version_arn(
        stack, POWERTOOLS_LAYER_ID, powertools_layer_arn(stack)
    )


def pandas_layer(scope: Construct) -> lambda_.ILayerVersion:
    """The stack's AWS SDK for pandas layer (pyarrow, numpy), created on first use.

    Its ARN is the stack parameter `PANDAS_LAYER_PARAMETER`, not a constant like Powertools':
    AWS numbers this layer's versions per region (the table at `PANDAS_LAYER_DOC`), so no one
    ARN is right everywhere.
    """
    stack = Stack.of(scope)
    found = stack.node.try_find_child(PANDAS_LAYER_ID)
    if found is not None:
        return found  # type: ignore[return-value]
    arn = CfnParameter(
        stack,
        PANDAS_LAYER_PARAMETER,
        type="String",
        allowed_pattern=r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:layer:AWSSDKPandas-Python312-Arm64:\d+$",
        description=(
            "ARN of the AWS-managed AWS SDK for pandas layer (Python 3.12, arm64) in the "
            f"deployment region, from {PANDAS_LAYER_DOC}"
        ),
    )
    return lambda_.LayerVersion.from_layer_version_arn(stack, PANDAS_LAYER_ID, arn.value_as_string)


def powertools_environment() -> dict[str, str]:
    """What the Powertools logger and metrics read: one service, the pipeline's namespace."""
    return {
        "POWERTOOLS_SERVICE_NAME": POWERTOOLS_SERVICE_NAME,
        "POWERTOOLS_METRICS_NAMESPACE": NAMESPACE,
    }


# ------------------------------------------------------------------ keys and log groups


def stage_key(
    scope: Construct,
    cid: str,
    *,
    config: StageConfig,
    alias: str,
    description: str,
    cloudwatch_logs: bool = False,
    cloudwatch_alarms: bool = False,
) -> kms.Key:
    """A yearly-rotated stage key; optionally usable by CloudWatch Logs and alarms.

    The logs statement lets the service use the key only for log groups of this account and
    region; the alarms statement only for alarms of this account (publishing to a topic the
    key encrypts).
    """
    stack = Stack.of(scope)
    key = kms.Key(
        scope,
        cid,
        alias=alias,
        description=description,
        enable_key_rotation=True,
        rotation_period=Duration.days(365),
        removal_policy=removal_policy(config),
        pending_window=Duration.days(30),
    )
    if cloudwatch_logs:
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchLogsOfThisAccount",
                principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                actions=list(LOGS_KEY_ACTIONS),
                resources=["*"],  # in a key policy "*" means this key
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": (
                            f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:log-group:*"
                        )
                    }
                },
            )
        )
    if cloudwatch_alarms:
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsToPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=list(ALARMS_KEY_ACTIONS),
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
            )
        )
    return key


def encrypted_log_group(
    scope: Construct, cid: str, *, name: str, key: kms.IKey, config: StageConfig
) -> logs.LogGroup:
    """A log group encrypted with `key`, kept for the stage's log retention."""
    group = logs.LogGroup(
        scope, cid, log_group_name=name, encryption_key=key, removal_policy=removal_policy(config)
    )
    cfn = group.node.default_child
    assert isinstance(cfn, logs.CfnLogGroup)
    # Set on the L1: the stage's day counts (e.g. 2192) are plain numbers, not RetentionDays.
    cfn.retention_in_days = config.retention.log_group_days
    return group


# ------------------------------------------------------------------------- functions


@dataclass(frozen=True)
class LambdaNetwork:
    """Where a function runs in the stage VPC."""

    vpc: ec2.IVpc
    subnets: ec2.SubnetSelection
    security_group: ec2.ISecurityGroup


def pipeline_function(
    scope: Construct,
    title: str,
    *,
    config: StageConfig,
    function_name: str,
    code_dir: str,
    description: str,
    role_description: str,
    statements: Sequence[iam.PolicyStatement],
    environment: Mapping[str, str],
    log_key: kms.IKey,
    memory_size: int,
    timeout: Duration,
    network: LambdaNetwork | None,
    handler: str = "handler.handler",
    reserved_concurrency: int = LAMBDA_CONCURRENCY,
    extra_layers: Sequence[lambda_.ILayerVersion] = (),
    ephemeral_storage_size: Size | None = None,
    dead_letter_queue: sqs.Queue | None = None,
    async_retry_attempts: int | None = None,
    star_reason: str | None = None,
    outside_vpc_reason: str | None = None,
    synchronous_reason: str = SYNCHRONOUS_ONLY_REASON,
) -> tuple[lambda_.Function, iam.ManagedPolicy]:
    """`{title}Logs`, `{title}Role`, `{title}Policy` and `{title}Function` in `scope`.

    The role's only policy is one managed policy: `statements`, then writing its own log
    group, then (with `dead_letter_queue`) sending to the queue and using its key, then (in
    the VPC) managing its network interfaces. Layers: `extra_layers`, the core layer, and
    Powertools last (its pydantic and typing_extensions win over older copies in an AWS SDK
    for pandas layer). A function without a dead-letter queue is invoked synchronously only
    (a Step Functions step unless `synchronous_reason` says who else calls it); one outside
    the VPC must say why (`outside_vpc_reason`).
    """
    if network is not None and not star_reason:
        raise ValueError(f"{title}: a VPC function's policy has Resource '*'; give star_reason")
    if network is None and not outside_vpc_reason:
        raise ValueError(f"{title}: a function outside the VPC needs outside_vpc_reason")
    log_group = encrypted_log_group(
        scope,
        f"{title}Logs",
        name=lambda_log_group_name(function_name),
        key=log_key,
        config=config,
    )
    grants = [
        *statements,
        iam.PolicyStatement(
            sid="WriteOwnLogs",
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[log_group.log_group_arn],
        ),
    ]
    if dead_letter_queue is not None:
        grants.append(
            iam.PolicyStatement(
                sid="DeadLetters",
                actions=["sqs:SendMessage"],
                resources=[dead_letter_queue.queue_arn],
            )
        )
        if dead_letter_queue.encryption_master_key is not None:
            grants.append(
                iam.PolicyStatement(
                    sid="EncryptDeadLetters",
                    actions=["kms:GenerateDataKey", "kms:Decrypt"],
                    resources=[dead_letter_queue.encryption_master_key.key_arn],
                )
            )
    if network is not None:
        grants.append(
            iam.PolicyStatement(
                sid="VpcNetworkInterfaces", actions=list(LAMBDA_ENI_ACTIONS), resources=["*"]
            )
        )
    role, policy = service_role(
        scope,
        title,
        service="lambda.amazonaws.com",
        role_description=role_description,
        policy_description=f"Least privilege of Lambda {function_name}",
        statements=grants,
    )
    fn = lambda_.Function(
        scope,
        f"{title}Function",
        function_name=function_name,
        runtime=LAMBDA_RUNTIME,
        architecture=LAMBDA_ARCHITECTURE,
        handler=handler,
        code=lambda_.Code.from_asset(str(REPO_ROOT / "lambdas" / code_dir)),
        layers=[*extra_layers, core_layer(scope), powertools_layer(scope)],
        # The managed policy holds every grant; CDK's automatic ones (e.g. for the dead-letter
        # queue) would otherwise add an inline policy to the role.
        role=role.without_policy_updates() if dead_letter_queue is not None else role,
        dead_letter_queue=dead_letter_queue,
        retry_attempts=async_retry_attempts,
        environment={**environment, **powertools_environment()},
        memory_size=memory_size,
        ephemeral_storage_size=ephemeral_storage_size,
        timeout=timeout,
        reserved_concurrent_executions=reserved_concurrency,
        vpc=network.vpc if network else None,
        vpc_subnets=network.subnets if network else None,
        security_groups=[network.security_group] if network else None,
        log_group=log_group,
        description=description,
    )
    fn.node.add_dependency(policy)  # grants (ENI permissions above all) before the function
    acknowledge(fn, "AwsSolutions-L1", RUNTIME_REASON)
    if star_reason:
        acknowledge(policy, "AwsSolutions-IAM5[Resource::*]", star_reason)
    if outside_vpc_reason:
        acknowledge(fn, "HIPAA.Security-LambdaInsideVPC", outside_vpc_reason)
    if dead_letter_queue is None:
        acknowledge(fn, "HIPAA.Security-LambdaDLQ", synchronous_reason)
    return fn, policy


# --------------------------------------------------------------------- state machines


def pipeline_state_machine(
    scope: Construct,
    *,
    config: StageConfig,
    name: str,
    definition: sfn.IChainable,
    timeout: Duration,
    log_key: kms.IKey,
    comment: str,
) -> sfn.StateMachine:
    """``StateMachine`` `name`: X-Ray traced, every event logged without execution data.

    Execution data (inputs and outputs of states) is left out of the logs: it carries object
    keys and run summaries, and the execution history keeps it access-controlled.
    """
    log_group = encrypted_log_group(
        scope,
        "StateMachineLogs",
        name=state_machine_log_group_name(name),
        key=log_key,
        config=config,
    )
    return sfn.StateMachine(
        scope,
        "StateMachine",
        state_machine_name=name,
        definition_body=sfn.DefinitionBody.from_chainable(definition),
        timeout=timeout,
        tracing_enabled=True,
        logs=sfn.LogOptions(
            destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False
        ),
        comment=comment,
    )
