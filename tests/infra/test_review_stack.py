"""ReviewStack (queue table, API + JWT, Cognito, access logs), the reviews table and queries,
the precision/recall alarms, and the annotations rule that skips raw/annotations/reviewed/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from clinical_ner.data.analytics import REVIEW_QUERIES, REVIEW_TABLE
from clinical_ner.data.schemas import PARTITION_COLUMN, REVIEW_SCHEMA
from clinical_ner.pipeline import monitoring as mon
from clinical_ner.pipeline.review_queue import create_table
from clinical_ner.pipeline.stage_config import ReviewSettings, load_stage_config
from stacks import review as review_stack
from stacks.checks import acknowledgements

REPO_ROOT = Path(__file__).resolve().parents[2]
CFN_LINT = Path(sys.executable).with_name("cfn-lint")


def _one(synth, stack, rtype: str) -> dict[str, Any]:
    (res,) = synth.resources(stack, rtype).values()
    return res


def _logical_id(stack, construct) -> str:
    return stack.resolve(construct.node.default_child.logical_id)


# ---------------------------------------------------------------------------- table


class _CapturingClient:
    def create_table(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    def get_waiter(self, _name: str) -> Any:
        return type("W", (), {"wait": lambda *_a, **_k: None})()


def test_table_has_the_keys_the_core_queue_uses_with_kms_and_pitr(synth):
    stack = synth.stacks.review
    core = _CapturingClient()
    create_table(core, "t")  # what the local emulator and the moto tests create
    table = _one(synth, stack, "AWS::DynamoDB::Table")
    props = table["Properties"]
    assert props["KeySchema"] == core.kwargs["KeySchema"]
    assert sorted(props["AttributeDefinitions"], key=str) == sorted(
        core.kwargs["AttributeDefinitions"], key=str
    )
    assert props["GlobalSecondaryIndexes"] == core.kwargs["GlobalSecondaryIndexes"]
    assert props["BillingMode"] == core.kwargs["BillingMode"]
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    sse = props["SSESpecification"]
    key_id = _logical_id(stack, stack.key)
    assert sse == {
        "SSEEnabled": True,
        "SSEType": "KMS",
        "KMSMasterKeyId": {"Fn::GetAtt": [key_id, "Arn"]},
    }
    key = synth.resources(stack, "AWS::KMS::Key")[key_id]["Properties"]
    assert key["EnableKeyRotation"] is True
    retained = synth.stacks.config.retention.retain_on_delete
    assert table["DeletionPolicy"] == ("Retain" if retained else "Delete")
    assert props["DeletionProtectionEnabled"] is retained


# ---------------------------------------------------------------------------- identity


def test_user_pool_requires_totp_mfa_has_no_self_sign_up_and_a_reviewers_group(synth):
    stack = synth.stacks.review
    pool = _one(synth, stack, "AWS::Cognito::UserPool")["Properties"]
    assert pool["MfaConfiguration"] == "ON"
    assert pool["EnabledMfas"] == ["SOFTWARE_TOKEN_MFA"]  # TOTP only, no SMS
    assert pool["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    policy = pool["Policies"]["PasswordPolicy"]
    assert policy["MinimumLength"] >= 14
    assert all(
        policy[k]
        for k in ("RequireLowercase", "RequireUppercase", "RequireNumbers", "RequireSymbols")
    )
    assert pool["UserPoolTier"] == "PLUS"
    assert pool["UserPoolAddOns"] == {"AdvancedSecurityMode": "ENFORCED"}
    group = _one(synth, stack, "AWS::Cognito::UserPoolGroup")["Properties"]
    assert group["GroupName"] == "reviewers"
    client = _one(synth, stack, "AWS::Cognito::UserPoolClient")["Properties"]
    assert client["AllowedOAuthFlows"] == ["code"]  # authorization code (+ PKCE), no implicit
    assert client["GenerateSecret"] is False
    api_id = _logical_id(stack, stack.api)
    own_url = {"Fn::Join": ["", [{"Fn::GetAtt": [api_id, "ApiEndpoint"]}, "/"]]}
    assert client["CallbackURLs"] == [own_url]
    assert client["SupportedIdentityProviders"] == ["COGNITO"]


def test_api_routes_need_the_cognito_jwt_except_the_static_page(synth):
    stack = synth.stacks.review
    auth = _one(synth, stack, "AWS::ApiGatewayV2::Authorizer")["Properties"]
    pool_id = _logical_id(stack, stack.user_pool)
    client_id = _logical_id(stack, stack.client)
    assert auth["AuthorizerType"] == "JWT"
    assert auth["IdentitySource"] == ["$request.header.Authorization"]
    assert auth["JwtConfiguration"]["Audience"] == [{"Ref": client_id}]
    assert {"Ref": pool_id} in auth["JwtConfiguration"]["Issuer"]["Fn::Join"][1]
    routes = {
        r["Properties"]["RouteKey"]: r["Properties"]
        for r in synth.resources(stack, "AWS::ApiGatewayV2::Route").values()
    }
    assert set(routes) == {"ANY /api/{proxy+}", *review_stack.PUBLIC_ROUTES}
    assert routes["ANY /api/{proxy+}"]["AuthorizationType"] == "JWT"
    for key in review_stack.PUBLIC_ROUTES:
        assert key.startswith("GET ") and routes[key]["AuthorizationType"] == "NONE"


def test_access_logs_have_metadata_only_in_a_kms_log_group_and_the_stage_is_throttled(synth):
    stack = synth.stacks.review
    stage = _one(synth, stack, "AWS::ApiGatewayV2::Stage")["Properties"]
    fmt = json.loads(stage["AccessLogSettings"]["Format"])
    assert set(fmt) == {
        "requestId", "ip", "requestTime", "httpMethod", "routeKey", "status", "protocol",
        "responseLength", "responseLatency",
    }  # fmt: skip
    text = json.dumps(fmt).lower()
    for forbidden in ("body", "path", "querystring", "claims", "header"):
        assert forbidden not in text, forbidden
    group_id = stage["AccessLogSettings"]["DestinationArn"]["Fn::GetAtt"][0]
    group = synth.resources(stack, "AWS::Logs::LogGroup")[group_id]["Properties"]
    assert (
        "KmsKeyId" in group
        and group["RetentionInDays"] == synth.stacks.config.retention.log_group_days
    )
    assert stage["DefaultRouteSettings"] == {
        "ThrottlingRateLimit": review_stack.THROTTLE_RATE_PER_SECOND,
        "ThrottlingBurstLimit": review_stack.THROTTLE_BURST,
    }


# ---------------------------------------------------------------------------- function


def test_review_lambda_is_in_the_vpc_with_pyarrow_and_least_privilege(synth):
    stack = synth.stacks.review
    config = synth.stacks.config
    fn = _one(synth, stack, "AWS::Lambda::Function")["Properties"]
    env = fn["Environment"]["Variables"]
    assert json.loads(env["STAGE_CONFIG"]) == json.loads(config.to_json())
    assert env["REVIEW_TABLE"] == {"Ref": _logical_id(stack, stack.table)}
    assert env["RETRAINING_FUNCTION_NAME"] == f"{config.resource_prefix}-retraining-trigger"
    assert "LAKE_BUCKET" in env
    assert (
        "VpcConfig" in fn
        and fn["ReservedConcurrentExecutions"] == review_stack.FUNCTION_CONCURRENCY
    )
    assert {"Ref": "AwsSdkPandasLayerArn"} in fn["Layers"]  # pyarrow for the reviews Parquet
    policy = _one(synth, stack, "AWS::IAM::ManagedPolicy")["Properties"]["PolicyDocument"]
    stmts = {s["Sid"]: s for s in policy["Statement"] if "Sid" in s}
    actions = sorted(
        a
        for s in policy["Statement"]
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    )
    assert "dynamodb:PutItem" not in actions and "dynamodb:DeleteItem" not in actions
    assert "s3:DeleteObject" not in actions
    writes = json.dumps(stmts["WriteReviews"]["Resource"])
    lake = config.lake
    for prefix in (lake.reviews, lake.reviewed_annotations, lake.validated_eval):
        assert f"/{prefix}*" in writes
    assert writes.count("/") >= 3 and f"/{lake.raw_annotations}*" not in writes
    invoke = stmts["StartRetraining"]
    assert invoke["Action"] == "lambda:InvokeFunction"
    assert json.dumps(invoke["Resource"]).endswith(
        f':function:{config.resource_prefix}-retraining-trigger"]]}}'
    )
    metrics = stmts["PublishReviewMetrics"]
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": mon.NAMESPACE}}


def test_review_acknowledgements_are_specific_and_the_dlq_reason_names_api_gateway(dev):
    acks = [
        a for a in acknowledgements(dev.app) if a.path.startswith(dev.stacks.review.node.path + "/")
    ]
    rules = sorted({a.rule.split("[")[0] for a in acks})
    assert rules == [
        "AwsSolutions-APIG4",
        "AwsSolutions-IAM5",
        "AwsSolutions-L1",
        "HIPAA.Security-DynamoDBInBackupPlan",
        "HIPAA.Security-LambdaDLQ",
    ]
    (dlq,) = [a for a in acks if a.rule == "HIPAA.Security-LambdaDLQ"]
    assert "API Gateway" in dlq.reason and "Step Functions" not in dlq.reason
    assert len([a for a in acks if a.rule == "AwsSolutions-APIG4"]) == len(
        review_stack.PUBLIC_ROUTES
    )


_BLOCK_SPACY = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'spacy':
            raise ImportError('spaCy is not in any Lambda layer')
sys.meta_path.insert(0, _Block())
"""


def test_review_handler_serves_the_page_and_checks_the_group_without_spacy(tmp_path):
    """The handler's imports work with the Lambda's layers (no spaCy) and need pyarrow."""
    script = (
        _BLOCK_SPACY
        + """
import json, runpy
handler = runpy.run_path('lambdas/review_api/handler.py')['handler']
def event(path, claims=None):
    ctx = {'http': {'method': 'GET', 'path': path}, 'stage': '$default'}
    if claims is not None:
        ctx['authorizer'] = {'jwt': {'claims': claims}}
    return {'rawPath': path, 'requestContext': ctx, 'headers': {}}
page = handler(event('/'))
me = handler(event('/api/me', {'sub': 'abc-123', 'cognito:groups': '[reviewers]'}))
outsider = handler(event('/api/me', {'sub': 'abc-123', 'cognito:groups': '[other]'}))
print(json.dumps({'page': [page['statusCode'], page['headers']['Content-Type']],
                  'me': [me['statusCode'], json.loads(me['body'])],
                  'outsider': outsider['statusCode'],
                  'pyarrow': 'pyarrow' in sys.modules, 'spacy': 'spacy' in sys.modules}))
"""
    )
    config = load_stage_config("dev", {})
    env = {
        **os.environ,
        "STAGE_CONFIG": config.to_json(),
        "LAKE_BUCKET": "lake",
        "REVIEW_TABLE": "queue",
        "RETRAINING_FUNCTION_NAME": "clinical-ner-dev-retraining-trigger",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # nothing here may reach AWS
    }
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["page"] == [200, "text/html; charset=utf-8"]
    assert got["me"] == [200, {"reviewer_id": "abc-123"}]
    assert got["outsider"] == 403
    assert got["pyarrow"] is True  # why the function has the AWS SDK for pandas layer
    assert got["spacy"] is False


# ---------------------------------------------------------------------------- analytics


def test_reviews_table_has_the_schema_with_projection_and_the_kpi_queries(synth):
    analytics = synth.stacks.analytics
    tables = {
        t["Properties"]["TableInput"]["Name"]: t["Properties"]["TableInput"]
        for t in synth.resources(analytics, "AWS::Glue::Table").values()
    }
    reviews = tables[REVIEW_TABLE]
    cols = [c["Name"] for c in reviews["StorageDescriptor"]["Columns"]]
    assert cols == [f.name for f in REVIEW_SCHEMA if f.name != PARTITION_COLUMN]
    assert reviews["PartitionKeys"][0]["Name"] == PARTITION_COLUMN
    params = reviews["Parameters"]
    assert params["projection.enabled"] == "true" and params["projection.dt.type"] == "date"
    assert "/reviews/dt=${dt}/" in json.dumps(params["storage.location.template"])
    queries = {
        r["Properties"]["Name"]: r["Properties"]
        for r in synth.resources(analytics, "AWS::Athena::NamedQuery").values()
    }
    for q in REVIEW_QUERIES:
        assert queries[q.name]["QueryString"] == q.sql
        assert queries[q.name]["WorkGroup"] == {"Ref": "WorkGroup"}


# ---------------------------------------------------------------------------- monitoring


def test_precision_and_recall_floors_raise_the_drift_alarm_actions(synth):
    stack = synth.stacks.monitoring
    config = synth.stacks.config
    rv, prefix, stage = config.review, config.resource_prefix, config.stage.value
    alarms = {
        r["Properties"]["AlarmName"]: r["Properties"]
        for r in synth.resources(stack, "AWS::CloudWatch::Alarm").values()
    }
    fn_id = _logical_id(stack, stack.retraining_function)
    topic_id = _logical_id(stack, stack.topic)
    for kpi, metric_name in (("precision", "ProductionPrecision"), ("recall", "ProductionRecall")):
        moderate = alarms[f"{prefix}-quality-{kpi}-moderate"]
        severe = alarms[f"{prefix}-quality-{kpi}-severe"]
        assert moderate["AlarmActions"] == [{"Fn::GetAtt": [fn_id, "Arn"]}]  # retrain
        assert severe["AlarmActions"] == [{"Ref": topic_id}]  # e-mail
        floor_mod, floor_sev = getattr(rv, f"{kpi}_moderate"), getattr(rv, f"{kpi}_severe")
        n = rv.min_reviewed_notes_for_alarm
        for alarm, expression in (
            (moderate, f"IF(n >= {n} AND v < {floor_mod} AND v >= {floor_sev}, 1, 0)"),
            (severe, f"IF(n >= {n} AND v < {floor_sev}, 1, 0)"),
        ):
            (expr,) = [m for m in alarm["Metrics"] if "Expression" in m]
            assert expr["Expression"] == expression
            stats = {
                m["Id"]: (
                    m["MetricStat"]["Metric"]["MetricName"],
                    m["MetricStat"]["Stat"],
                    m["MetricStat"]["Metric"]["Dimensions"],
                )
                for m in alarm["Metrics"]
                if "MetricStat" in m
            }
            assert stats == {
                "n": ("ReviewedNotes", "Maximum", [{"Name": mon.DIM_STAGE, "Value": stage}]),
                "v": (metric_name, "Average", [{"Name": mon.DIM_STAGE, "Value": stage}]),
            }
            assert alarm["Threshold"] == 1 and alarm["TreatMissingData"] == "notBreaching"
            assert isinstance(alarm["AlarmDescription"], str)
    (dash,) = synth.resources(stack, "AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dash["Properties"]["DashboardBody"])
    for name, _unit in mon.REVIEW_METRICS.values():
        assert name in body, name


@pytest.mark.parametrize(
    "bad",
    [
        {"precision_severe": 0.9},  # severe floor above the moderate one
        {"recall_moderate": 1.2},
        {"recall_severe": 0.0},
        {"min_reviewed_notes_for_alarm": 0},
    ],
)
def test_quality_floors_are_validated(bad):
    import dataclasses

    config = load_stage_config("dev", {})
    with pytest.raises(ValueError, match="review"):
        dataclasses.replace(config, review=ReviewSettings(**bad))


# ---------------------------------------------------------------------------- annotations rule


def _s3_event(bucket: str, key: str) -> dict[str, Any]:
    return {
        "version": "0",
        "id": "1",
        "source": "aws.s3",
        "detail-type": "Object Created",
        "account": "123456789012",
        "region": "us-east-1",
        "time": "2025-01-01T00:00:00Z",
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {"bucket": {"name": bucket}, "object": {"key": key, "size": 10}},
    }


def test_reviewed_annotations_never_fire_the_new_annotations_rule(synth):
    """Forward rule (default bus) then the retraining rule (annotations bus): both must match."""
    from moto.events.models import EventPattern

    stack = synth.stacks.monitoring
    rules = synth.resources(stack, "AWS::Events::Rule")
    forward = rules[_logical_id(stack, stack.annotations_forward_rule)]["Properties"]
    retrain = rules[_logical_id(stack, stack.annotations_rule)]["Properties"]
    bus_id = _logical_id(stack, stack.annotations_bus)
    assert "EventBusName" not in forward  # the default bus, where S3 sends its events
    assert forward["Targets"][0]["Arn"] == {"Fn::GetAtt": [bus_id, "Arn"]}
    assert retrain["EventBusName"] == {"Ref": bus_id}
    assert retrain["Targets"][0]["Arn"] == {
        "Fn::GetAtt": [_logical_id(stack, stack.retraining_function), "Arn"]
    }

    lake_bucket = forward["EventPattern"]["detail"]["bucket"]["name"]
    assert retrain["EventPattern"]["detail"]["bucket"]["name"] == lake_bucket  # the lake's name

    def pattern(props: dict[str, Any]) -> EventPattern:
        raw = json.loads(json.dumps(props["EventPattern"]))
        raw["detail"]["bucket"]["name"] = ["lake"]  # the import token, as deployed
        return EventPattern(json.dumps(raw), raw)

    fwd, rt = pattern(forward), pattern(retrain)
    lake = synth.stacks.config.lake

    def starts_training(key: str) -> bool:
        event = _s3_event("lake", key)
        return fwd.matches_event(event) and rt.matches_event(event)

    assert starts_training(f"{lake.raw_annotations}batch-7/notes.jsonl")
    assert starts_training(f"{lake.raw_annotations}reviewed.jsonl")  # a file, not the folder
    assert not starts_training(f"{lake.reviewed_annotations}{'a' * 64}.jsonl")
    assert not starts_training(f"{lake.raw_notes}drop.csv")
    assert not starts_training(f"{lake.validated_eval}{'b' * 64}.jsonl")
    assert not fwd.matches_event(_s3_event("other-bucket", f"{lake.raw_annotations}x.jsonl"))


# ---------------------------------------------------------------------------- cfn-lint


def test_cfn_lint_finds_no_errors_in_the_review_templates(dev, prod):
    if not CFN_LINT.exists():
        pytest.skip("cfn-lint missing: pip install '.[infra]'")
    paths = [
        s.outdir / f"{stack.artifact_id}.template.json"
        for s in (dev, prod)
        for stack in (s.stacks.review, s.stacks.monitoring, s.stacks.analytics)
    ]
    result = subprocess.run(
        [str(CFN_LINT), "--format", "parseable", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    errors = [line for line in result.stdout.splitlines() if ":E" in line]
    assert not errors, "\n".join(errors)
    assert result.returncode & 2 == 0, result.stdout + result.stderr


def test_publish_step_may_enqueue_into_the_review_table(synth):
    stack = synth.stacks.extraction
    table = synth.stacks.review.names["table"]
    fn = next(
        r["Properties"]
        for r in synth.resources(stack, "AWS::Lambda::Function").values()
        if r["Properties"]["Handler"] == "handler.handler"
        and r["Properties"]["FunctionName"].endswith("publish-extractions")
    )
    assert fn["Environment"]["Variables"]["REVIEW_TABLE"] == table
    policies = synth.resources(stack, "AWS::IAM::ManagedPolicy").values()
    (enqueue,) = [
        s
        for p in policies
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if s.get("Sid") == "EnqueueForReview"
    ]
    assert sorted(enqueue["Action"]) == [
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
    ]
    assert json.dumps(enqueue["Resource"]).endswith(f':table/{table}"]]}}')


def test_the_page_gets_its_sign_in_settings_from_a_parameter_the_function_alone_reads(synth):
    """Domain and public client id reach the page through SSM (no env cycle with the API)."""
    stack = synth.stacks.review
    name = f"/{synth.stacks.config.resource_prefix}/review/sign-in"
    param = _one(synth, stack, "AWS::SSM::Parameter")["Properties"]
    assert param["Name"] == name and param["Type"] == "String"
    value = json.dumps(param["Value"])
    assert _logical_id(stack, stack.client) in value  # the workbench client's id
    assert "amazoncognito.com" in value  # the hosted UI domain
    fn = _one(synth, stack, "AWS::Lambda::Function")["Properties"]
    assert fn["Environment"]["Variables"]["SIGN_IN_PARAMETER"] == name
    policy = _one(synth, stack, "AWS::IAM::ManagedPolicy")["Properties"]["PolicyDocument"]
    (read,) = [s for s in policy["Statement"] if s.get("Sid") == "ReadSignInSettings"]
    assert read["Action"] == "ssm:GetParameter"
    assert json.dumps(read["Resource"]).endswith(f':parameter{name}"]]}}')
