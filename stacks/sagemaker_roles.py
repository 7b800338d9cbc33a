"""IAM statements every SageMaker container role needs: image pull, VPC interfaces, logs, metrics.

Training jobs, Batch Transform jobs and endpoints run our one image inside the VPC; their roles
differ only in data access, log group and metric namespace, so those are the parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import aws_iam as iam

# ENI management has no resource-level permissions; SageMaker calls these to attach the
# container to the VPC's subnets.
VPC_INTERFACE_ACTIONS = (
    "ec2:CreateNetworkInterface",
    "ec2:CreateNetworkInterfacePermission",
    "ec2:DeleteNetworkInterface",
    "ec2:DeleteNetworkInterfacePermission",
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


def container_statements(
    *,
    image_repository_arn: str,
    log_resources: Sequence[str],
    metric_namespace_condition: dict[str, dict[str, object]],
) -> list[iam.PolicyStatement]:
    """Image pull from our repository, ECR login + VPC interfaces, logs and scoped metrics."""
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
            sid="EcrLoginAndVpcInterfaces",
            actions=["ecr:GetAuthorizationToken", *VPC_INTERFACE_ACTIONS],
            resources=["*"],
        ),
        iam.PolicyStatement(
            sid="Metrics",
            actions=["cloudwatch:PutMetricData"],
            resources=["*"],
            conditions=metric_namespace_condition,
        ),
        iam.PolicyStatement(sid="Logs", actions=list(LOG_ACTIONS), resources=list(log_resources)),
    ]
