"""Compliance checks that run on every synth, and the one way to acknowledge a finding.

`add_compliance_checks(app)` registers the cdk-nag AWS Solutions and HIPAA Security packs as
CDK validation plugins: any finding that is not acknowledged makes ``app.synth()`` (and so
``cdk synth`` / ``cdk deploy``) fail with ``ValidationFailed``.

`acknowledge(resource, rule, reason)` is the only sanctioned way to accept a finding. It
refuses acknowledgements on a Stack or App (each one must name a resource), refuses empty or
boilerplate reasons, and records every acknowledgement in construct metadata so that tests and
docs can list them (`acknowledgements`). Later stacks use the same two functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aws_cdk import Acknowledgment, App, Stack, Stage, Validations
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks
from constructs import IConstruct

METADATA_TYPE = "clinical-ner:nag-acknowledgement"
RULE_PACK_PREFIXES = ("AwsSolutions-", "HIPAA.Security-")
MIN_REASON_CHARS = 60

# Reasons that explain nothing about the resource. Matched case-insensitively against the
# whole reason with punctuation stripped, and as phrases anywhere in short reasons.
GENERIC_REASONS = (
    "n/a",
    "na",
    "none",
    "ok",
    "todo",
    "tbd",
    "fixme",
    "ignore",
    "ignored",
    "not needed",
    "not required",
    "not applicable",
    "false positive",
    "suppressed",
    "acknowledged",
    "accepted risk",
    "by design",
    "intended",
    "as designed",
    "this is fine",
    "required",
    "needed",
    "known issue",
    "see docs",
    "see documentation",
)
_GENERIC_PHRASES = re.compile(
    r"\b(todo|tbd|fixme|false positive|not needed|not required|will fix later|temporary)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class AckRecord:
    """One acknowledged finding: which rule, on which resource (construct path), and why."""

    rule: str
    path: str
    reason: str


def add_compliance_checks(app: App | Stage) -> None:
    """Run AwsSolutions and HIPAA Security on everything under `app` at synth time."""
    Validations.of(app).add_plugins(
        AwsSolutionsChecks(app, verbose=True),
        HIPAASecurityChecks(app, verbose=True),
    )


def reason_problem(rule: str, reason: str) -> str | None:
    """Why `reason` is not an acceptable acknowledgement reason for `rule`, or None."""
    text = (reason or "").strip()
    if not text:
        return "reason is empty"
    bare = re.sub(r"[^a-z/ ]", "", text.lower()).strip()
    if bare in GENERIC_REASONS:
        return f"reason {text!r} is generic"
    if len(text) < MIN_REASON_CHARS:
        return f"reason has {len(text)} characters; explain it in at least {MIN_REASON_CHARS}"
    if _GENERIC_PHRASES.search(text):
        return "reason defers or dismisses the finding instead of justifying it"
    base = rule.split("[", 1)[0]
    if base in text:
        return "reason repeats the rule id instead of explaining the exception"
    return None


def acknowledge(resource: IConstruct, rule: str, reason: str) -> None:
    """Accept one cdk-nag finding on one resource, with a specific reason.

    `rule` is the finding id as cdk-nag prints it, e.g. ``AwsSolutions-S1`` or
    ``AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:...:*]``.
    """
    if not rule.startswith(RULE_PACK_PREFIXES):
        raise ValueError(f"{rule!r} is not a rule of the AwsSolutions or HIPAA Security pack")
    if isinstance(resource, Stack | App | Stage):
        raise ValueError(
            f"acknowledge {rule} on the resource it concerns, not on {resource.node.path!r}"
        )
    problem = reason_problem(rule, reason)
    if problem is not None:
        raise ValueError(f"{rule} on {resource.node.path}: {problem}")
    Validations.of(resource).acknowledge(Acknowledgment(id=rule, reason=reason))
    resource.node.add_metadata(METADATA_TYPE, {"rule": rule, "reason": reason})


def acknowledgements(scope: IConstruct) -> list[AckRecord]:
    """Every acknowledgement made with `acknowledge` under `scope`, in tree order."""
    found: list[AckRecord] = []
    for node in scope.node.find_all():
        for entry in node.node.metadata:
            if entry.type == METADATA_TYPE:
                data = entry.data
                found.append(AckRecord(data["rule"], node.node.path, data["reason"]))
    return found


def acknowledge_state_machine_policy(
    stack: Stack,
    state_machine: IConstruct,
    functions: dict[str, IConstruct],
    *,
    integrations: str,
    job_resource: str,
    job_reason: str,
) -> None:
    """The findings on a state machine role's CDK-generated policy, with their reasons.

    `functions` maps a name to each Lambda the definition invokes; `job_resource` is the
    SageMaker job ARN pattern (e.g. ``training-job/*``) its ``.sync`` integration is granted.
    """
    policy = state_machine.role.node.find_child("DefaultPolicy")  # type: ignore[attr-defined]
    acknowledge(
        policy,
        "HIPAA.Security-IAMNoInlinePolicy",
        f"CDK generates this policy from the task integrations (each statement names the "
        f"exact {integrations} the definition uses) and keeps it in step with the definition; "
        "it is attached to this role only.",
    )
    for name, fn in functions.items():
        arn_token = stack.resolve(fn.function_arn)["Fn::GetAtt"][0]  # type: ignore[attr-defined]
        acknowledge(
            policy,
            f"AwsSolutions-IAM5[Resource::<{arn_token}.Arn>:*]",
            f"Invoke permission on the versions and aliases of the {name} function "
            "(function ARN plus ':*' qualifier), which the Lambda integration grants; "
            "no other function.",
        )
    acknowledge(
        policy,
        "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:"
        f"<AWS::AccountId>:{job_resource}]",
        job_reason,
    )
    acknowledge(
        policy,
        "AwsSolutions-IAM5[Resource::*]",
        "CloudWatch Logs delivery (vended logs of the state machine), X-Ray trace "
        "publishing and sagemaker:ListTags used by the .sync integration support no "
        "resource-level permissions.",
    )
