"""The review loop wired into the pipeline, against moto (server on 127.0.0.1).

- the publish step queues every published note once per (note_sha256, model_version) when a
  review table is configured, and nothing without one;
- each submit publishes the running day's KPIs to CloudWatch (Stage; Stage + ModelVersion);
- reviewed notes crossing the threshold start retraining: the ``reviewed_annotations`` trigger,
  debounced (never on a RUNNING execution, cool-down within its own kind);
- `review_apigw.build_app_from_env` (the review Lambda's app) serves an API Gateway event.
"""

from __future__ import annotations

import datetime as dt
import io
import json

import boto3
import pytest
from botocore.stub import Stubber
from review_support import make_extraction
from test_monitoring_lambdas import (
    BUCKET,
    DT,
    MODEL_LABELS,
    RUN_ID,
    _fake_transform,
    _notes,
    _put_curated,
    _put_model,
    load_handler,
)

from clinical_ner.pipeline import monitoring, retraining
from clinical_ner.pipeline.review_queue import ReviewQueue, create_table
from clinical_ner.pipeline.review_service import ReviewService, enqueue_notes
from clinical_ner.pipeline.review_store import LocalStore, MemoryTexts
from clinical_ner.pipeline.stage_config import ReviewSettings, load_stage_config
from clinical_ner.runtime import review_apigw
from clinical_ner.runtime.extraction_steps import put_metrics
from clinical_ner_local.review_server import load_folder

TABLE = "clinical-ner-dev-review"


def _publish_setup(monkeypatch) -> tuple:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    cfg = load_stage_config("dev")
    for key, value in {
        "LAKE_BUCKET": BUCKET,
        "STAGE": "dev",
        "JOB_PREFIX": cfg.resource_prefix,
        "STAGE_CONFIG": cfg.to_json(),
    }.items():
        monkeypatch.setenv(key, value)
    notes = _notes(12)
    _put_curated(s3, notes)
    steps = load_handler("publish_extractions")
    staged = steps.stage({"run_id": RUN_ID})
    input_key = staged["input_uri"].split(f"s3://{BUCKET}/", 1)[1]
    output_key = staged["output_uri"].split(f"s3://{BUCKET}/", 1)[1] + "notes.jsonl.out"
    _fake_transform(s3, input_key, output_key, "m-7")
    event = {"run_id": RUN_ID, "dt": DT, "model_data_url": _put_model(s3, "m-7", MODEL_LABELS)}
    return steps, event, notes


def test_publish_queues_each_note_once_when_a_review_table_is_configured(aws, monkeypatch):
    steps, event, notes = _publish_setup(monkeypatch)
    monkeypatch.delenv("REVIEW_TABLE", raising=False)
    assert "review" not in steps.handler(event)  # no table: the loop is off, as before

    ddb = boto3.client("dynamodb")
    create_table(ddb, TABLE)
    monkeypatch.setenv("REVIEW_TABLE", TABLE)
    first = steps.handler(event)
    again = steps.handler(event)  # a retried publish step
    assert first["review"] == {"created": len(notes)}
    assert again["review"] == {"exists": len(notes)}
    queue = ReviewQueue(ddb, TABLE)
    assert queue.progress() == {"open": len(notes), "done": 0, "total": len(notes)}
    tasks = queue.open_tasks()
    assert {t["note_id"] for t in tasks} == {n.note_id for n in notes}
    task = queue.get(tasks[0]["task_id"])
    note = next(n for n in notes if n.note_id == task["note_id"])
    assert task["task_id"] == f"{note.content_sha256}#m-7"
    assert task["text_ref"] == {"curated_dt": DT}
    # the queue holds offsets that slice the curated text, never the text itself
    for e in task["entities"]:
        assert note.text[e.start : e.end] in ("fever", "pain", "aspirin")
    assert note.text not in json.dumps(ddb.scan(TableName=TABLE)["Items"])


def _service(tmp_path, **kwargs) -> tuple[ReviewService, ReviewQueue]:
    ddb = boto3.client("dynamodb")
    create_table(ddb, TABLE)
    queue = ReviewQueue(ddb, TABLE, lease_seconds=60)
    out, notes_file = make_extraction(tmp_path)
    queue_notes, texts = load_folder(out, [notes_file])
    settings = kwargs.pop("settings", ReviewSettings(validated_eval_fraction=0.01))
    enqueue_notes(queue, queue_notes, settings)
    service = ReviewService(queue, LocalStore(out), MemoryTexts(texts), settings, **kwargs)
    return service, queue


def _review_all(service: ReviewService, queue: ReviewQueue, reject_first: bool) -> list[dict]:
    answers = []
    for i, task in enumerate(queue.open_tasks()):
        lease = queue.claim("alice", task["task_id"])
        note = service.note("alice", task["task_id"], lease.token)
        decisions = [
            {"entity_id": e["entity_id"], "decision": "rejected" if reject_first else "accepted"}
            for e in note["entities"]
        ]
        reject_first = reject_first and not note["entities"]  # reject in one note only
        answers.append(
            service.submit(
                "alice",
                task["task_id"],
                lease.token,
                {"decisions": decisions, "seconds_spent": 30 + 10 * i},
            )
        )
    return answers


def test_each_submit_publishes_the_days_kpis(aws, tmp_path):
    cw = boto3.client("cloudwatch")
    sent: list[list[dict]] = []

    def publish(data: list[dict]) -> None:
        sent.append(data)
        put_metrics(cw, data)

    service, queue = _service(tmp_path, publish_metrics=publish, stage="dev")
    _review_all(service, queue, reject_first=True)
    assert len(sent) == 3  # one PutMetricData batch per submit
    last = {
        (d["MetricName"], len(d["Dimensions"])): d["Value"] for d in sent[-1]
    }  # the running day's KPIs after the third note
    (kpi,) = service.kpis()  # the same definitions over the reviews table
    assert last[("ReviewedNotes", 1)] == 3 == kpi["notes_reviewed"]
    assert last[("ProductionPrecision", 1)] == pytest.approx(kpi["production_precision"])
    assert last[("ProductionRecall", 2)] == pytest.approx(kpi["production_recall"])
    assert last[("CorrectionsPer100Entities", 1)] == pytest.approx(
        kpi["corrections_per_100_entities"]
    )
    assert last[("MedianReviewSeconds", 1)] == kpi["median_review_seconds"] == 40
    assert last[("HoursSaved", 1)] == pytest.approx(kpi["hours_saved"])
    assert kpi["production_precision"] < 1.0  # the rejected entities count
    version = kpi["model_version"]
    listed = cw.list_metrics(Namespace=monitoring.NAMESPACE, MetricName="ReviewedNotes")
    dims = sorted(
        {tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"])) for m in listed["Metrics"]}
    )
    assert dims == [
        (("ModelVersion", version), ("Stage", "dev")),
        (("Stage", "dev"),),
    ]
    stats = cw.get_metric_statistics(
        Namespace=monitoring.NAMESPACE,
        MetricName="ReviewedNotes",
        Dimensions=[{"Name": "Stage", "Value": "dev"}],
        StartTime=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
        EndTime=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
        Period=3600,
        Statistics=["Maximum"],
    )
    assert stats["Datapoints"][0]["Maximum"] == 3


def test_metrics_failures_never_fail_a_submit(aws, tmp_path):
    def broken(_data: list[dict]) -> None:
        raise RuntimeError("CloudWatch is down")

    service, queue = _service(tmp_path, publish_metrics=broken)
    answers = _review_all(service, queue, reject_first=False)
    assert [a["decisions"] >= 0 for a in answers] == [True] * 3
    assert queue.progress()["done"] == 3


def test_crossing_the_threshold_invokes_the_trigger_lambda_asynchronously(aws, tmp_path):
    lam = boto3.client("lambda")
    stub = Stubber(lam)
    for n in (2,):
        stub.add_response(
            "invoke",
            {"StatusCode": 202},
            {
                "FunctionName": "clinical-ner-dev-retraining-trigger",
                "InvocationType": "Event",
                "Payload": _Payload(n),
            },
        )
    settings = ReviewSettings(validated_eval_fraction=0.01, retrain_after_reviewed_notes=2)
    trigger = review_apigw.async_retraining_trigger(lam, "clinical-ner-dev-retraining-trigger", 2)
    with stub:
        service, queue = _service(tmp_path, settings=settings, on_retrain_due=trigger)
        answers = _review_all(service, queue, reject_first=False)
        stub.assert_no_pending_responses()
    assert [a["retrain_due"] for a in answers] == [False, True, False]


class _Payload:
    """Matches the invoke payload: the reviewed_annotations event with the count."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        event = json.loads(other)
        trigger = retraining.parse_trigger(event)
        return trigger.kind == "reviewed_annotations" and trigger.evidence["reviewed_notes"] == (
            self.n
        )


@pytest.fixture
def training_sm(aws):
    sfn = boto3.client("stepfunctions")
    role = boto3.client("iam").create_role(
        RoleName="sfn", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17"})
    )["Role"]["Arn"]
    definition = {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}
    arn = sfn.create_state_machine(
        name="clinical-ner-dev-training", definition=json.dumps(definition), roleArn=role
    )["stateMachineArn"]
    return sfn, arn


def test_reviewed_annotations_trigger_is_debounced_within_its_kind(training_sm):
    sfn, arn = training_sm
    cooldown = dt.timedelta(hours=24)
    t0 = dt.datetime.now(dt.UTC)
    drift = retraining.Trigger("drift", {"alarm_name": "a"})
    assert retraining.start_training(sfn, arn, drift, cooldown=cooldown, now=t0)["started"]
    reviewed = retraining.parse_trigger(
        {"trigger": "reviewed_annotations", "reviewed_notes": 200, "threshold": 200}
    )
    running = retraining.start_training(sfn, arn, reviewed, cooldown=cooldown, now=t0)
    assert running["started"] is False and running["reason"] == "an execution is running"
    for e in sfn.list_executions(stateMachineArn=arn)["executions"]:
        sfn.stop_execution(executionArn=e["executionArn"])
    # a drift run that started before these notes were reviewed does not swallow the trigger
    first = retraining.start_training(sfn, arn, reviewed, cooldown=cooldown, now=t0)
    assert first["started"] is True and first["name"].startswith("reviewed_annotations-")
    payload = json.loads(sfn.describe_execution(executionArn=first["execution_arn"])["input"])
    assert payload["trigger"] == "reviewed_annotations"
    assert payload["evidence"]["reviewed_notes"] == 200
    sfn.stop_execution(executionArn=first["execution_arn"])
    later = t0 + dt.timedelta(hours=1)
    second = retraining.start_training(sfn, arn, reviewed, cooldown=cooldown, now=later)
    assert second["started"] is False and "cool-down" in second["reason"]
    # ... while drift keeps its own rule: any recent execution debounces it
    assert not retraining.start_training(sfn, arn, drift, cooldown=cooldown, now=later)["started"]


@pytest.mark.parametrize(
    "event",
    [
        {"trigger": "reviewed_annotations"},
        {"trigger": "reviewed_annotations", "reviewed_notes": 0, "threshold": 200},
        {"trigger": "reviewed_annotations", "reviewed_notes": "200", "threshold": 200},
        {"trigger": "reviewed_annotations", "reviewed_notes": True, "threshold": 200},
    ],
)
def test_malformed_reviewed_trigger_is_refused(event):
    with pytest.raises(retraining.TriggerError):
        retraining.parse_trigger(event)


def test_review_lambda_app_from_env_serves_an_api_gateway_event(aws, tmp_path, monkeypatch):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    ddb = boto3.client("dynamodb")
    create_table(ddb, TABLE)
    cfg = load_stage_config("dev")
    monkeypatch.setenv("REVIEW_TABLE", TABLE)
    monkeypatch.setenv("LAKE_BUCKET", BUCKET)
    monkeypatch.setenv("STAGE_CONFIG", cfg.to_json())
    monkeypatch.setenv("RETRAINING_FUNCTION_NAME", "clinical-ner-dev-retraining-trigger")
    app = review_apigw.build_app_from_env()
    assert app.service.on_retrain_due is not None and app.service.stage == "dev"
    assert app.service.settings == cfg.review
    event = {
        "rawPath": "/api/queue",
        "requestContext": {
            "http": {"method": "GET", "path": "/api/queue"},
            "authorizer": {"jwt": {"claims": {"sub": "u-1", "cognito:groups": "[reviewers]"}}},
        },
    }
    answer = review_apigw.handle(app, event)
    assert answer["statusCode"] == 200, answer
    assert json.load(io.StringIO(answer["body"]))["progress"] == {"open": 0, "done": 0, "total": 0}
    monkeypatch.delenv("RETRAINING_FUNCTION_NAME")
    assert review_apigw.build_app_from_env().service.on_retrain_due is None


def test_curated_texts_see_notes_curated_later_the_same_day(tmp_path):
    """A long-lived review Lambda caches a day's curated partition; a later extraction run of
    that day adds notes to it, and they must still be served (no 503)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from clinical_ner.data import data_prep
    from clinical_ner.pipeline.review_store import CuratedTexts
    from clinical_ner.pipeline.stage_config import LAKE

    store = LocalStore(tmp_path)
    first, later = _notes(2)
    when = dt.datetime(2024, 6, 1, 8, tzinfo=dt.UTC)
    for i, note in enumerate((first, later)):
        row = data_prep.curated_row(note, run_id=f"run-{i}", ingested_at=when)
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist([row], schema=data_prep.CURATED_NOTE_FILE_SCHEMA), buf)
        store.put(f"{LAKE.curated_notes}dt={DT}/part-{i}.parquet", buf.getvalue())
        if i == 0:
            texts = CuratedTexts(store)
            ref = {"curated_dt": DT}
            assert texts.get(first.note_id, first.content_sha256, ref) == first.text
    assert texts.get(later.note_id, later.content_sha256, ref) == later.text
    assert texts.get("unknown", later.content_sha256, ref) is None


def test_review_lambda_reads_its_sign_in_settings_from_ssm(aws, monkeypatch):
    """The page the Lambda serves carries the hosted UI domain and client (PKCE sign-in)."""
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    create_table(boto3.client("dynamodb"), TABLE)
    ssm = boto3.client("ssm")
    domain = "https://reviewers-1.auth.us-east-1.amazoncognito.com"
    ssm.put_parameter(
        Name="/clinical-ner-dev/review/sign-in",
        Type="String",
        Value=json.dumps({"domain": domain, "client_id": "abc123client"}),
    )
    monkeypatch.setenv("REVIEW_TABLE", TABLE)
    monkeypatch.setenv("LAKE_BUCKET", BUCKET)
    monkeypatch.setenv("STAGE_CONFIG", load_stage_config("dev").to_json())
    monkeypatch.setenv("SIGN_IN_PARAMETER", "/clinical-ner-dev/review/sign-in")
    app = review_apigw.build_app_from_env()
    assert app.sign_in is not None and app.sign_in.client_id == "abc123client"
    page = review_apigw.handle(
        app, {"rawPath": "/", "requestContext": {"http": {"method": "GET", "path": "/"}}}
    )
    assert page["statusCode"] == 200
    body = page["body"] if not page.get("isBase64Encoded") else ""
    assert "abc123client" in body and domain in page["headers"]["Content-Security-Policy"]
    ssm.put_parameter(
        Name="/clinical-ner-dev/review/other", Type="String", Value="not json", Overwrite=True
    )
    monkeypatch.setenv("SIGN_IN_PARAMETER", "/clinical-ner-dev/review/other")
    with pytest.raises(ValueError, match="does not hold the sign-in settings"):
        review_apigw.build_app_from_env()
