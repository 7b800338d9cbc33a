"""A service role with its one customer-managed policy: the shape of every role in this app.

No AWS-managed and no inline policies (cdk-nag AwsSolutions-IAM4 and HIPAA's no-inline rule):
each role gets exactly one `iam.ManagedPolicy` that lists what it may do.
"""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from constructs import Construct


def service_role(
    scope: Construct,
    cid: str,
    *,
    service: str,
    role_description: str,
    statements: list[iam.PolicyStatement],
    policy_description: str | None = None,
    role_name: str | None = None,
) -> tuple[iam.Role, iam.ManagedPolicy]:
    """``{cid}Role`` assumed by `service` and ``{cid}Policy`` attached to it."""
    role = iam.Role(
        scope,
        f"{cid}Role",
        role_name=role_name,
        assumed_by=iam.ServicePrincipal(service),
        description=role_description,
    )
    policy = iam.ManagedPolicy(
        scope,
        f"{cid}Policy",
        description=policy_description,
        roles=[role],
        statements=statements,
    )
    return role, policy
