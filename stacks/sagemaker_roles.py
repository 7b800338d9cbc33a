"""IAM statements every SageMaker container role needs: image pull, VPC interfaces, logs, metrics.

Training jobs, Batch Transform jobs and endpoints run our one image inside the stage VPC; their
roles differ only in data access, log group and metric namespace, so those are the parameters.

VPC interfaces: SageMaker creates the container's elastic network interfaces (ENIs) with the
job's or model's role. The write actions are limited to network interfaces in the stage VPC's
isolated subnets (``ec2:Vpc`` / ``ec2:Subnet`` ARN conditions, keys of the EC2
``network-interface`` resource), and ``CreateNetworkInterface`` additionally names the exact
subnets and security group it may use. Only the describe calls, which support no resource-level
permissions, stay on ``*``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam

# Write actions on the ENI itself: conditioned on the stage VPC and its subnets.
ENI_WRITE_ACTIONS = (
    "ec2:CreateNetworkInterface",
    "ec2:CreateNetworkInterfacePermission",
    "ec2:DeleteNetworkInterface",
    "ec2:DeleteNetworkInterfacePermission",
)
# EC2 describe calls support no resource-level permissions (AWS documents Resource "*").
VPC_DESCRIBE_ACTIONS = (
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeVpcs",
    "ec2:DescribeDhcpOptions",
    "ec2:DescribeSubnets",
    "ec2:DescribeSecurityGroups",
)
LOG_ACTIONS = (
    "logs:CreateLogGroup",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "logs:DescribeLogStreams",
)


@dataclass(frozen=True)
class VpcPlacement:
    """ARNs of where SageMaker may place a container's network interfaces."""

    vpc_arn: str
    subnet_arns: tuple[str, ...]
    security_group_arns: tuple[str, ...]
    network_interfaces_arn: str  # arn:...:network-interface/* of this account and region


def vpc_placement(
    stack: Stack,
    vpc: ec2.IVpc,
    subnets: Sequence[ec2.ISubnet],
    groups: Sequence[ec2.ISecurityGroup],
) -> VpcPlacement:
    """The placement of `subnets` and `groups` of `vpc`, as ARNs valid in `stack`."""
    base = f"arn:{stack.partition}:ec2:{stack.region}:{stack.account}"
    return VpcPlacement(
        vpc_arn=f"{base}:vpc/{vpc.vpc_id}",
        subnet_arns=tuple(f"{base}:subnet/{s.subnet_id}" for s in subnets),
        security_group_arns=tuple(f"{base}:security-group/{g.security_group_id}" for g in groups),
        network_interfaces_arn=f"{base}:network-interface/*",
    )


def vpc_interface_statements(placement: VpcPlacement) -> list[iam.PolicyStatement]:
    """ENI management limited to the stage VPC's subnets and security group."""
    return [
        iam.PolicyStatement(
            sid="VpcInterfacesInStageSubnets",
            actions=list(ENI_WRITE_ACTIONS),
            resources=[placement.network_interfaces_arn],
            conditions={
                "ArnEquals": {
                    "ec2:Vpc": placement.vpc_arn,
                    "ec2:Subnet": list(placement.subnet_arns),
                }
            },
        ),
        iam.PolicyStatement(
            sid="VpcInterfaceSubnetsAndGroups",
            actions=["ec2:CreateNetworkInterface"],
            resources=[*placement.subnet_arns, *placement.security_group_arns],
        ),
    ]


def container_statements(
    *,
    image_repository_arn: str,
    log_resources: Sequence[str],
    metric_namespace_condition: dict[str, dict[str, object]],
    placement: VpcPlacement,
) -> list[iam.PolicyStatement]:
    """Image pull from our repository, ECR login, VPC interfaces, logs and scoped metrics."""
    return [
        iam.PolicyStatement(
            sid="PullImage",
            actions=[
                "ecr:BatchGetImage",
                "ecr:GetDownloadUrlForLayer",
                "ecr:BatchCheckLayerAvailability",
            ],
            resources=[image_repository_arn],
        ),
        iam.PolicyStatement(
            sid="EcrLoginAndVpcDescribe",
            actions=["ecr:GetAuthorizationToken", *VPC_DESCRIBE_ACTIONS],
            resources=["*"],
        ),
        *vpc_interface_statements(placement),
        iam.PolicyStatement(
            sid="Metrics",
            actions=["cloudwatch:PutMetricData"],
            resources=["*"],
            conditions=metric_namespace_condition,
        ),
        iam.PolicyStatement(sid="Logs", actions=list(LOG_ACTIONS), resources=list(log_resources)),
    ]


NETWORK_INTERFACES_ACK = (
    "SageMaker names each network interface it creates for the container at run time, so the "
    "ENI write actions name network-interface/* of this account and region; the ec2:Vpc and "
    "ec2:Subnet conditions hold them to the stage VPC's isolated subnets, and creation also "
    "needs the exact subnet and security group ARNs."
)


def network_interfaces_rule() -> str:
    """How cdk-nag names the ``network-interface/*`` resource in an AwsSolutions-IAM5 finding."""
    return (
        "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>"
        ":network-interface/*]"
    )
