"""MonitoringStack: alarm -> action wiring, the debounced retraining Lambda, the dashboard."""

from __future__ import annotations

import json

from clinical_ner.pipeline import monitoring as mon


def _alarms(synth):
    """The drift alarms (the measured-quality ones: tests/infra/test_review_stack.py)."""
    return {
        r["Properties"]["AlarmName"]: r["Properties"]
        for r in synth.resources(synth.stacks.monitoring, "AWS::CloudWatch::Alarm").values()
        if "-drift-" in r["Properties"]["AlarmName"]
    }


def _logical_id(synth, stack, construct) -> str:
    return stack.resolve(construct.node.default_child.logical_id)


def test_two_alarms_per_signal_class_with_the_right_actions(synth):
    stack = synth.stacks.monitoring
    prefix = synth.stacks.config.resource_prefix
    alarms = _alarms(synth)
    fn_id = _logical_id(synth, stack, stack.retraining_function)
    topic_id = _logical_id(synth, stack, stack.topic)
    assert len(alarms) == 2 * len(mon.SignalClass)
    for cls in mon.SignalClass:
        moderate = alarms[f"{prefix}-drift-{cls.value}-moderate"]
        severe = alarms[f"{prefix}-drift-{cls.value}-severe"]
        # moderate -> retraining Lambda (direct alarm action), never the e-mail topic
        assert moderate["AlarmActions"] == [{"Fn::GetAtt": [fn_id, "Arn"]}]
        (expr,) = [m for m in moderate["Metrics"] if "Expression" in m]
        assert expr["Expression"] == "IF(lvl == 1, 1, 0)"
        (lvl,) = [m for m in moderate["Metrics"] if m["Id"] == "lvl"]
        stat = lvl["MetricStat"]
        assert stat["Metric"]["MetricName"] == mon.LEVEL_METRIC
        assert stat["Metric"]["Namespace"] == mon.NAMESPACE
        assert {d["Name"]: d["Value"] for d in stat["Metric"]["Dimensions"]} == {
            mon.DIM_STAGE: synth.stacks.config.stage.value,
            mon.DIM_SIGNAL_CLASS: cls.value,
        }
        assert moderate["Threshold"] == 1
        # severe -> SNS topic (e-mail), no retraining
        assert severe["AlarmActions"] == [{"Ref": topic_id}]
        assert severe["MetricName"] == mon.LEVEL_METRIC and severe["Threshold"] == 2
        assert severe["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        for alarm in (moderate, severe):
            assert alarm["TreatMissingData"] == "notBreaching"
            # static text only: nothing resolved at run time can put data into the e-mail
            assert isinstance(alarm["AlarmDescription"], str)
            assert len(alarm["AlarmDescription"]) <= 1024
            assert "docs/monitoring.md" in alarm["AlarmDescription"]


def test_topic_is_kms_encrypted_with_the_stage_email(synth):
    stack = synth.stacks.monitoring
    (topic,) = synth.resources(stack, "AWS::SNS::Topic").values()
    assert "KmsMasterKeyId" in topic["Properties"]
    subs = synth.resources(stack, "AWS::SNS::Subscription").values()
    assert [(s["Properties"]["Protocol"], s["Properties"]["Endpoint"]) for s in subs] == [
        ("email", synth.stacks.config.alarm_email)
    ]
    key_policy = json.dumps(next(iter(synth.resources(stack, "AWS::KMS::Key").values())))
    assert "cloudwatch.amazonaws.com" in key_policy


def test_retraining_lambda_is_debounced_and_least_privileged(synth):
    stack = synth.stacks.monitoring
    fn = next(
        r
        for r in synth.resources(stack, "AWS::Lambda::Function").values()
        if r["Properties"]["FunctionName"].endswith("retraining-trigger")
    )
    props = fn["Properties"]
    assert props["ReservedConcurrentExecutions"] == 1
    env = props["Environment"]["Variables"]
    assert env["COOLDOWN_HOURS"] == str(synth.stacks.config.drift.retrain_cooldown_hours)
    assert "TRAINING_STATE_MACHINE_ARN" in env
    assert "DeadLetterConfig" in props
    (policy,) = [
        p
        for p in synth.resources(stack, "AWS::IAM::ManagedPolicy").values()
        if "retraining" in p["Properties"].get("Description", "")
    ]
    stmts = {s["Sid"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"]}
    assert sorted(stmts["StartAndListTraining"]["Action"]) == [
        "states:ListExecutions",
        "states:StartExecution",
    ]
    assert "*" not in json.dumps(stmts["StartAndListTraining"]["Resource"])
    # CloudWatch may invoke it (alarm action permission)
    perms = synth.resources(stack, "AWS::Lambda::Permission").values()
    principals = {p["Properties"]["Principal"] for p in perms}
    assert "lambda.alarms.cloudwatch.amazonaws.com" in principals


def test_new_annotations_rule_targets_the_retraining_lambda(synth):
    stack = synth.stacks.monitoring
    rules = synth.resources(stack, "AWS::Events::Rule")
    forward = rules[_logical_id(synth, stack, stack.annotations_forward_rule)]["Properties"]
    rule = rules[_logical_id(synth, stack, stack.annotations_rule)]
    for pattern in (forward["EventPattern"], rule["Properties"]["EventPattern"]):
        assert pattern["source"] == ["aws.s3"] and pattern["detail-type"] == ["Object Created"]
    assert forward["EventPattern"]["detail"]["object"]["key"] == [{"prefix": "raw/annotations/"}]
    assert rule["Properties"]["EventPattern"]["detail"]["object"]["key"] == [
        {"anything-but": {"prefix": "raw/annotations/reviewed/"}}
    ]
    assert "DeadLetterConfig" in forward["Targets"][0]
    (target,) = rule["Properties"]["Targets"]
    fn_id = _logical_id(synth, stack, stack.retraining_function)
    assert target["Arn"] == {"Fn::GetAtt": [fn_id, "Arn"]}
    assert "DeadLetterConfig" in target


def test_dashboard_shows_volumes_latency_errors_and_each_drift_metric_with_thresholds(synth):
    stack = synth.stacks.monitoring
    (dash,) = synth.resources(stack, "AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dash["Properties"]["DashboardBody"])
    for needle in ("NotesIn", "NotesQuarantined", "QuarantineRate", "EntitiesExtracted",
                   "ExecutionTime", "ExecutionsFailed", "Errors", "Duration"):  # fmt: skip
        assert needle in body, needle
    drift = synth.stacks.config.drift
    for spec in mon.SIGNALS:
        assert spec.metric in body
        moderate, severe = spec.thresholds(drift)
        assert f'\\"value\\":{moderate}' in body.replace(" ", "") or str(moderate) in body
        assert str(severe) in body
