"""Lambda handlers in-process against a moto server: resolve -> register -> gate ->
approve/reject on a real model package group, and the deploy steps' request shapes.

moto implements the model-registry calls used here (CreateModelPackageGroup,
CreateModelPackage, DescribeModelPackage, ListModelPackages, UpdateModelPackage). The endpoint
calls (CreateEndpointConfig with ServerlessConfig, UpdateEndpoint with DeploymentConfig,
Application Auto Scaling) are checked with botocore's Stubber for their exact request shape.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import io
import json
import tarfile
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from clinical_ner.pipeline import deployment
from clinical_ner.pipeline.aws_runtime import PipelineStepError, TransientAwsError
from clinical_ner.pipeline.stage_config import load_stage_config
from clinical_ner.runtime.lambda_edge import run_step

REPO_ROOT = Path(__file__).resolve().parents[2]
BUCKET = "lake"
GROUP = "clinical-ner-dev-ner"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/cdk-assets:abc"


def handler(name: str):
    spec = importlib.util.spec_from_file_location(
        f"lambda_{name}", REPO_ROOT / "lambdas" / name / "handler.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


def metrics(micro: float, disease: float, treatment: float) -> dict:
    def block(f, d, t):
        return {"ents_f": f, "per_label": {"DISEASE": {"f": d}, "TREATMENT": {"f": t}}}

    return {
        "model_version": f"m-{micro}",
        "dev": block(micro, disease, treatment),
        "test": block(micro, disease, treatment),
    }


def put_model(s3, job: str, m: dict) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (
            ("model/meta.json", b"{}"),
            ("metrics.json", json.dumps(m).encode()),
            ("drift_baseline.json", b"{}"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    key = f"models/{job}/output/model.tar.gz"
    s3.put_object(Bucket=BUCKET, Key=key, Body=buf.getvalue())
    return f"s3://{BUCKET}/{key}"


@pytest.fixture
def env(aws, monkeypatch):
    cfg = load_stage_config("dev")
    monkeypatch.setenv("MODEL_PACKAGE_GROUP", GROUP)
    monkeypatch.setenv("LAKE_BUCKET", BUCKET)
    monkeypatch.setenv("STAGE_CONFIG", cfg.to_json())
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    sm = boto3.client("sagemaker")
    sm.create_model_package_group(ModelPackageGroupName=GROUP)
    return s3, sm, cfg


def register(s3, job: str, m: dict) -> dict:
    return handler("register_model")(
        {
            "training": {"job_name": job, "model_data_url": put_model(s3, job, m), "image": IMAGE},
            "dataset": {"dataset_version": "ds-0123456789abcdef"},
            "trigger": "new_annotations",
            "execution_id": "arn:aws:states:us-east-1:123456789012:execution:sm:run-1",
        }
    )


def test_resolve_dataset_latest_and_pinned(env):
    s3, _, _ = env
    version = "ds-0123456789abcdef"
    s3.put_object(
        Bucket=BUCKET,
        Key="curated/training/_latest.json",
        Body=json.dumps({"dataset_version": version}),
    )
    manifest = {"splits": {"train": {"docs": 80}, "dev": {"docs": 10}, "test": {"docs": 10}}}
    s3.put_object(
        Bucket=BUCKET, Key=f"curated/training/{version}/manifest.json", Body=json.dumps(manifest)
    )
    out = handler("resolve_dataset")({"dataset_version": "latest"})
    assert out["dataset_version"] == version
    assert out["train_uri"] == f"s3://{BUCKET}/curated/training/{version}/train.jsonl"
    assert out["docs"] == {"dev": 10, "test": 10, "train": 80}
    assert "production" not in out  # first model: nothing to score against
    assert handler("resolve_dataset")({"dataset_version": version}) == out
    with pytest.raises(PipelineStepError, match="does not exist"):
        handler("resolve_dataset")({"dataset_version": "ds-ffffffffffffffff"})
    with pytest.raises(PipelineStepError, match="not a dataset version"):
        handler("resolve_dataset")({"dataset_version": "../../etc"})


def test_resolve_names_the_production_model_once_one_is_approved(env):
    s3, _, _ = env
    version = "ds-0123456789abcdef"
    manifest = {"splits": {"train": {"docs": 80}, "dev": {"docs": 10}, "test": {"docs": 10}}}
    s3.put_object(
        Bucket=BUCKET, Key=f"curated/training/{version}/manifest.json", Body=json.dumps(manifest)
    )
    first = register(s3, "job-p1", metrics(0.70, 0.72, 0.66))["model_package_arn"]
    register(s3, "job-p2", metrics(0.71, 0.72, 0.66))  # pending: not production
    assert "production" not in handler("resolve_dataset")({"dataset_version": version})
    handler("approve_or_reject")({"action": "approve", "model_package_arn": first, "gate": {}})
    out = handler("resolve_dataset")({"dataset_version": version})
    assert out["production"] == {
        "model_package_arn": first,
        "model_data_url": f"s3://{BUCKET}/models/job-p1/output/model.tar.gz",
    }


def test_register_gate_approve_then_regressing_candidate_is_rejected(env):
    s3, sm, _ = env
    first = register(s3, "job-1", metrics(0.70, 0.72, 0.66))
    arn1 = first["model_package_arn"]
    desc = sm.describe_model_package(ModelPackageName=arn1)
    assert desc["ModelApprovalStatus"] == "PendingManualApproval"
    assert desc["InferenceSpecification"]["Containers"][0]["Image"] == IMAGE
    assert desc["InferenceSpecification"]["Containers"][0]["ModelDataUrl"].endswith("model.tar.gz")
    stats = desc["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert stats["S3Uri"] == f"s3://{BUCKET}/models/job-1/output/metrics.json"
    stored = json.loads(
        s3.get_object(Bucket=BUCKET, Key="models/job-1/output/metrics.json")["Body"].read()
    )
    assert stored["test"]["ents_f"] == 0.70
    assert desc["CustomerMetadataProperties"]["training_job"] == "job-1"

    # retried register step: same package, no second version
    assert register(s3, "job-1", metrics(0.70, 0.72, 0.66))["model_package_arn"] == arn1
    assert len(sm.list_model_packages(ModelPackageGroupName=GROUP)["ModelPackageSummaryList"]) == 1

    gate1 = handler("gate_model")({"model_package_arn": arn1})
    assert gate1["passed"] is True and gate1["production_package_arn"] is None
    assert [c["code"] for c in gate1["checks"]] == ["f1_floor", "first_model"]
    out = handler("approve_or_reject")(
        {"action": "approve", "model_package_arn": arn1, "gate": gate1}
    )
    assert out["status"] == "Approved"
    assert sm.describe_model_package(ModelPackageName=arn1)["ModelApprovalStatus"] == "Approved"

    # a candidate better overall but regressing TREATMENT is rejected with the reason recorded
    arn2 = register(s3, "job-2", metrics(0.74, 0.85, 0.60))["model_package_arn"]
    gate2 = handler("gate_model")({"model_package_arn": arn2})
    assert gate2["passed"] is False and gate2["failed"] == ["label_regression"]
    assert gate2["production_package_arn"] == arn1
    handler("approve_or_reject")({"action": "reject", "model_package_arn": arn2, "gate": gate2})
    d2 = sm.describe_model_package(ModelPackageName=arn2)
    assert d2["ModelApprovalStatus"] == "Rejected"
    assert "TREATMENT" in d2["ApprovalDescription"]
    assert d2["CustomerMetadataProperties"]["gate_failed"] == "label_regression"
    # no production_baseline in these metrics: production was scored on its own data
    assert d2["CustomerMetadataProperties"]["gate_comparison"] == "own_data"

    # a tie with production passes (min_improvement 0) and, in manual mode, stays pending
    # (another model with the same scores: an identical model_version is not registered)
    tie = {**metrics(0.70, 0.72, 0.66), "model_version": "m-0.70-retrained"}
    arn3 = register(s3, "job-3", tie)["model_package_arn"]
    gate3 = handler("gate_model")({"model_package_arn": arn3})
    assert gate3["passed"] is True and gate3["production_package_arn"] == arn1
    handler("approve_or_reject")({"action": "pending", "model_package_arn": arn3, "gate": gate3})
    d3 = sm.describe_model_package(ModelPackageName=arn3)
    assert d3["ModelApprovalStatus"] == "PendingManualApproval"
    assert d3["ApprovalDescription"].startswith("Passed the gate; awaiting manual approval")


def test_register_logs_the_run_to_the_tracking_server_once_per_job(env, mlflow_server, monkeypatch):
    """The network-isolated job cannot reach MLflow: the register step logs its run."""
    from mlflow.tracking import MlflowClient

    from clinical_ner.pipeline.tracking import JOB_TAG, PACKAGE_TAG, SAGEMAKER_ENDPOINT_ENV

    s3, sm, _ = env
    server_arn = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/clinical-ner-dev"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server_arn)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "clinical-ner-dev-registry-test")
    monkeypatch.setenv(SAGEMAKER_ENDPOINT_ENV, mlflow_server.url)
    m = {
        **metrics(0.70, 0.72, 0.66),
        "summary": {"dev_f1": 0.70, "test_f1": 0.70},
        "hyperparameters": {"seed": 0},
    }
    out = register(s3, "job-tracked", m)
    tracked = out["tracking"]
    assert tracked["status"] == "logged" and tracked["new_run"] is True, tracked
    run = MlflowClient(tracking_uri=mlflow_server.url).get_run(tracked["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics == {"dev_f1": 0.70, "test_f1": 0.70}
    assert run.data.params == {"seed": "0"}
    assert run.data.tags[JOB_TAG] == "job-tracked"
    assert run.data.tags[PACKAGE_TAG] == out["model_package_arn"]
    assert run.data.tags["dataset_version"] == "ds-0123456789abcdef"
    assert run.data.tags["trigger"] == "new_annotations"
    assert (
        run.data.tags["model_artifact_uri"]
        == f"s3://{BUCKET}/models/job-tracked/output/model.tar.gz"
    )
    assert run.data.tags["metrics_uri"] == out["metrics_uri"]
    meta = sm.describe_model_package(ModelPackageName=out["model_package_arn"])[
        "CustomerMetadataProperties"
    ]
    assert meta["mlflow_run_id"] == tracked["run_id"]
    assert meta["mlflow_status"] == "logged"
    assert meta["mlflow_experiment"] == "clinical-ner-dev-registry-test"

    again = register(s3, "job-tracked", m)  # a retried step
    assert again["model_package_arn"] == out["model_package_arn"]
    assert again["tracking"]["run_id"] == tracked["run_id"]
    assert again["tracking"]["new_run"] is False


def test_register_succeeds_when_the_tracking_server_is_down(env, monkeypatch):
    from clinical_ner.pipeline.tracking import SAGEMAKER_ENDPOINT_ENV

    s3, sm, _ = env
    monkeypatch.setenv(
        "MLFLOW_TRACKING_URI",
        "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/clinical-ner-dev",
    )
    monkeypatch.setenv(SAGEMAKER_ENDPOINT_ENV, "http://127.0.0.1:9")
    out = register(s3, "job-untracked", metrics(0.70, 0.72, 0.66))
    assert out["tracking"]["status"] == "failed"
    meta = sm.describe_model_package(ModelPackageName=out["model_package_arn"])[
        "CustomerMetadataProperties"
    ]
    assert meta["mlflow_status"] == "failed" and "mlflow_run_id" not in meta


def test_register_fails_clearly_without_metrics(env):
    s3, _, _ = env
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("model/meta.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    s3.put_object(Bucket=BUCKET, Key="models/j/output/model.tar.gz", Body=buf.getvalue())
    with pytest.raises(PipelineStepError, match=r"no top-level metrics\.json"):
        handler("register_model")(
            {
                "training": {
                    "job_name": "j",
                    "image": IMAGE,
                    "model_data_url": f"s3://{BUCKET}/models/j/output/model.tar.gz",
                },
                "dataset": {"dataset_version": "ds-0123456789abcdef"},
            }
        )


def test_missing_event_fields_are_named():
    with pytest.raises(PipelineStepError, match="event lacks model_package_arn"):
        handler("gate_model")({})


def test_throttling_becomes_the_retryable_error_name():
    from botocore.exceptions import ClientError

    def throttled():
        raise ClientError(
            {
                "Error": {"Code": "ThrottlingException", "Message": "slow"},
                "ResponseMetadata": {"HTTPStatusCode": 400},
            },
            "ListModelPackages",
        )

    with pytest.raises(TransientAwsError):
        run_step("x", throttled)


# ------------------------------------------------------------------ deployment (Stubber)

SETTINGS = deployment.DeploySettings(
    endpoint_name="clinical-ner-dev-ner",
    model_role_arn="arn:aws:iam::123456789012:role/clinical-ner-dev-sagemaker-model",
    endpoint=load_stage_config("dev").serverless,
    alarm_names=("a-5xx", "a-latency"),
    subnet_ids=("subnet-1", "subnet-2"),
    security_group_ids=("sg-1",),
    kms_key_arn="arn:aws:kms:us-east-1:123456789012:key/k",
)
PKG = "arn:aws:sagemaker:us-east-1:123456789012:model-package/clinical-ner-dev-ner/3"
NOW = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
NAME = "clinical-ner-dev-ner-v3-20250102030405"


def _clients():
    sm = boto3.client(
        "sagemaker", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    aas = boto3.client(
        "application-autoscaling",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    return sm, aas


def test_first_serverless_deploy_creates_model_config_endpoint():
    sm, aas = _clients()
    with Stubber(sm) as s:
        s.add_response(
            "describe_model_package",
            {
                "ModelPackageName": "p",
                "ModelPackageArn": PKG,
                "ModelPackageVersion": 3,
                "CreationTime": NOW,
                "ModelPackageStatus": "Completed",
                "ModelPackageStatusDetails": {"ValidationStatuses": []},
                "ModelApprovalStatus": "Approved",
            },
            {"ModelPackageName": PKG},
        )
        s.add_client_error(
            "describe_endpoint",
            "ValidationException",
            "Could not find endpoint",
            expected_params={"EndpointName": SETTINGS.endpoint_name},
        )
        s.add_response(
            "create_model",
            {"ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/m"},
            {
                "ModelName": NAME,
                "ExecutionRoleArn": SETTINGS.model_role_arn,
                "PrimaryContainer": {"ModelPackageName": PKG},
            },
        )
        s.add_response(
            "create_endpoint_config",
            {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/c"},
            {
                "EndpointConfigName": NAME,
                "ProductionVariants": [
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": NAME,
                        "ServerlessConfig": {"MemorySizeInMB": 3072, "MaxConcurrency": 2},
                    }
                ],
            },
        )
        s.add_response(
            "create_endpoint",
            {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/e"},
            {"EndpointName": SETTINGS.endpoint_name, "EndpointConfigName": NAME},
        )
        out = deployment.deploy(sm, aas, package_arn=PKG, settings=SETTINGS, now=NOW)
        s.assert_no_pending_responses()
    assert out["guardrails"] is False and out["previous_endpoint_config_name"] == ""


def test_provisioned_update_uses_blue_green_guardrails_with_alarm_rollback():
    import dataclasses

    settings = dataclasses.replace(
        SETTINGS, endpoint=dataclasses.replace(SETTINGS.endpoint, provisioned=True), min_instances=2
    )
    sm, aas = _clients()
    with Stubber(sm) as s, Stubber(aas) as a:
        s.add_response(
            "describe_model_package",
            {
                "ModelPackageName": "p",
                "ModelPackageArn": PKG,
                "ModelPackageVersion": 3,
                "CreationTime": NOW,
                "ModelPackageStatus": "Completed",
                "ModelPackageStatusDetails": {"ValidationStatuses": []},
                "ModelApprovalStatus": "Approved",
            },
        )
        s.add_response(
            "describe_endpoint",
            {
                "EndpointName": settings.endpoint_name,
                "EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/e",
                "EndpointConfigName": "old",
                "EndpointStatus": "InService",
                "CreationTime": NOW,
                "LastModifiedTime": NOW,
            },
        )
        s.add_response(
            "create_model",
            {"ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/m"},
            {
                "ModelName": NAME,
                "ExecutionRoleArn": settings.model_role_arn,
                "PrimaryContainer": {"ModelPackageName": PKG},
                "EnableNetworkIsolation": True,
                "VpcConfig": {"Subnets": ["subnet-1", "subnet-2"], "SecurityGroupIds": ["sg-1"]},
            },
        )
        s.add_response(
            "create_endpoint_config",
            {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/c"},
            {
                "EndpointConfigName": NAME,
                "KmsKeyId": settings.kms_key_arn,
                "ProductionVariants": [
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": NAME,
                        "InstanceType": "ml.m5.large",
                        "InitialInstanceCount": 2,
                        "InitialVariantWeight": 1.0,
                    }
                ],
            },
        )
        s.add_response(
            "describe_endpoint_config",
            {
                "EndpointConfigName": "old",
                "EndpointConfigArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/old",
                "CreationTime": NOW,
                "ProductionVariants": [
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": "m",
                        "InstanceType": "ml.m5.large",
                        "InitialInstanceCount": 2,
                    }
                ],
            },
        )
        a.add_response("deregister_scalable_target", {})
        s.add_response(
            "update_endpoint",
            {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/e"},
            {
                "EndpointName": settings.endpoint_name,
                "EndpointConfigName": NAME,
                "DeploymentConfig": deployment.deployment_config(settings),
            },
        )
        out = deployment.deploy(sm, aas, package_arn=PKG, settings=settings, now=NOW)
        s.assert_no_pending_responses()
    cfg = deployment.deployment_config(settings)
    assert cfg["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"] == "CANARY"
    assert cfg["AutoRollbackConfiguration"]["Alarms"] == [
        {"AlarmName": "a-5xx"},
        {"AlarmName": "a-latency"},
    ]
    assert out["guardrails"] is True and out["previous_endpoint_config_name"] == "old"


def test_unapproved_package_is_never_deployed():
    sm, aas = _clients()
    with Stubber(sm) as s:
        s.add_response(
            "describe_model_package",
            {
                "ModelPackageName": "p",
                "ModelPackageArn": PKG,
                "CreationTime": NOW,
                "ModelPackageStatus": "Completed",
                "ModelPackageStatusDetails": {"ValidationStatuses": []},
                "ModelApprovalStatus": "Rejected",
            },
        )
        with pytest.raises(PipelineStepError, match="not Approved"):
            deployment.deploy(sm, aas, package_arn=PKG, settings=SETTINGS, now=NOW)


@pytest.mark.parametrize(
    ("endpoint_status", "config", "phase"),
    [
        ("Updating", NAME, "in_progress"),
        ("InService", NAME, "deployed"),
        ("InService", "old", "rolled_back"),
        ("Failed", NAME, "failed"),
    ],
)
def test_status_phases(endpoint_status, config, phase):
    sm, aas = _clients()
    with Stubber(sm) as s:
        s.add_response(
            "describe_endpoint",
            {
                "EndpointName": "e",
                "EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/e",
                "EndpointConfigName": config,
                "EndpointStatus": endpoint_status,
                "CreationTime": NOW,
                "LastModifiedTime": NOW,
            },
        )
        dep = {"endpoint_name": "e", "endpoint_config_name": NAME}
        assert deployment.status(sm, aas, deployment=dep, settings=SETTINGS) == phase


def test_serverless_verify_rolls_back_to_previous_config_when_an_alarm_fires():
    sm, _ = _clients()
    cw = boto3.client(
        "cloudwatch", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    dep = {
        "endpoint_name": "e",
        "endpoint_config_name": NAME,
        "previous_endpoint_config_name": "old",
    }
    with Stubber(sm) as s, Stubber(cw) as c:
        c.add_response(
            "describe_alarms",
            {
                "MetricAlarms": [
                    {"AlarmName": "a-5xx", "StateValue": "ALARM"},
                    {"AlarmName": "a-latency", "StateValue": "OK"},
                ]
            },
            {"AlarmNames": ["a-5xx", "a-latency"]},
        )
        s.add_response(
            "update_endpoint",
            {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/e"},
            {"EndpointName": "e", "EndpointConfigName": "old"},
        )
        assert deployment.verify(sm, cw, deployment=dep, settings=SETTINGS) == "rolled_back"
    with Stubber(cw) as c:
        c.add_response(
            "describe_alarms", {"MetricAlarms": [{"AlarmName": "a-5xx", "StateValue": "OK"}]}
        )
        assert deployment.verify(sm, cw, deployment=dep, settings=SETTINGS) == "healthy"


def test_resource_names_fit_sagemaker_limits():
    name = deployment.resource_names("x" * 70, 12345, NOW)
    assert len(name) <= 63 and deployment.check_name(name) == name
