"""Least privilege of the SageMaker roles and the deploy role; endpoint data capture wiring.

- Deploy role: auto scaling actions only on SageMaker variant scalable targets (ARN pattern +
  service-namespace / scalable-dimension conditions), the endpoint calls on the one endpoint,
  nothing on ``*``.
- Training, transform and endpoint model roles: the ENI write actions only on network
  interfaces of the stage VPC's subnets (``ec2:Vpc`` / ``ec2:Subnet``), creation only in the
  named subnets and security group; only describe calls, ECR login and namespace-conditioned
  metrics on ``*``.
- Endpoint role: metrics only to ``/aws/sagemaker/Endpoints``; data capture writes to the
  endpoint's ``monitoring/capture/`` prefix only, KMS-encrypted.
- Capture consumers: the deploy Lambda gets the destination and the stage's sampling
  percentage; the drift monitor runs daily on the capture, with a dead-letter queue.
"""

from __future__ import annotations

import json
from typing import Any

from clinical_ner.runtime.capture import capture_s3_uri
from stacks.serving import serving_names

ENI_WRITES = {
    "ec2:CreateNetworkInterface",
    "ec2:CreateNetworkInterfacePermission",
    "ec2:DeleteNetworkInterface",
    "ec2:DeleteNetworkInterfacePermission",
}


def _actions(statement: dict[str, Any]) -> list[str]:
    a = statement["Action"]
    return a if isinstance(a, list) else [a]


def _resources(statement: dict[str, Any]) -> list[Any]:
    r = statement["Resource"]
    return r if isinstance(r, list) else [r]


def _policy(synth, stack, logical_prefix: str) -> list[dict[str, Any]]:
    (policy,) = [
        p
        for k, p in synth.resources(stack, "AWS::IAM::ManagedPolicy").items()
        if k.startswith(logical_prefix)
    ]
    return policy["Properties"]["PolicyDocument"]["Statement"]


def test_deploy_policy_scopes_auto_scaling_and_endpoint_calls(synth):
    names = serving_names(synth.stacks.config)
    statements = _policy(synth, synth.stacks.serving, "DeployPolicy")
    assert not [s for s in statements if "*" in _resources(s)], "nothing on Resource *"
    by_action = {a: s for s in statements for a in _actions(s)}
    for action in (
        "application-autoscaling:RegisterScalableTarget",
        "application-autoscaling:DeregisterScalableTarget",
        "application-autoscaling:PutScalingPolicy",
    ):
        s = by_action[action]
        (resource,) = _resources(s)
        assert json.dumps(resource).endswith(':scalable-target/*"]]}')
        assert ":application-autoscaling:" in json.dumps(resource)
        assert s["Condition"] == {
            "StringEquals": {
                "application-autoscaling:service-namespace": "sagemaker",
                "application-autoscaling:scalable-dimension": (
                    "sagemaker:variant:DesiredInstanceCount"
                ),
            }
        }
    weights = by_action["sagemaker:UpdateEndpointWeightsAndCapacities"]
    (resource,) = _resources(weights)
    assert json.dumps(resource).endswith(f':endpoint/{names.endpoint}"]]}}')
    assert "application-autoscaling:DescribeScalableTargets" not in by_action  # never called


def _container_policies(synth) -> dict[str, list[dict[str, Any]]]:
    s = synth.stacks
    return {
        "TrainingJobPolicy": _policy(synth, s.training, "TrainingJobPolicy"),
        "TransformModelPolicy": _policy(synth, s.extraction, "TransformModelPolicy"),
        "ModelPolicy": _policy(synth, s.serving, "ModelPolicy"),
    }


def test_sagemaker_roles_manage_network_interfaces_only_in_the_stage_vpc(synth):
    subnets = len(synth.stacks.training.vpc.isolated_subnets)
    for name, statements in _container_policies(synth).items():
        eni = [s for s in statements if ENI_WRITES & set(_actions(s))]
        assert eni, name
        seen: set[str] = set()
        for s in eni:
            resources = _resources(s)
            assert "*" not in resources, (name, s["Sid"])
            text = json.dumps(resources)
            if "network-interface/*" in text:
                assert set(_actions(s)) == ENI_WRITES, name
                cond = s["Condition"]["ArnEquals"]
                assert ":vpc/" in json.dumps(cond["ec2:Vpc"]), name
                assert len(cond["ec2:Subnet"]) == subnets, name
                assert all(":subnet/" in json.dumps(x) for x in cond["ec2:Subnet"]), name
            else:  # creation also names the exact subnets and security group
                assert _actions(s) == ["ec2:CreateNetworkInterface"], name
                assert text.count(":subnet/") == subnets, name
                assert text.count(":security-group/") == 1, name
            seen.update(_actions(s))
        assert seen == ENI_WRITES, name
        for s in statements:  # what remains on * is what AWS offers no resource for
            if "*" in _resources(s):
                for action in _actions(s):
                    assert action.startswith(("ec2:Describe", "ecr:GetAuthorizationToken")) or (
                        action == "cloudwatch:PutMetricData" and "Condition" in s
                    ), (name, action)


def test_metric_namespaces_are_exactly_the_ones_used(synth):
    expected = {
        "TrainingJobPolicy": "/aws/sagemaker/TrainingJobs",
        "TransformModelPolicy": "/aws/sagemaker/TransformJobs",
        "ModelPolicy": "/aws/sagemaker/Endpoints",
    }
    for name, statements in _container_policies(synth).items():
        (metrics,) = [s for s in statements if "cloudwatch:PutMetricData" in _actions(s)]
        assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": expected[name]}}, (
            name
        )


def test_endpoint_role_writes_capture_only_under_its_prefix(synth):
    names = serving_names(synth.stacks.config)
    statements = {s["Sid"]: s for s in _policy(synth, synth.stacks.serving, "ModelPolicy")}
    write = statements["WriteDataCapture"]
    assert _actions(write) == ["s3:PutObject"]
    (resource,) = _resources(write)
    assert json.dumps(resource).endswith(f'/monitoring/capture/{names.endpoint}/*"]]}}')
    puts = [s for s in statements.values() if "s3:PutObject" in _actions(s)]
    assert puts == [write]
    kms = statements["EncryptDataCapture"]
    assert set(_actions(kms)) == {"kms:Encrypt", "kms:GenerateDataKey"}
    assert "*" not in _resources(kms)


def test_deploy_lambda_and_monitor_are_wired_to_the_capture(synth):
    cfg = synth.stacks.config
    names = serving_names(cfg)
    fns = synth.resources(synth.stacks.training, "AWS::Lambda::Function")
    (deploy,) = [f for k, f in fns.items() if k.startswith("DeployModel")]
    env = deploy["Properties"]["Environment"]["Variables"]
    assert env["CAPTURE_SAMPLING_PERCENTAGE"] == str(cfg.serverless.capture_sampling_percentage)
    uri = json.dumps(env["CAPTURE_S3_URI"])
    assert uri.startswith('{"Fn::Join"') and uri.endswith('/monitoring/capture"]]}')
    assert capture_s3_uri("b", cfg.lake.monitoring) == "s3://b/monitoring/capture"

    ext = synth.stacks.extraction
    fns = synth.resources(ext, "AWS::Lambda::Function")
    ((monitor_id, monitor),) = [(k, f) for k, f in fns.items() if k.startswith("DriftMonitor")]
    props = monitor["Properties"]
    assert props["Environment"]["Variables"]["ENDPOINT_NAME"] == names.endpoint
    assert "DeadLetterConfig" in props
    rules = synth.resources(ext, "AWS::Events::Rule")
    (schedule,) = [r for r in rules.values() if "ScheduleExpression" in r["Properties"]]
    (target,) = schedule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [monitor_id, "Arn"]}
    transformer = target["InputTransformer"]  # EventBridge quotes the string it substitutes
    assert transformer["InputPathsMap"] == {"time": "$.time"}
    assert transformer["InputTemplate"] == '{"source":"endpoint_capture","window_end":<time>}'
