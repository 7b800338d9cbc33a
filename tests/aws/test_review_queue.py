"""The review queue and API against DynamoDB in moto (server on 127.0.0.1): leases, stale
submits, idempotent enqueue, malformed payloads (4xx, nothing written), no text in logs."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import boto3
import pytest
from review_support import SECRET, make_extraction

from clinical_ner.pipeline.review_queue import (
    LeaseConflict,
    QueueEmpty,
    ReviewQueue,
    StaleTask,
    create_table,
)
from clinical_ner.pipeline.review_service import ReviewService, enqueue_notes
from clinical_ner.pipeline.review_store import LocalStore, MemoryTexts, read_review_rows
from clinical_ner.pipeline.stage_config import ReviewSettings
from clinical_ner.runtime.review_app import ReviewApp
from clinical_ner_local.review_server import load_folder

TABLE = "review-test"


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def env(aws, tmp_path):
    ddb = boto3.client("dynamodb")
    create_table(ddb, TABLE)
    clock = Clock()
    queue = ReviewQueue(ddb, TABLE, lease_seconds=60, clock=clock)
    out, notes = make_extraction(tmp_path)
    queue_notes, texts = load_folder(out, [notes])
    settings = ReviewSettings(validated_eval_fraction=0.01)  # keep the tiny set trainable
    service = ReviewService(queue, LocalStore(out), MemoryTexts(texts), settings)
    return {
        "queue": queue, "clock": clock, "out": out, "notes": queue_notes, "texts": texts,
        "service": service, "settings": settings,
    }  # fmt: skip


def _lake_files(out: Path) -> list[str]:
    return sorted(
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and p.parts[len(out.parts)] in ("reviews", "raw")
    )


def _accept_all(note: dict) -> dict:
    return {
        "decisions": [
            {"entity_id": e["entity_id"], "decision": "accepted"} for e in note["entities"]
        ],
        "seconds_spent": 30,
    }


def test_enqueue_is_idempotent_and_orders_by_risk(env):
    queue = env["queue"]
    first = enqueue_notes(queue, env["notes"], env["settings"])
    again = enqueue_notes(queue, env["notes"], env["settings"])
    assert first == {"created": 3}
    assert again == {"exists": 3}
    order = [t["note_id"] for t in queue.open_tasks()]
    # no entity first, then lowest confidence (pneumonia 0.35 < asthma 0.42)
    assert order == ["rev-003", "rev-002", "rev-001"]
    assert queue.progress() == {"open": 3, "done": 0, "total": 3}


def test_confident_notes_are_sampled(env):
    settings = ReviewSettings(high_confidence_threshold=0.3, high_confidence_sample_rate=0.0)
    counts = enqueue_notes(env["queue"], env["notes"], settings)
    # rev-003 has no entity (always reviewed); the others are confident under 0.3 -> skipped
    assert counts == {"created": 1, "skipped": 2}


def test_two_reviewers_never_hold_one_note(env):
    queue = env["queue"]
    enqueue_notes(queue, env["notes"], env["settings"])
    tid = queue.open_tasks()[0]["task_id"]
    alice = queue.claim("alice", tid)
    with pytest.raises(LeaseConflict):
        queue.claim("bob", tid)
    bob = queue.claim("bob")  # "next note" skips the held one
    assert bob.task_id != tid
    with pytest.raises(LeaseConflict):
        queue.holder_check(tid, "bob", alice.token)
    assert queue.holder_check(tid, "alice", alice.token)["lease_owner"] == "alice"


def test_expired_lease_can_be_taken_over_and_the_old_holder_cannot_submit(env):
    queue, svc = env["queue"], env["service"]
    enqueue_notes(queue, env["notes"], env["settings"])
    tid = next(t for t in queue.open_tasks() if t["note_id"] == "rev-002")["task_id"]
    alice = queue.claim("alice", tid)
    note = svc.note("alice", tid, alice.token)
    env["clock"].t += 61  # past the 60 s lease
    with pytest.raises(LeaseConflict, match="expired"):
        svc.submit("alice", tid, alice.token, _accept_all(note))
    bob = queue.claim("bob", tid)
    with pytest.raises(LeaseConflict):
        svc.submit("alice", tid, alice.token, _accept_all(note))
    assert _lake_files(env["out"]) == []
    svc.submit("bob", tid, bob.token, _accept_all(note))
    assert queue.get(tid)["status"] == "done"
    with pytest.raises(StaleTask, match="already submitted"):
        svc.submit("bob", tid, bob.token, _accept_all(note))


def test_stale_submit_after_reextraction_is_refused(env):
    queue, svc = env["queue"], env["service"]
    enqueue_notes(queue, env["notes"], env["settings"])
    old = next(n for n in env["notes"] if n.note_id == "rev-002")
    tid = f"{old.note_sha256}#{old.model_version}"
    lease = queue.claim("alice", tid)
    note = svc.note("alice", tid, lease.token)
    from dataclasses import replace

    newer = replace(old, model_version="clinical-ner-bbbbbbbbbbbb", extracted_at="2030-01-01")
    assert queue.enqueue(newer) == "created"
    with pytest.raises(StaleTask, match="newer model"):
        svc.submit("alice", tid, lease.token, _accept_all(note))
    assert _lake_files(env["out"]) == []
    assert queue.get(tid)["status"] == "superseded"
    # an older extraction arriving late never becomes current
    older = replace(old, model_version="clinical-ner-000000000000", extracted_at="2001-01-01")
    assert queue.enqueue(older) == "older"
    assert [t["model_version"] for t in queue.open_tasks() if t["note_id"] == "rev-002"] == [
        "clinical-ner-bbbbbbbbbbbb"
    ]


def test_stale_submit_when_supersede_has_not_run_yet(env):
    """The head moved but the old task is still claimed: the submit transaction refuses."""
    queue, svc = env["queue"], env["service"]
    enqueue_notes(queue, env["notes"], env["settings"])
    old = next(n for n in env["notes"] if n.note_id == "rev-001")
    tid = f"{old.note_sha256}#{old.model_version}"
    lease = queue.claim("alice", tid)
    note = svc.note("alice", tid, lease.token)
    queue.client.update_item(
        TableName=TABLE,
        Key={"pk": {"S": f"note#{old.note_sha256}"}},
        UpdateExpression="SET current_version = :v",
        ExpressionAttributeValues={":v": {"S": "clinical-ner-cccccccccccc"}},
    )
    with pytest.raises(StaleTask):
        svc.submit("alice", tid, lease.token, _accept_all(note))
    assert _lake_files(env["out"]) == []


def test_queue_empty(env):
    with pytest.raises(QueueEmpty):
        env["queue"].claim("alice")


# --------------------------------------------------------------------------- the HTTP API


def _call(app, method, path, body=None, *, reviewer="alice", token=None, raw=None, ctype=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "CONTENT_LENGTH": str(len(data)) if data else "",
        "CONTENT_TYPE": ctype or ("application/json" if data else ""),
        "wsgi.input": io.BytesIO(data),
    }
    if reviewer:
        environ["HTTP_X_REVIEWER"] = reviewer
    if token:
        environ["HTTP_X_LEASE_TOKEN"] = token
    got = {}
    out = b"".join(app(environ, lambda s, h: got.update(status=int(s.split()[0]))))
    return got["status"], json.loads(out) if out.startswith(b"{") else out


@pytest.fixture
def api(env):
    enqueue_notes(env["queue"], env["notes"], env["settings"])
    app = ReviewApp(env["service"], reviewer_header="X-Reviewer", required_group=None)
    tid = next(t for t in env["queue"].open_tasks() if t["note_id"] == "rev-001")["task_id"]
    status, lease = _call(app, "POST", "/api/claim", {"task_id": tid})
    assert status == 200
    status, note = _call(app, "GET", f"/api/tasks/{tid}", token=lease["lease_token"])
    assert status == 200
    return app, tid, lease["lease_token"], note


@pytest.mark.parametrize(
    ("raw", "ctype", "status"),
    [
        (b"{not json", None, 400),
        (b"\xff\xfe{}", None, 400),
        (b'{"decisions": [], "seconds_spent": NaN}', None, 400),
        (b"[" * 100_000 + b"]" * 100_000, None, 400),
        (b"[]", None, 422),
        (b'{"decisions": "all", "seconds_spent": 1}', None, 422),
        (b'{"decisions": [], "seconds_spent": 1}', None, 422),  # entities left undecided
        (
            b'{"decisions": [{"decision": "added", "start": 5, "end": 2, "label": "DISEASE"}], '
            b'"seconds_spent": 1}',
            None,
            422,
        ),
        (b'{"decisions": [{"decision": "deleted_all"}], "seconds_spent": 1}', None, 422),
        (b'{"decisions": [{"decision": ["x"]}], "seconds_spent": 1}', None, 422),
        (b'{"decisions": [], "seconds_spent": -4}', None, 422),
        (b'{"decisions": [], "seconds_spent": true}', None, 422),
        (b'{"decisions": []}', "text/plain", 415),
        (b"{" + b" " * (1 << 20) + b"}", None, 413),
    ],
)
def test_malformed_payloads_get_a_4xx_and_write_nothing(env, api, raw, ctype, status):
    app, tid, token, _ = api
    got, body = _call(app, "POST", f"/api/tasks/{tid}/submit", raw=raw, ctype=ctype, token=token)
    assert got == status, body
    assert set(body) == {"error", "reason"}
    assert _lake_files(env["out"]) == []
    assert env["queue"].get(tid)["status"] == "claimed"


def test_overlapping_and_foreign_decisions_are_refused(env, api):
    app, tid, token, note = api
    ents = note["entities"]
    base = [{"entity_id": e["entity_id"], "decision": "accepted"} for e in ents]
    e0 = ents[0]
    overlapping = [*base, {"decision": "added", "start": e0["start"], "end": e0["end"] + 1,
                           "label": "DISEASE"}]  # fmt: skip
    for decisions in (
        overlapping,
        [*base, {"entity_id": "0000000000000000", "decision": "accepted"}],
        [*base, base[0]],
        [*base[1:], {"entity_id": e0["entity_id"], "decision": "relabelled", "label": "NOPE"}],
    ):
        got, body = _call(
            app, "POST", f"/api/tasks/{tid}/submit",
            {"decisions": decisions, "seconds_spent": 3}, token=token,
        )  # fmt: skip
        assert got == 422, body
    assert _lake_files(env["out"]) == []


def test_identity_and_lease_are_required(env, api):
    app, tid, token, _ = api
    assert _call(app, "GET", "/api/queue", reviewer=None)[0] == 401
    assert _call(app, "GET", "/api/queue", reviewer="bad name\n")[0] == 401
    assert _call(app, "GET", f"/api/tasks/{tid}", reviewer="bob", token=token)[0] == 409
    assert _call(app, "GET", f"/api/tasks/{tid}")[0] == 400  # no lease token
    assert _call(app, "GET", "/api/tasks/nope", token=token)[0] == 404
    jwt_app = ReviewApp(env["service"])  # AWS mode: the header is not trusted
    assert _call(jwt_app, "GET", "/api/queue")[0] == 401


def test_a_submit_writes_rows_annotation_and_no_text_in_logs(env, api, caplog):
    app, tid, token, note = api
    caplog.set_level(logging.DEBUG)
    text = note["text"]
    assert SECRET in text
    ents = {text[e["start"] : e["end"]]: e for e in note["entities"]}
    secret_start = text.index(SECRET)
    decisions = [
        {"entity_id": ents["asthma"]["entity_id"], "decision": "accepted"},
        {"entity_id": ents["fever"]["entity_id"], "decision": "rejected"},
        {"entity_id": ents["salbutamol"]["entity_id"], "decision": "relabelled",
         "label": "DISEASE"},
        {"decision": "added", "start": secret_start, "end": secret_start + len(SECRET),
         "label": "DISEASE"},
    ]  # fmt: skip
    got, body = _call(
        app, "POST", f"/api/tasks/{tid}/submit",
        {"decisions": decisions, "seconds_spent": 42.0}, token=token,
    )  # fmt: skip
    assert got == 200, body
    rows = read_review_rows(LocalStore(env["out"]))
    assert sorted(r["decision"] for r in rows) == [
        "accepted", "added", "note_reviewed", "rejected", "relabelled",
    ]  # fmt: skip
    assert {r["reviewer_id"] for r in rows} == {"alice"}
    annotation = [p for p in env["out"].rglob("*.jsonl") if "reviewed" in p.parts]
    assert len(annotation) == 1
    record = json.loads(annotation[0].read_text("utf-8"))
    assert [record["text"][s:e] for s, e, _ in record["label"]] == [
        "asthma", "salbutamol", SECRET,
    ]  # fmt: skip
    # a malformed request whose body holds the secret: still nothing in the logs
    _call(app, "POST", f"/api/tasks/{tid}/submit", raw=f'{{"x": "{SECRET}'.encode(), token=token)
    logged = "\n".join(
        f"{r.getMessage()} {json.dumps(r.__dict__, default=str)}" for r in caplog.records
    )
    assert "review request" in logged
    assert SECRET not in logged and "asthma" not in logged
    assert _call(app, "GET", "/api/kpis")[1]["kpis"][0]["notes_reviewed"] == 1
