"""The MLflow REST client against a real local ``mlflow server``, and its SigV4 signing.

The managed SageMaker tracking server speaks the same REST API behind SigV4; the client is
pointed at the local server through ``MLFLOW_SAGEMAKER_ENDPOINT`` with a tracking-server ARN
as the URI, so the exact code path of the register Lambda runs (the local server ignores the
signature). The signature itself is checked against botocore's canonical request.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
import uuid

import pytest
from botocore.credentials import Credentials

from clinical_ner.pipeline import tracking
from clinical_ner.pipeline.tracking import (
    ARN_HEADER,
    JOB_TAG,
    MlflowRestClient,
    RestEndpoint,
    RunRecord,
    log_record,
    run_record,
)

ARN = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/clinical-ner-dev"
CREDS = Credentials("AKIDEXAMPLE", "secret", "token")


@pytest.fixture
def managed(mlflow_server, monkeypatch):
    """The ARN form of the URI, routed to the local server."""
    monkeypatch.setenv(tracking.SAGEMAKER_ENDPOINT_ENV, mlflow_server.url)
    return mlflow_server


def _client(server):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=server.url)


def _record(job: str, **extra) -> RunRecord:
    return RunRecord(
        run_name=job,
        params={"seed": "0", "max_steps": "800", **extra.pop("params", {})},
        metrics={"dev_f1": 0.81, "dev_f1_DISEASE": 0.79, "training_seconds": 633.0},
        tags={JOB_TAG: job, "model_version": "clinical-ner-abc", **extra},
    )


def test_run_is_logged_to_the_server_with_params_metrics_and_tags(managed):
    job = f"job-{uuid.uuid4().hex[:8]}"
    out = log_record(
        _record(job), tracking_uri=ARN, experiment="clinical-ner-dev", credentials=CREDS
    )
    assert out["status"] == "logged" and out["new_run"] is True, out
    run = _client(managed).get_run(out["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == job
    assert run.data.params == {"seed": "0", "max_steps": "800"}
    assert run.data.metrics == {"dev_f1": 0.81, "dev_f1_DISEASE": 0.79, "training_seconds": 633.0}
    assert run.data.tags[JOB_TAG] == job
    assert run.data.tags["model_version"] == "clinical-ner-abc"
    exp = _client(managed).get_experiment(out["experiment_id"])
    assert exp.name == "clinical-ner-dev"


def test_a_retried_step_reuses_the_run_of_the_same_job(managed):
    job = f"job-{uuid.uuid4().hex[:8]}"
    first = log_record(_record(job), tracking_uri=ARN, experiment="retry", credentials=CREDS)
    again = log_record(_record(job), tracking_uri=ARN, experiment="retry", credentials=CREDS)
    assert again["status"] == "logged" and again["new_run"] is False
    assert again["run_id"] == first["run_id"]
    runs = _client(managed).search_runs([first["experiment_id"]], f"tags.`{JOB_TAG}` = '{job}'")
    assert len(runs) == 1


def test_a_run_left_running_by_a_failed_attempt_is_completed(managed):
    job = f"job-{uuid.uuid4().hex[:8]}"
    client = _client(managed)
    exp_id = client.create_experiment(f"half-{job}")
    half = client.create_run(exp_id, tags={JOB_TAG: job}, run_name=job)
    client.log_param(half.info.run_id, "seed", "0")  # the earlier attempt got this far
    out = log_record(_record(job), tracking_uri=ARN, experiment=f"half-{job}", credentials=CREDS)
    assert out["run_id"] == half.info.run_id and out["new_run"] is False
    run = client.get_run(half.info.run_id)
    assert run.info.status == "FINISHED" and run.data.params["max_steps"] == "800"


def test_more_params_and_tags_than_one_batch_allows_are_all_logged(managed):
    job = f"job-{uuid.uuid4().hex[:8]}"
    params = {f"p{i:03d}": str(i) for i in range(250)}  # log-batch takes 100 params per call
    out = log_record(
        _record(job, params=params), tracking_uri=ARN, experiment="wide", credentials=CREDS
    )
    run = _client(managed).get_run(out["run_id"])
    assert len(run.data.params) == 252


def test_experiment_creation_tolerates_a_concurrent_creator(managed):
    name = f"race-{uuid.uuid4().hex[:8]}"
    client = MlflowRestClient(RestEndpoint.for_uri(ARN), credentials=CREDS)
    first = client.experiment_id(name)
    assert client.experiment_id(name) == first  # found, not created twice


def test_unreachable_server_is_reported_never_raised(monkeypatch):
    monkeypatch.setenv(tracking.SAGEMAKER_ENDPOINT_ENV, "http://127.0.0.1:9")  # discard port
    out = log_record(_record("job-x"), tracking_uri=ARN, experiment="e", credentials=CREDS)
    assert out["status"] == "failed"
    assert out["reason"].startswith("TrackingError: MLflow experiments/get-by-name unreachable")


def test_http_errors_carry_mlflow_error_codes(managed):
    client = MlflowRestClient(RestEndpoint.for_uri(ARN), credentials=CREDS)
    with pytest.raises(tracking.TrackingError) as err:
        client.call("GET", "runs/get", query={"run_id": "0" * 32})
    assert err.value.status == 404 and err.value.error_code == "RESOURCE_DOES_NOT_EXIST"


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("", "MLFLOW_TRACKING_URI is not set"),
        ("file:/tmp/mlruns", "not a tracking server URI"),
        ("arn:aws:sagemaker:us-east-1:123456789012:model-package/x/1", "not a tracking server URI"),
    ],
)
def test_log_record_is_disabled_without_a_tracking_server(uri, reason):
    assert log_record(_record("j"), tracking_uri=uri) == {"status": "disabled", "reason": reason}


# ----------------------------------------------------------------------- SigV4 + routing


def test_arn_routes_to_the_regional_experiments_endpoint(monkeypatch):
    monkeypatch.delenv(tracking.SAGEMAKER_ENDPOINT_ENV, raising=False)
    ep = RestEndpoint.for_uri(ARN.replace("us-east-1", "eu-west-1"))
    assert ep.base_url == "https://eu-west-1.experiments.sagemaker.aws"
    assert ep.sign_region == "eu-west-1"
    assert ep.headers == {ARN_HEADER: ARN.replace("us-east-1", "eu-west-1")}
    plain = RestEndpoint.for_uri("https://mlflow.example.org/")
    assert plain.base_url == "https://mlflow.example.org" and plain.sign_region is None
    with pytest.raises(tracking.TrackingError):
        RestEndpoint.for_uri(
            "arn:aws-cn:sagemaker:cn-north-1:123456789012:mlflow-tracking-server/x"
        )


def test_requests_are_sigv4_signed_for_sagemaker_mlflow(monkeypatch):
    monkeypatch.delenv(tracking.SAGEMAKER_ENDPOINT_ENV, raising=False)
    sent: list[urllib.request.Request] = []

    def capture(request, timeout):
        sent.append(request)
        raise urllib.error.URLError("captured")

    monkeypatch.setattr(urllib.request, "urlopen", capture)
    client = MlflowRestClient(RestEndpoint.for_uri(ARN), credentials=CREDS)
    with pytest.raises(tracking.TrackingError):
        client.call("POST", "runs/create", {"experiment_id": "1"})
    request = sent[0]
    headers = {k.lower(): v for k, v in request.header_items()}
    assert (
        request.full_url == "https://us-east-1.experiments.sagemaker.aws/api/2.0/mlflow/runs/create"
    )
    assert headers[ARN_HEADER] == ARN
    auth = headers["authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/us-east-1/sagemaker-mlflow/aws4_request" in auth
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {ARN_HEADER, "x-amz-content-sha256", "x-amz-date", "host"} <= set(signed)
    assert headers["x-amz-security-token"] == "token"
    body = json.dumps({"experiment_id": "1"}).encode()
    assert request.data == body
    assert headers["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()


def test_signature_matches_botocore_for_the_same_request():
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    url = "https://us-east-1.experiments.sagemaker.aws/api/2.0/mlflow/runs/get?run_id=abc"
    ours = tracking.sigv4_headers("GET", url, b"", {ARN_HEADER: ARN}, "us-east-1", CREDS)
    reference = AWSRequest(
        method="GET",
        url=url,
        headers={ARN_HEADER: ARN, "X-Amz-Content-SHA256": ours["X-Amz-Content-SHA256"]},
    )
    reference.context["timestamp"] = ours["X-Amz-Date"]
    SigV4Auth(CREDS, "sagemaker-mlflow", "us-east-1").add_auth(reference)
    assert reference.headers["Authorization"] == ours["Authorization"]


# ------------------------------------------------------------------ run from metrics.json


def test_run_record_from_metrics_json():
    metrics_doc = {
        "model_version": "clinical-ner-abc",
        "dev_source": "dev files",
        "summary": {"dev_f1": 0.8, "test_f1": 0.78, "job_seconds": 12.5},
        "calibration": {"ece_raw": 0.1, "auroc": 0.85, "reliability_calibrated": [[0.1, 0.2]]},
        "training_seconds": 10.0,
        "train_docs": 100,
        "dev_docs": 10,
        "hyperparameters": {"seed": 0, "max_steps": 800},
        "label_map": {"D": "DISEASE"},
        "config_sha256": "c" * 64,
        "training_data": {"s3://b/train.jsonl": "a" * 64},
        "data_reports": {"train": {"docs": 100}},
        "production_baseline": {"model_version": "clinical-ner-prod", "dev": {"ents_f": 0.7}},
    }
    record = run_record(
        metrics_doc,
        job_name="job-1",
        artifact_uri="s3://b/models/job-1/output/model.tar.gz",
        extra_tags={"dataset_version": "ds-0123456789abcdef"},
    )
    assert record.run_name == "job-1"
    assert record.params == {
        "seed": "0",
        "max_steps": "800",
        "label_map": '{"D": "DISEASE"}',
        "config_sha256": "c" * 64,
        "data_sha256": tracking.combined_hash({"s3://b/train.jsonl": "a" * 64}),
    }
    assert record.metrics == {
        "dev_f1": 0.8,
        "test_f1": 0.78,
        "job_seconds": 12.5,
        "calibration.ece_raw": 0.1,
        "calibration.auroc": 0.85,
        "training_seconds": 10.0,
        "train_docs": 100.0,
        "dev_docs": 10.0,
    }
    assert record.tags == {
        "model_version": "clinical-ner-abc",
        "model_artifact_uri": "s3://b/models/job-1/output/model.tar.gz",
        "dev_source": "dev files",
        "production_model_version": "clinical-ner-prod",
        JOB_TAG: "job-1",
        "dataset_version": "ds-0123456789abcdef",
    }
