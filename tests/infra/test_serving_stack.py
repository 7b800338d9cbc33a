"""ServingStack: model role, deploy grants (scoped to this stage's endpoint), rollback alarms."""

from __future__ import annotations

import json

from stacks.serving import serving_names


def test_rollback_alarms_have_fixed_names_and_notify(synth):
    names = serving_names(synth.stacks.config)
    alarms = {
        a["Properties"]["AlarmName"]: a["Properties"]
        for a in synth.resources(synth.stacks.serving, "AWS::CloudWatch::Alarm").values()
    }
    assert set(alarms) == set(names.alarms)
    five = alarms[names.alarm_5xx]
    assert five["MetricName"] == "Invocation5XXErrors" and five["Namespace"] == "AWS/SageMaker"
    assert {d["Name"]: d["Value"] for d in five["Dimensions"]} == {
        "EndpointName": names.endpoint,
        "VariantName": "AllTraffic",
    }
    lat = alarms[names.alarm_latency]
    assert lat["MetricName"] == "ModelLatency" and lat["ExtendedStatistic"] == "p99"
    for a in alarms.values():
        assert a["AlarmActions"] and a["TreatMissingData"] == "notBreaching"


def test_deploy_lambda_env_points_at_these_names(synth):
    names = serving_names(synth.stacks.config)
    fns = synth.resources(synth.stacks.training, "AWS::Lambda::Function")
    (deploy,) = [f for k, f in fns.items() if k.startswith("DeployModel")]
    env = deploy["Properties"]["Environment"]["Variables"]
    assert env["ENDPOINT_NAME"] == names.endpoint
    assert env["ROLLBACK_ALARMS"] == ",".join(names.alarms)
    assert names.model_role in json.dumps(env["MODEL_ROLE_ARN"])
    cfg = synth.stacks.config.serverless
    assert env["SERVERLESS_MEMORY_MB"] == str(cfg.memory_mb)
    assert env["SERVERLESS_MAX_CONCURRENCY"] == str(cfg.max_concurrency)
    assert env["PROVISIONED"] == str(cfg.provisioned).lower()


def test_deploy_policy_is_limited_to_this_endpoint(synth):
    names = serving_names(synth.stacks.config)
    policies = synth.resources(synth.stacks.serving, "AWS::IAM::ManagedPolicy")
    (deploy,) = [p for k, p in policies.items() if k.startswith("DeployPolicy")]
    statements = {s["Sid"]: s for s in deploy["Properties"]["PolicyDocument"]["Statement"]}
    text = json.dumps(statements["CreateOrUpdateEndpoint"]["Resource"])
    assert f":endpoint/{names.endpoint}" in text
    assert statements["PassModelRole"]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}
    }
    assert "*" not in json.dumps(statements["PassModelRole"]["Resource"])


def test_model_role_reads_only_models_prefix(synth):
    policies = synth.resources(synth.stacks.serving, "AWS::IAM::ManagedPolicy")
    (model,) = [p for k, p in policies.items() if k.startswith("ModelPolicy")]
    statements = {s["Sid"]: s for s in model["Properties"]["PolicyDocument"]["Statement"]}
    read = json.dumps(statements["ReadModelArtifacts"]["Resource"])
    assert "/models/*" in read
    assert statements["ReadModelArtifacts"]["Action"] == "s3:GetObject"


def test_image_asset_is_staged_not_built(synth):
    manifest = json.loads(
        (synth.outdir / f"{synth.stacks.training.artifact_id}.assets.json").read_text()
    )
    (image,) = manifest["dockerImages"].values()
    src = image["source"]
    assert src["dockerFile"] == "sagemaker_src/Dockerfile"
    staged = synth.outdir / src["directory"]
    files = {p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()}
    assert "pyproject.toml" in files and "sagemaker_src/Dockerfile" in files
    assert "clinical_ner/runtime/serve.py" in files
    assert not [f for f in files if f.startswith(("node_modules/", ".git/", "tests/"))]
