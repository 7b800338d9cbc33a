"""Cross-cutting rules checked on every synth (CDK Aspects), so no stack can drift from them.

`StageConventions` checks both rules:

- functions: every Lambda function carries its stack's core layer and the
  Powertools layer, a reserved concurrency, and logs to a KMS-encrypted log group with a
  retention. (Its environment cannot be read back here: the L1 property reaches Python as an
  empty struct; tests/infra/test_stack_building_blocks.py checks the Powertools variables on
  the templates.)
- log groups: every log group is KMS-encrypted and has a retention.

A broken rule is an error annotation on the resource (message starting with `PREFIX`):
``cdk synth`` fails and lists it; tests find it with ``assertions.Annotations``.
"""

from __future__ import annotations

import json
from typing import Any

import jsii
from aws_cdk import Annotations, IAspect, Stack
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import IConstruct

from stacks.common import CORE_LAYER_ID

PREFIX = "clinical-ner convention:"


def _log_group_problems(group: logs.CfnLogGroup) -> list[str]:
    problems = []
    if group.kms_key_id is None:
        problems.append("log group is not KMS-encrypted (kms_key_id)")
    if group.retention_in_days is None:
        problems.append("log group has no retention (retention_in_days)")
    return problems


def _lambda_problems(fn: lambda_.CfnFunction) -> list[str]:
    stack = Stack.of(fn)
    problems: list[str] = []
    layers = json.dumps(stack.resolve(fn.layers) or [])
    core = stack.node.try_find_child(CORE_LAYER_ID)
    if not isinstance(core, lambda_.LayerVersion) or (
        json.dumps(stack.resolve(core.layer_version_arn)) not in layers
    ):
        problems.append("function lacks the stack's core layer (stacks.common.core_layer)")
    if "AWSLambdaPowertoolsPythonV3-" not in layers:
        problems.append("function lacks the Powertools layer (stacks.common.powertools_layer)")
    if fn.reserved_concurrent_executions is None:
        problems.append("function has no reserved concurrency")
    logging: Any = stack.resolve(fn.logging_config) or {}
    ref = (
        (logging.get("logGroup") or logging.get("LogGroup") or {})
        if isinstance(logging, dict)
        else {}
    )
    group = _log_group_by_ref(stack, ref)
    if group is None:
        problems.append("function does not log to a log group of its stack (log_group)")
    else:
        problems.extend(f"its {p}" for p in _log_group_problems(group))
    return problems


def _log_group_by_ref(stack: Stack, ref: Any) -> logs.CfnLogGroup | None:
    if not isinstance(ref, dict) or "Ref" not in ref:
        return None
    for node in stack.node.find_all():
        if isinstance(node, logs.CfnLogGroup) and stack.get_logical_id(node) == ref["Ref"]:
            return node
    return None


@jsii.implements(IAspect)
class StageConventions:
    """Reports every broken function or log group rule as an error annotation."""

    def visit(self, node: IConstruct) -> None:
        problems: list[str] = []
        if isinstance(node, lambda_.CfnFunction):
            problems = _lambda_problems(node)
        elif isinstance(node, logs.CfnLogGroup):
            problems = _log_group_problems(node)
        for problem in problems:
            Annotations.of(node).add_error(f"{PREFIX} {problem}")
