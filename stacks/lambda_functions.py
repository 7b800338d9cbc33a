"""A pipeline-step Lambda in the stage VPC: own role, managed policy, log group and findings.

The training and extraction state machines call their steps synchronously; each step gets a
role whose only policy is a managed one (no inline policies), the right to write its own log
group and to manage its VPC network interfaces.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, Size
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.checks import acknowledge
from stacks.iam_roles import service_role
from stacks.packaging import REPO_ROOT

LAMBDA_ENI_ACTIONS = (
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
)


def vpc_step_function(
    scope: Construct,
    title: str,
    *,
    function_name: str,
    pipeline: str,
    code_dir: str,
    handler: str,
    runtime: lambda_.Runtime,
    layers: Sequence[lambda_.ILayerVersion],
    environment: dict[str, str],
    statements: Sequence[iam.PolicyStatement],
    log_group: logs.ILogGroup,
    vpc: ec2.IVpc,
    subnets: ec2.SubnetSelection,
    security_group: ec2.ISecurityGroup,
    memory_size: int,
    timeout: Duration,
    reserved_concurrency: int,
    description: str,
    star_reason: str,
    runtime_reason: str,
    ephemeral_storage_size: Size | None = None,
    dead_letter_queue: sqs.IQueue | None = None,
) -> tuple[lambda_.Function, iam.ManagedPolicy]:
    """`{title}Role`, `{title}Policy` and `{title}Function` in `scope`; returns function, policy.

    A function that is also invoked asynchronously gets `dead_letter_queue`; its policy must
    then grant ``sqs:SendMessage`` on it (and the queue key), since the role takes no
    automatic grants.
    """
    role, policy = service_role(
        scope,
        title,
        service="lambda.amazonaws.com",
        role_description=f"Lambda {function_name} of the {pipeline} pipeline",
        policy_description=f"Least privilege of Lambda {function_name}",
        statements=[
            *statements,
            iam.PolicyStatement(
                sid="WriteOwnLogs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[log_group.log_group_arn],
            ),
            iam.PolicyStatement(
                sid="VpcNetworkInterfaces", actions=list(LAMBDA_ENI_ACTIONS), resources=["*"]
            ),
        ],
    )
    fn = lambda_.Function(
        scope,
        f"{title}Function",
        function_name=function_name,
        runtime=runtime,
        architecture=lambda_.Architecture.ARM_64,
        handler=handler,
        code=lambda_.Code.from_asset(str(REPO_ROOT / "lambdas" / code_dir)),
        layers=list(layers),
        # The managed policy holds every grant; CDK's automatic ones (e.g. for the dead-letter
        # queue) would otherwise add an inline policy to the role.
        role=role.without_policy_updates() if dead_letter_queue is not None else role,
        dead_letter_queue=dead_letter_queue,
        environment=environment,
        memory_size=memory_size,
        ephemeral_storage_size=ephemeral_storage_size,
        timeout=timeout,
        reserved_concurrent_executions=reserved_concurrency,
        vpc=vpc,
        vpc_subnets=subnets,
        security_groups=[security_group],
        log_group=log_group,
        description=description,
    )
    fn.node.add_dependency(policy)  # ENI permissions must exist before the VPC function
    acknowledge(policy, "AwsSolutions-IAM5[Resource::*]", star_reason)
    acknowledge(fn, "AwsSolutions-L1", runtime_reason)
    if dead_letter_queue is None:
        acknowledge(
            fn,
            "HIPAA.Security-LambdaDLQ",
            "Step Functions invokes this function synchronously (RequestResponse); a failure "
            "returns to the state machine, which retries and then notifies SNS. A dead-letter "
            "queue only receives failed asynchronous invocations, which never happen here.",
        )
    return fn, policy
