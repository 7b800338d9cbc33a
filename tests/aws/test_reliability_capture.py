"""Endpoint data capture: the deploy step configures it, the drift monitor reads it.

- Deploy (botocore Stubber, exact request parameters): a provisioned endpoint config carries
  ``DataCaptureConfig`` (KMS key, ``s3://<lake>/monitoring/capture``, Input and Output, the
  stage's sampling percentage); serverless configs carry none (SageMaker cannot capture them);
  capture without a KMS key is refused before anything is created.
- Parser (`runtime.capture`) on SageMaker capture-format lines: JSON and BASE64 encodings,
  JSON and JSON Lines payloads, normalised notes; malformed lines, error responses and
  mismatched payloads are counted by reason, never fatal, and never echo text.
- Monitor (embedded moto server): capture files of a window in S3 -> drift reports per model
  version, production reference, CloudWatch drift metrics; a shifted window is flagged.
"""

from __future__ import annotations

import base64
import datetime as dt
import importlib.util
import json
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from clinical_ner.data.notes import content_sha256
from clinical_ner.pipeline import deployment, monitoring
from clinical_ner.pipeline.aws_runtime import PipelineStepError
from clinical_ner.pipeline.stage_config import LAKE, load_stage_config
from clinical_ner.runtime import capture

REPO = Path(__file__).resolve().parents[2]
BUCKET = "lake"
ENDPOINT = "clinical-ner-dev-ner"
PKG = "arn:aws:sagemaker:us-east-1:123456789012:model-package/clinical-ner-dev-ner/3"
NOW = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
NAME = "clinical-ner-dev-ner-v3-20250102030405"
KMS = "arn:aws:kms:us-east-1:123456789012:key/k"


# --------------------------------------------------------------------------- deploy


def _env(provisioned: bool, **extra: str) -> dict[str, str]:
    cfg = load_stage_config("prod").serverless
    return {
        "ENDPOINT_NAME": ENDPOINT,
        "MODEL_ROLE_ARN": "arn:aws:iam::123456789012:role/clinical-ner-dev-sagemaker-model",
        "SERVERLESS_MEMORY_MB": str(cfg.memory_mb),
        "SERVERLESS_MAX_CONCURRENCY": str(cfg.max_concurrency),
        "PROVISIONED": str(provisioned).lower(),
        "INSTANCE_TYPE": "ml.m5.large",
        "ROLLBACK_ALARMS": "a-5xx,a-latency",
        "SUBNET_IDS": "subnet-1,subnet-2",
        "SECURITY_GROUP_IDS": "sg-1",
        "KMS_KEY_ARN": KMS,
        "CAPTURE_S3_URI": capture.capture_s3_uri(BUCKET, LAKE.monitoring),
        "CAPTURE_SAMPLING_PERCENTAGE": str(cfg.capture_sampling_percentage),
        **extra,
    }


def _clients():
    kw = {"region_name": "us-east-1", "aws_access_key_id": "x", "aws_secret_access_key": "x"}
    return boto3.client("sagemaker", **kw), boto3.client("application-autoscaling", **kw)


def _package_and_no_endpoint(s: Stubber) -> None:
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
        expected_params={"EndpointName": ENDPOINT},
    )


def test_provisioned_endpoint_config_captures_input_and_output_encrypted():
    settings = deployment.DeploySettings.from_env(_env(provisioned=True))
    assert settings.capture_sampling_percentage == 20  # prod's stage config value
    sm, aas = _clients()
    with Stubber(sm) as s:
        _package_and_no_endpoint(s)
        s.add_response("create_model", {"ModelArn": "arn:aws:sagemaker:::model/m"})
        s.add_response(
            "create_endpoint_config",
            {"EndpointConfigArn": "arn:aws:sagemaker:::endpoint-config/c"},
            {
                "EndpointConfigName": NAME,
                "KmsKeyId": KMS,
                "ProductionVariants": [deployment.production_variant(NAME, settings)],
                "DataCaptureConfig": {
                    "EnableCapture": True,
                    "InitialSamplingPercentage": 20,
                    "DestinationS3Uri": "s3://lake/monitoring/capture",
                    "KmsKeyId": KMS,
                    "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                    "CaptureContentTypeHeader": {
                        "JsonContentTypes": [
                            "application/json",
                            "application/jsonlines",
                            "application/x-jsonlines",
                            "application/jsonl",
                        ]
                    },
                },
            },
        )
        s.add_response("create_endpoint", {"EndpointArn": "arn:aws:sagemaker:::endpoint/e"})
        out = deployment.deploy(sm, aas, package_arn=PKG, settings=settings, now=NOW)
        s.assert_no_pending_responses()
    assert out["data_capture"] is True


def test_serverless_endpoint_config_has_no_capture():
    """SageMaker rejects DataCaptureConfig on serverless variants: it must not be sent."""
    settings = deployment.DeploySettings.from_env(_env(provisioned=False))
    sm, aas = _clients()
    sent: list[dict] = []
    sm.meta.events.register(
        "provide-client-params.sagemaker.CreateEndpointConfig",
        lambda params, **_: sent.append(dict(params)),
    )
    with Stubber(sm) as s:
        _package_and_no_endpoint(s)
        s.add_response("create_model", {"ModelArn": "arn:aws:sagemaker:::model/m"})
        s.add_response(
            "create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:::endpoint-config/c"}
        )
        s.add_response("create_endpoint", {"EndpointArn": "arn:aws:sagemaker:::endpoint/e"})
        out = deployment.deploy(sm, aas, package_arn=PKG, settings=settings, now=NOW)
    (request,) = sent
    assert "DataCaptureConfig" not in request and out["data_capture"] is False


def test_capture_without_a_kms_key_is_refused_before_anything_is_created():
    settings = deployment.DeploySettings.from_env(_env(provisioned=True, KMS_KEY_ARN=""))
    sm, aas = _clients()
    with Stubber(sm) as s:
        _package_and_no_endpoint(s)  # no create_* responses: a call would fail the stubber
        with pytest.raises(PipelineStepError, match="KMS"):
            deployment.deploy(sm, aas, package_arn=PKG, settings=settings, now=NOW)


# --------------------------------------------------------------------------- parser

TEXT = "Fever treated with aspirin."
SHA = content_sha256(TEXT)
RESULT = {
    "note_id": "n-1",
    "model_version": "m-7",
    "note_sha256": SHA,
    "normalised": False,
    "entities": [
        {
            "entity_id": "e1",
            "start": 0,
            "end": 5,
            "label": "DISEASE",
            "text": "Fever",
            "confidence": 0.91,
            "negated": False,
        },
        {
            "entity_id": "e2",
            "start": 19,
            "end": 26,
            "label": "TREATMENT",
            "text": "aspirin",
            "confidence": 0.8,
            "negated": False,
        },
    ],
}
# A line exactly as SageMaker writes it for JSON content types listed in JsonContentTypes: the
# payloads are strings holding the request and response bodies.
JSON_LINE = (
    '{"captureData":{"endpointInput":{"observedContentType":"application/json","mode":"INPUT",'
    '"data":"{\\"instances\\": [{\\"note_id\\": \\"n-1\\", \\"text\\": \\"Fever treated with '
    'aspirin.\\"}]}","encoding":"JSON"},"endpointOutput":{"observedContentType":'
    '"application/json","mode":"OUTPUT","data":'
    + json.dumps(json.dumps({"predictions": [RESULT]}))
    + ',"encoding":"JSON"}},"eventMetadata":{"eventId":"6f1f5d1e-0a64-4a55-9b55-0c8e1f1d2f3a",'
    '"inferenceTime":"2025-01-02T03:04:05Z"},"eventVersion":"0"}'
)


def _b64(payload: str) -> str:
    return base64.b64encode(payload.encode("utf-8")).decode("ascii")


# The same invocation as JSON Lines without CaptureContentTypeHeader: SageMaker base64-encodes.
BASE64_LINE = json.dumps(
    {
        "captureData": {
            "endpointInput": {
                "observedContentType": "application/jsonlines",
                "mode": "INPUT",
                "data": _b64(json.dumps({"note_id": "n-1", "text": TEXT}) + "\n"),
                "encoding": "BASE64",
            },
            "endpointOutput": {
                "observedContentType": "application/jsonlines",
                "mode": "OUTPUT",
                "data": _b64(json.dumps(RESULT) + "\n"),
                "encoding": "BASE64",
            },
        },
        "eventMetadata": {"eventId": "e-2", "inferenceTime": "2025-01-02T03:05:00Z"},
        "eventVersion": "0",
    }
)


def test_parser_reads_json_and_base64_encoded_capture_lines():
    counts = capture.CaptureCounts()
    notes = list(capture.read_capture([JSON_LINE, BASE64_LINE.encode()], counts))
    assert len(notes) == 2 and counts.events == 2 and counts.notes == 2
    for note in notes:
        assert note.text == TEXT and note.model_version == "m-7" and note.note_sha256 == SHA
        assert [(e["label"], e["confidence"]) for e in note.entities] == [
            ("DISEASE", 0.91),
            ("TREATMENT", 0.8),
        ]


def test_a_normalised_note_is_profiled_on_the_text_the_model_saw():
    sent = "Fever\r\ntreated."
    stored = "Fever\ntreated."
    result = {**RESULT, "normalised": True, "text": stored, "note_sha256": content_sha256(stored)}
    line = json.dumps(
        {
            "captureData": {
                "endpointInput": {
                    "observedContentType": "application/json",
                    "mode": "INPUT",
                    "data": json.dumps({"note_id": "n-1", "text": sent}),
                    "encoding": "JSON",
                },
                "endpointOutput": {
                    "observedContentType": "application/json",
                    "mode": "OUTPUT",
                    "data": json.dumps(result),
                    "encoding": "JSON",
                },
            }
        }
    )
    (note,) = capture.read_capture([line], capture.CaptureCounts())
    assert note.text == stored


def _line(request: object, response: object, *, out_type: str = "application/json") -> str:
    return json.dumps(
        {
            "captureData": {
                "endpointInput": {
                    "observedContentType": "application/json",
                    "mode": "INPUT",
                    "data": json.dumps(request),
                    "encoding": "JSON",
                },
                "endpointOutput": {
                    "observedContentType": out_type,
                    "mode": "OUTPUT",
                    "data": json.dumps(response),
                    "encoding": "JSON",
                },
            },
            "eventMetadata": {"eventId": "x", "inferenceTime": "2025-01-02T03:04:05Z"},
        }
    )


def test_bad_lines_and_notes_are_counted_by_reason_not_fatal():
    secret = "Patient Jane Roe has fever."
    bad_b64 = json.loads(BASE64_LINE)
    bad_b64["captureData"]["endpointOutput"]["data"] = "%%% not base64 %%%"
    lines = [
        JSON_LINE,
        '{"captureData": {"endpointInput": ',  # truncated line
        "not json at all " + secret,
        json.dumps({"eventMetadata": {}}),  # no captureData
        json.dumps(bad_b64),
        _line(  # the endpoint refused the request: nothing was predicted
            {"note_id": "n-2", "text": secret},
            {"error": {"status": 400, "code": "too_long", "message": "note: over limit"}},
        ),
        _line(  # two notes in, one result out
            [{"note_id": "a", "text": secret}, {"note_id": "b", "text": secret}], [RESULT]
        ),
        _line(  # one good note and one whose result is not ours
            [{"note_id": "n-1", "text": TEXT}, {"note_id": "c", "text": secret}],
            [RESULT, {**RESULT, "note_sha256": SHA}],
        ),
        "",  # blank lines are not records
    ]
    counts = capture.CaptureCounts()
    notes = list(capture.read_capture(lines, counts))
    assert [n.text for n in notes] == [TEXT, TEXT]
    assert counts.lines == 8 and counts.events == 2
    assert counts.lines == counts.events + sum(counts.skipped_lines.values())
    assert counts.skipped_lines == {
        "malformed_line": 2,
        "missing_capture_data": 1,
        "bad_output_base64": 1,
        "error_response": 1,
        "input_output_mismatch": 1,
    }
    assert counts.skipped_notes == {"input_output_mismatch": 1}
    assert secret not in json.dumps(counts.as_dict())


def test_jsonlines_request_with_refused_lines_keeps_the_good_notes():
    """The server answers a bad JSON Lines record with an error entry in its place."""
    secret = "Patient Jane Roe has fever."
    request = (
        json.dumps({"note_id": "n-1", "text": TEXT}).encode()
        + b"\n{not json\n\n"
        + b'{"note_id": "n-3", "text": "caf\xe9 '
        + secret.encode()
        + b'"}\n'  # not UTF-8
    )
    response = "".join(
        json.dumps(r) + "\n"
        for r in (
            RESULT,
            {"line": 2, "error": {"status": 400, "code": "malformed_json", "message": "x"}},
            {"line": 4, "note_id": "n-3", "error": {"status": 400, "code": "bad_encoding"}},
        )
    )
    line = json.dumps(
        {
            "captureData": {
                "endpointInput": {
                    "observedContentType": "application/jsonlines",
                    "mode": "INPUT",
                    "data": base64.b64encode(request).decode(),
                    "encoding": "BASE64",
                },
                "endpointOutput": {
                    "observedContentType": "application/jsonlines",
                    "mode": "OUTPUT",
                    "data": response,
                    "encoding": "JSON",
                },
            }
        }
    )
    counts = capture.CaptureCounts()
    (note,) = capture.read_capture([line], counts)
    assert note.text == TEXT and counts.events == 1
    assert counts.skipped_notes == {"error_response": 2}


def test_window_cap_counts_the_rest():
    counts = capture.CaptureCounts()
    notes = list(capture.read_capture([JSON_LINE] * 5, counts, max_notes=3))
    assert len(notes) == 3 and counts.skipped_notes == {"over_window_cap": 2}


# --------------------------------------------------------------------------- monitor


def load_handler(name: str):
    spec = importlib.util.spec_from_file_location(
        f"handler_{name}_capture", REPO / "lambdas" / name / "handler.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WORDS = ["pain", "fever", "aspirin", "cough", "insulin", "asthma", "rash", "diabetes"]


def _invocation(i: int, version: str, *, find: bool = True) -> tuple[dict, dict]:
    text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(5 + i % 7)) + "."
    ents = []
    for word, label in (("fever", "DISEASE"), ("aspirin", "TREATMENT")):
        start = text.find(word)
        if find and start >= 0:
            ents.append(
                {
                    "entity_id": f"e{i}{label}",
                    "start": start,
                    "end": start + len(word),
                    "label": label,
                    "text": word,
                    "confidence": 0.9,
                    "negated": False,
                }
            )
    result = {
        "note_id": f"n{i:04d}",
        "model_version": version,
        "note_sha256": content_sha256(text),
        "normalised": False,
        "entities": ents,
    }
    return {"note_id": f"n{i:04d}", "text": text}, result


def _put_capture(s3, hour: dt.datetime, n: int, version: str, *, find: bool = True) -> list[str]:
    """Capture files as SageMaker names them, 10 invocations per request, some BASE64."""
    base = capture.endpoint_capture_prefix(LAKE.monitoring, ENDPOINT, deployment.VARIANT)
    texts, lines = [], []
    for start in range(0, n, 10):
        pairs = [_invocation(i, version, find=find) for i in range(start, min(n, start + 10))]
        texts += [p[0]["text"] for p in pairs]
        request = json.dumps({"instances": [p[0] for p in pairs]})
        response = json.dumps({"predictions": [p[1] for p in pairs]})
        b64 = (start // 10) % 2 == 1

        def enc(t: str, b64: bool = b64) -> str:
            return _b64(t) if b64 else t

        lines.append(
            json.dumps(
                {
                    "captureData": {
                        "endpointInput": {
                            "observedContentType": "application/json",
                            "mode": "INPUT",
                            "data": enc(request),
                            "encoding": "BASE64" if b64 else "JSON",
                        },
                        "endpointOutput": {
                            "observedContentType": "application/json",
                            "mode": "OUTPUT",
                            "data": enc(response),
                            "encoding": "BASE64" if b64 else "JSON",
                        },
                    },
                    "eventMetadata": {
                        "eventId": f"ev-{start}",
                        "inferenceTime": hour.isoformat().replace("+00:00", "Z"),
                    },
                    "eventVersion": "0",
                }
            )
        )
    lines.append("{ truncated")
    key = f"{base}{hour:%Y/%m/%d/%H}/{hour:%M-%S}-000-0f0e0d0c.jsonl"
    s3.put_object(Bucket=BUCKET, Key=key, Body=("\n".join(lines) + "\n").encode())
    return texts


@pytest.fixture
def lake(aws, monkeypatch):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    cfg = load_stage_config("dev")
    monkeypatch.setenv("LAKE_BUCKET", BUCKET)
    monkeypatch.setenv("STAGE_CONFIG", cfg.to_json())
    monkeypatch.setenv("ENDPOINT_NAME", ENDPOINT)
    return s3, boto3.client("cloudwatch"), cfg


def test_monitor_reads_capture_files_and_publishes_drift_metrics(lake):
    s3, cw, cfg = lake
    n = cfg.drift.reference_min_notes
    day = dt.datetime(2025, 1, 2, tzinfo=dt.UTC)
    texts = _put_capture(s3, day.replace(hour=5), n, "m-7")
    _put_capture(s3, day.replace(hour=1) - dt.timedelta(days=1), 30, "m-7")  # outside window
    monitor = load_handler("drift_monitor").handler

    first = monitor({"source": "endpoint_capture", "window_end": "2025-01-03T00:10:00Z"})
    assert first["start"] == "2025-01-02T00:00:00+00:00" and first["end"].startswith("2025-01-03")
    assert first["counts"]["files"] == 1 and first["counts"]["notes"] == n
    assert first["counts"]["skipped_lines"] == {"malformed_line": 1}
    (established,) = first["results"]
    assert established["decision"] == "reference_established"
    assert established["model_version"] == "m-7"
    ref_key = monitoring.reference_key(LAKE.monitoring, "m-7")
    assert s3.head_object(Bucket=BUCKET, Key=ref_key)

    # Next day, same traffic: no drift. Then a day where the model finds nothing: output drift.
    _put_capture(s3, day.replace(day=3, hour=9), n, "m-7")
    second = monitor({"source": "endpoint_capture", "window_end": "2025-01-04T00:00:00Z"})
    (same,) = second["results"]
    assert same["decision"] == "none" and same["notes"] == n
    _put_capture(s3, day.replace(day=4, hour=9), n, "m-7", find=False)
    third = monitor({"source": "endpoint_capture", "window_end": "2025-01-05T00:00:00Z"})
    (shifted,) = third["results"]
    assert shifted["classes"]["output"] == "severe" and shifted["action"] == "alert"

    report = s3.get_object(Bucket=BUCKET, Key=shifted["report_key"])["Body"].read().decode()
    assert json.loads(report)["window"]["source"] == "endpoint_capture"
    for text in texts:  # statistics only: no note text in reports or results
        assert text not in report and text not in json.dumps([first, second, third])
    names = {m["MetricName"] for m in cw.list_metrics(Namespace=monitoring.NAMESPACE)["Metrics"]}
    assert {"DriftLevel", "NoEntityShareChange", "WindowNotes", "CaptureNotes"} <= names
    levels = cw.list_metrics(Namespace=monitoring.NAMESPACE, MetricName="DriftLevel")["Metrics"]
    dims = {tuple(sorted(d["Name"] for d in m["Dimensions"])) for m in levels}
    assert ("SignalClass", "Stage") in dims  # the alarms' dimension set


def test_each_model_version_in_a_window_is_judged_against_its_own_reference(lake):
    s3, _cw, cfg = lake
    hour = dt.datetime(2025, 1, 2, 5, tzinfo=dt.UTC)
    _put_capture(s3, hour, cfg.drift.reference_min_notes, "m-7")
    _put_capture(s3, hour + dt.timedelta(hours=1), 5, "m-8")
    out = capture.monitor_capture(
        s3,
        boto3.client("cloudwatch"),
        bucket=BUCKET,
        endpoint=ENDPOINT,
        thresholds=cfg.drift,
        stage="dev",
        window_end=dt.datetime(2025, 1, 3, tzinfo=dt.UTC),
    )
    decisions = {r["model_version"]: r["decision"] for r in out["results"]}
    assert decisions == {"m-7": "reference_established", "m-8": "insufficient_data"}


def test_capture_event_without_an_endpoint_fails_clearly(lake, monkeypatch):
    monkeypatch.delenv("ENDPOINT_NAME")
    with pytest.raises(PipelineStepError, match="ENDPOINT_NAME"):
        load_handler("drift_monitor").handler({"source": "endpoint_capture"})


def test_window_bounds_are_whole_hours():
    start, end = capture.window_bounds("2025-01-03T00:10:00Z", 24)
    assert (start, end) == (
        dt.datetime(2025, 1, 2, tzinfo=dt.UTC),
        dt.datetime(2025, 1, 3, tzinfo=dt.UTC),
    )
    assert len(capture.hour_prefixes("p/", start, end)) == 24
    with pytest.raises(ValueError):
        capture.window_bounds(None, 0)


def test_stage_config_bounds_capture_sampling_and_retention():
    import dataclasses

    cfg = load_stage_config("dev")
    with pytest.raises(ValueError, match="capture_sampling_percentage"):
        dataclasses.replace(
            cfg, serverless=dataclasses.replace(cfg.serverless, capture_sampling_percentage=101)
        )
    with pytest.raises(ValueError, match="capture_days"):
        dataclasses.replace(cfg, retention=dataclasses.replace(cfg.retention, capture_days=0))
    restored = type(cfg).from_json(cfg.to_json())  # travels to the Lambdas unchanged
    assert restored.retention.capture_days == cfg.retention.capture_days == 7
