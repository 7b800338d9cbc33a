"""The extraction/monitoring Lambda handlers in process against an embedded moto server.

- retraining_trigger: debounce (RUNNING execution, cool-down), the three trigger kinds, and
  the executions it leaves on the state machine (listed through the Step Functions API).
- stage -> (stand-in for Batch Transform) -> publish -> drift_monitor on real S3 objects:
  curated Parquet + validate report in, transform JSON Lines, Parquet tables, drift report,
  reference and CloudWatch metrics out; re-publishing does not duplicate objects or rows.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import io
import json
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clinical_ner.data import data_prep
from clinical_ner.data.notes import Note, content_sha256
from clinical_ner.pipeline import monitoring, retraining
from clinical_ner.pipeline.stage_config import LAKE, load_stage_config

REPO = Path(__file__).resolve().parents[2]
BUCKET = "lake"
RUN_ID = "run-0001"
DT = "2024-06-01"


def load_handler(name: str):
    spec = importlib.util.spec_from_file_location(
        f"handler_{name}", REPO / "lambdas" / name / "handler.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- retraining


@pytest.fixture
def training_sm(aws):
    sfn = boto3.client("stepfunctions")
    iam = boto3.client("iam")
    role = iam.create_role(
        RoleName="sfn", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17"})
    )["Role"]["Arn"]
    definition = {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}
    arn = sfn.create_state_machine(
        name="clinical-ner-dev-training", definition=json.dumps(definition), roleArn=role
    )["stateMachineArn"]
    return sfn, arn


ALARM_NAME = "clinical-ner-dev-drift-input-moderate"
ALARM_EVENT = {
    "source": "aws.cloudwatch",
    "alarmArn": f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:{ALARM_NAME}",
    "time": "2024-06-01T10:00:00Z",
    "alarmData": {
        "alarmName": "clinical-ner-dev-drift-input-moderate",
        "state": {"value": "ALARM", "reason": "Threshold Crossed: 1 datapoint [1.0]"},
        "previousState": {"value": "OK"},
    },
}
S3_EVENT = {
    "source": "aws.s3",
    "detail-type": "Object Created",
    "time": "2024-06-01T10:05:00Z",
    "detail": {
        "bucket": {"name": BUCKET},
        "object": {"key": f"{LAKE.raw_annotations}batch-7.jsonl", "size": 1234},
    },
}


def _executions(sfn, arn):
    return sfn.list_executions(stateMachineArn=arn)["executions"]


def test_retraining_is_debounced_while_running_and_within_cooldown(training_sm, monkeypatch):
    sfn, arn = training_sm
    monkeypatch.setenv("TRAINING_STATE_MACHINE_ARN", arn)
    monkeypatch.setenv("COOLDOWN_HOURS", "24")
    handler = load_handler("retraining_trigger").handler

    first = handler(ALARM_EVENT)
    assert first["started"] is True and first["trigger"] == "drift"
    (execution,) = _executions(sfn, arn)
    assert execution["status"] == "RUNNING"
    payload = json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"])
    assert payload["trigger"] == "drift" and payload["dataset_version"] == "latest"
    assert payload["evidence"]["alarm_name"] == "clinical-ner-dev-drift-input-moderate"

    # While it runs: neither another alarm nor new annotations start a second run.
    for event in (ALARM_EVENT, S3_EVENT, {"trigger": "manual", "force": True}):
        out = handler(event)
        assert out["started"] is False and out["reason"] == "an execution is running"
    assert len(_executions(sfn, arn)) == 1

    # Finished, but inside the cool-down: still nothing, unless a person forces it.
    sfn.stop_execution(executionArn=execution["executionArn"])
    out = handler(S3_EVENT)
    assert out["started"] is False and "cool-down" in out["reason"]
    assert len(_executions(sfn, arn)) == 1
    forced = handler({"trigger": "manual", "reason": "new labels reviewed", "force": True})
    assert forced["started"] is True and forced["trigger"] == "manual"
    assert len(_executions(sfn, arn)) == 2


def test_retraining_starts_again_after_the_cooldown(training_sm):
    sfn, arn = training_sm
    trigger = retraining.parse_trigger(S3_EVENT)
    t0 = dt.datetime.now(dt.UTC)
    cooldown = dt.timedelta(hours=1)
    assert retraining.start_training(sfn, arn, trigger, cooldown=cooldown, now=t0)["started"]
    (execution,) = _executions(sfn, arn)
    sfn.stop_execution(executionArn=execution["executionArn"])
    later = t0 + dt.timedelta(minutes=30)
    assert not retraining.start_training(sfn, arn, trigger, cooldown=cooldown, now=later)["started"]
    much_later = t0 + dt.timedelta(hours=1, minutes=1)
    out = retraining.start_training(sfn, arn, trigger, cooldown=cooldown, now=much_later)
    assert out["started"] is True
    assert len(_executions(sfn, arn)) == 2
    payload = json.loads(sfn.describe_execution(executionArn=out["execution_arn"])["input"])
    assert payload["trigger"] == "new_annotations"
    assert payload["evidence"]["key"] == f"{LAKE.raw_annotations}batch-7.jsonl"


def test_unknown_events_and_foreign_prefixes_are_rejected():
    with pytest.raises(retraining.TriggerError):
        retraining.parse_trigger({"hello": "world"})
    wrong = json.loads(json.dumps(S3_EVENT))
    wrong["detail"]["object"]["key"] = "raw/notes/x.txt"
    with pytest.raises(retraining.TriggerError, match="not under"):
        retraining.parse_trigger(wrong)


# ------------------------------------------------------------- extraction steps


def _notes(n: int) -> list[Note]:
    words = ["pain", "fever", "aspirin", "cough", "insulin", "asthma", "rash", "diabetes"]
    notes = []
    for i in range(n):
        text = " ".join(words[(i + k) % len(words)] for k in range(5 + i % 7)) + "."
        notes.append(Note(f"n{i:03d}", text, "raw/notes/a.jsonl", i + 1, content_sha256(text)))
    return notes


def _put_curated(s3, notes: list[Note]) -> None:
    ingested = dt.datetime(2024, 6, 1, 8, tzinfo=dt.UTC)
    rows = [data_prep.curated_row(n, run_id=RUN_ID, ingested_at=ingested) for n in notes]
    # plus a note of another run in the same partition: must be ignored
    other = Note(
        "other", "unrelated text.", "raw/notes/b.txt", None, content_sha256("unrelated text.")
    )
    rows.append(data_prep.curated_row(other, run_id="run-0000", ingested_at=ingested))
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=data_prep.CURATED_NOTE_FILE_SCHEMA), buf)
    s3.put_object(
        Bucket=BUCKET, Key=f"{LAKE.curated_notes}dt={DT}/part-00000.parquet", Body=buf.getvalue()
    )
    s3.put_object(Bucket=BUCKET, Key=f"{LAKE.curated_notes}dt={DT}/_SUCCESS", Body=b"")
    report = {
        "run_id": RUN_ID,
        "dt": DT,
        "in": len(notes) + 2,
        "curated": len(notes),
        "quarantined": 2,
    }
    s3.put_object(
        Bucket=BUCKET,
        Key=f"{LAKE.run_reports}validate_notes/dt={DT}/{RUN_ID}.json",
        Body=json.dumps(report).encode(),
    )


MODEL_LABELS = ["DISEASE", "SYMPTOM", "TREATMENT"]


def _put_model(s3, version: str, labels: list[str]) -> str:
    """A model.tar.gz in the lake whose metrics.json carries the model's version and labels."""
    import tarfile

    body = json.dumps({"model_version": version, "labels": labels}).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("metrics.json")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    key = f"{LAKE.models}job-{version}/output/model.tar.gz"
    s3.put_object(Bucket=BUCKET, Key=key, Body=buf.getvalue())
    return f"s3://{BUCKET}/{key}"


def _fake_transform(s3, input_key: str, output_key: str, version: str) -> None:
    """What the serving container answers: DISEASE for every 'fever', SYMPTOM for 'pain',
    TREATMENT for 'aspirin' (a model with a third label)."""
    lines = s3.get_object(Bucket=BUCKET, Key=input_key)["Body"].read().decode().splitlines()
    out = []
    for line in lines:
        note = json.loads(line)
        text, ents = note["text"], []
        for word, label in (("fever", "DISEASE"), ("pain", "SYMPTOM"), ("aspirin", "TREATMENT")):
            start = text.find(word)
            if start >= 0:
                ents.append(
                    {
                        "start": start,
                        "end": start + len(word),
                        "label": label,
                        "text": word,
                        "confidence": 0.9,
                        "negated": False,
                    }
                )
        out.append(
            json.dumps(
                {
                    "note_id": note["note_id"],
                    "model_version": version,
                    "note_sha256": content_sha256(text),
                    "entities": ents,
                }
            )
        )
    s3.put_object(Bucket=BUCKET, Key=output_key, Body=("\n".join(out) + "\n").encode())


def test_stage_publish_monitor_round_trip(aws, monkeypatch):
    s3 = boto3.client("s3")
    cw = boto3.client("cloudwatch")
    s3.create_bucket(Bucket=BUCKET)
    cfg = load_stage_config("dev")
    monkeypatch.setenv("LAKE_BUCKET", BUCKET)
    monkeypatch.setenv("STAGE", "dev")
    monkeypatch.setenv("JOB_PREFIX", cfg.resource_prefix)
    monkeypatch.setenv("STAGE_CONFIG", cfg.to_json())
    notes = _notes(cfg.drift.reference_min_notes)
    _put_curated(s3, notes)

    steps = load_handler("publish_extractions")
    staged = steps.stage({"run_id": RUN_ID})
    assert staged["notes"] == len(notes) and staged["dt"] == DT
    assert len(staged["transform_job_name"]) <= 63
    input_key = staged["input_uri"].split(f"s3://{BUCKET}/", 1)[1]
    output_key = staged["output_uri"].split(f"s3://{BUCKET}/", 1)[1] + "notes.jsonl.out"
    _fake_transform(s3, input_key, output_key, "m-7")

    # The label set is the transform model's own (its metrics.json), not a constant.
    wrong_model = _put_model(s3, "m-6", MODEL_LABELS)
    from clinical_ner.pipeline.aws_runtime import PipelineStepError

    with pytest.raises(PipelineStepError, match="version"):
        steps.handler({"run_id": RUN_ID, "dt": DT, "model_data_url": wrong_model})
    model_url = _put_model(s3, "m-7", MODEL_LABELS)
    published = steps.handler({"run_id": RUN_ID, "dt": DT, "model_data_url": model_url})
    again = steps.handler({"run_id": RUN_ID, "dt": DT, "model_data_url": model_url})
    assert again["keys"] == published["keys"]
    assert published["notes"] == len(notes) and published["model_version"] == "m-7"
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="inference/")["Contents"]]
    entity_files = [k for k in listed if k.startswith(LAKE.inference_entities)]
    assert entity_files == published["keys"]["entities"]  # no duplicate parts after a re-run
    body = s3.get_object(Bucket=BUCKET, Key=entity_files[0])["Body"].read()
    rows = pq.read_table(io.BytesIO(body)).to_pylist()
    assert len(rows) == published["entities"] == len({r["entity_id"] for r in rows})
    assert {r["label"] for r in rows} == set(MODEL_LABELS)
    notes_key = published["keys"]["notes"][0]
    note_rows = pq.read_table(
        io.BytesIO(s3.get_object(Bucket=BUCKET, Key=notes_key)["Body"].read())
    ).to_pylist()
    assert all(sorted(json.loads(r["entity_counts_by_label"])) == MODEL_LABELS for r in note_rows)

    monitor = load_handler("drift_monitor").handler
    event = {
        "run_id": RUN_ID,
        "dt": DT,
        "model_version": "m-7",
        "entity_keys": published["keys"]["entities"],
    }
    first = monitor(event)
    assert first["decision"] == "reference_established"
    second = monitor(event)
    assert second["decision"] == "none"
    report = json.loads(s3.get_object(Bucket=BUCKET, Key=second["report_key"])["Body"].read())
    assert report["window"]["notes"] == len(notes)
    for note in notes:  # no note text in reports
        assert note.text not in json.dumps(report)
    names = {m["MetricName"] for m in cw.list_metrics(Namespace=monitoring.NAMESPACE)["Metrics"]}
    assert {
        "NotesIn",
        "QuarantineRate",
        "EntitiesExtracted",
        "EntitiesSymptom",
        "DriftLevel",
        "NoteLengthPSI",
    } <= names
    levels = cw.list_metrics(Namespace=monitoring.NAMESPACE, MetricName="DriftLevel")["Metrics"]
    dims = {tuple(sorted(d["Name"] for d in m["Dimensions"])) for m in levels}
    assert ("SignalClass", "Stage") in dims  # the alarms' dimension set


def test_publish_fails_without_transform_output(aws, monkeypatch):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    monkeypatch.setenv("LAKE_BUCKET", BUCKET)
    monkeypatch.setenv("STAGE", "dev")
    _put_curated(s3, _notes(3))
    from clinical_ner.pipeline.aws_runtime import PipelineStepError

    with pytest.raises(PipelineStepError, match="model_data_url"):
        load_handler("publish_extractions").handler({"run_id": RUN_ID, "dt": DT})
    model_url = _put_model(s3, "m-7", MODEL_LABELS)
    with pytest.raises(PipelineStepError, match="no transform output"):
        load_handler("publish_extractions").handler(
            {"run_id": RUN_ID, "dt": DT, "model_data_url": model_url}
        )


def test_resolve_model_wraps_the_newest_approved_package_once(aws, monkeypatch):
    sm = boto3.client("sagemaker")
    group = "clinical-ner-dev-ner"
    sm.create_model_package_group(ModelPackageGroupName=group)
    spec = {
        "Containers": [
            {
                "Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/ner:latest",
                "ModelDataUrl": "s3://lake/models/job-1/output/model.tar.gz",
            }
        ],
        "SupportedContentTypes": ["application/jsonlines"],
        "SupportedResponseMIMETypes": ["application/json"],
    }
    arn = sm.create_model_package(
        ModelPackageGroupName=group,
        InferenceSpecification=spec,
        ModelApprovalStatus="Approved",
    )["ModelPackageArn"]
    monkeypatch.setenv("MODEL_PACKAGE_GROUP", group)
    monkeypatch.setenv("TRANSFORM_ROLE_ARN", "arn:aws:iam::123456789012:role/transform")
    monkeypatch.setenv("MODEL_PREFIX", "clinical-ner-dev-bt")
    monkeypatch.setenv("SUBNET_IDS", "subnet-1,subnet-2")
    monkeypatch.setenv("SECURITY_GROUP_IDS", "sg-1")
    # moto does not store EnableNetworkIsolation: capture the CreateModel request instead.
    sent = []
    sm.meta.events.register(
        "provide-client-params.sagemaker.CreateModel", lambda params, **_: sent.append(params)
    )
    from clinical_ner.runtime.extraction_steps import resolve_transform_model

    first = resolve_transform_model(
        sm,
        group_name=group,
        execution_role_arn="arn:aws:iam::123456789012:role/transform",
        model_prefix="clinical-ner-dev-bt",
        vpc_config={"Subnets": ["subnet-1", "subnet-2"], "SecurityGroupIds": ["sg-1"]},
    )
    (request,) = sent
    assert request["EnableNetworkIsolation"] is True
    assert request["VpcConfig"]["Subnets"] == ["subnet-1", "subnet-2"]
    again = load_handler("publish_extractions").resolve_model({})  # the Lambda entry point
    assert again == first and len(sent) == 1  # created once, reused
    assert first["package_arn"] == arn
    assert first["model_data_url"] == "s3://lake/models/job-1/output/model.tar.gz"
    model = sm.describe_model(ModelName=first["model_name"])
    assert model["PrimaryContainer"]["ModelDataUrl"] == first["model_data_url"]


def test_resolve_model_without_an_approved_package_fails_clearly(aws, monkeypatch):
    sm = boto3.client("sagemaker")
    sm.create_model_package_group(ModelPackageGroupName="g")
    monkeypatch.setenv("MODEL_PACKAGE_GROUP", "g")
    monkeypatch.setenv("TRANSFORM_ROLE_ARN", "arn:aws:iam::123456789012:role/transform")
    monkeypatch.setenv("MODEL_PREFIX", "p")
    from clinical_ner.pipeline.aws_runtime import PipelineStepError

    with pytest.raises(PipelineStepError, match="no Approved model"):
        load_handler("publish_extractions").resolve_model({})
