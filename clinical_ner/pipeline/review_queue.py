"""The review queue on DynamoDB: idempotent enqueue, risk order, leases, guarded submits.

One table (docs/review.md, "The table"), three kinds of item under the partition key ``pk``:

- task ``<note_sha256>#<model_version>``: one per extraction of a note by a model version
  (so an enqueue is idempotent per (note_sha256, model_version)); the model entities as
  JSON (offsets, labels, confidences; no text), ``status`` pending / claimed / submitting /
  done / superseded / skipped, and while open ``queue = "open"`` plus ``risk`` (sort key of
  the sparse GSI ``by_risk``: no-entity notes first, then lowest confidence first);
- head ``note#<note_sha256>``: which model version's extraction of that text is current
  (latest ``extracted_at``); enqueueing a newer one supersedes the older open task;
- ``stats``: counters of submitted notes (progress, the retraining threshold);
- ``kpi#<review dt>#<model_version>`` and ``kpi#<review dt>#*`` (all versions): the day's
  decision counts and per-note seconds, so each submit can publish the running day's KPIs
  without reading the `reviews` table (`add_kpi_counts`).

A claim is a conditional write (the task is pending, or its lease expired, or the caller
already holds it), so two reviewers never both hold a note; a submit is a transaction that
checks the head (still the current version, else stale) and the lease (holder, token, not
expired), then the caller writes its data and `finish_submit` marks the task done.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from clinical_ner.data.review import QueueNote, ReviewEntity, in_validated_eval, risk_key
from clinical_ner.data.review import selected_for_review as _selected

GSI_NAME = "by_risk"
OPEN = "open"
STATS_PK = "stats"
KPI_PREFIX = "kpi#"
ALL_VERSIONS = "*"
SUBMIT_GRACE_SECONDS = 120
_VERSION = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")


class QueueError(Exception):
    """A queue operation was refused; `status` is the HTTP status the API answers."""

    status = 409


class TaskNotFound(QueueError):
    status = 404


class QueueEmpty(QueueError):
    status = 404


class LeaseConflict(QueueError):
    """Someone else holds the note, the lease expired, or the token is not the lease's."""


class StaleTask(QueueError):
    """The note was re-extracted by a newer model version (or already submitted)."""


@dataclass(frozen=True)
class Lease:
    task_id: str
    reviewer_id: str
    token: str
    expires_at: float


def task_id_of(note_sha256: str, model_version: str) -> str:
    if not _SHA.match(note_sha256) or not _VERSION.match(model_version):
        raise ValueError("note_sha256 must be 64 hex chars and model_version [A-Za-z0-9._-]")
    return f"{note_sha256}#{model_version}"


def create_table(client: Any, name: str) -> None:
    """The table and its GSI (the review stack defines the same keys in CDK)."""
    client.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "queue", "AttributeType": "S"},
            {"AttributeName": "risk", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": GSI_NAME,
                "KeySchema": [
                    {"AttributeName": "queue", "KeyType": "HASH"},
                    {"AttributeName": "risk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    client.get_waiter("table_exists").wait(TableName=name)


def _s(v: str) -> dict[str, str]:
    return {"S": v}


def _n(v: float) -> dict[str, str]:
    return {"N": repr(round(float(v), 3)) if not float(v).is_integer() else str(int(v))}


def _plain(item: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in item.items():
        ((kind, value),) = v.items()
        out[k] = float(value) if kind == "N" else value
    return out


def _failed(exc: Exception) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    return code in ("ConditionalCheckFailedException", "TransactionCanceledException")


class ReviewQueue:
    """The queue table through a boto3 DynamoDB client (`clock` gives epoch seconds)."""

    def __init__(
        self,
        client: Any,
        table: str,
        *,
        lease_seconds: int = 900,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.table = table
        self.lease_seconds = lease_seconds
        self.clock = clock

    # ------------------------------------------------------------------ enqueue

    def enqueue(
        self,
        note: QueueNote,
        *,
        high_confidence_threshold: float = 0.9,
        high_confidence_sample_rate: float = 1.0,
        validated_eval_fraction: float = 0.2,
    ) -> str:
        """Queue one extracted note; "created", "exists", "skipped" (sampled out) or "older"."""
        tid = task_id_of(note.note_sha256, note.model_version)
        if "Item" in self.client.get_item(TableName=self.table, Key={"pk": _s(tid)}):
            return "exists"
        previous, current = self._advance_head(note)
        selected = _selected(
            note.note_sha256,
            note.entities,
            high_confidence_threshold=high_confidence_threshold,
            high_confidence_sample_rate=high_confidence_sample_rate,
        )
        status = "pending" if current and selected else "skipped" if current else "superseded"
        item = {
            "pk": _s(tid),
            "note_id": _s(note.note_id),
            "note_sha256": _s(note.note_sha256),
            "model_version": _s(note.model_version),
            "entities": _s(json.dumps([e.as_dict() for e in note.entities])),
            "labels": _s(json.dumps(list(note.labels))),
            "text_ref": _s(json.dumps(dict(note.text_ref), sort_keys=True)),
            "extracted_at": _s(note.extracted_at),
            "entity_count": _n(len(note.entities)),
            "status": _s(status),
            "enqueued_at": _n(self.clock()),
            "validated_eval": {
                "BOOL": in_validated_eval(note.note_sha256, validated_eval_fraction)
            },
        }
        if status == "pending":
            item["queue"] = _s(OPEN)
            item["risk"] = _s(risk_key(note.entities, note.note_sha256))
        try:
            self.client.put_item(
                TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return "exists"
        if previous and previous != note.model_version:
            self._supersede(task_id_of(note.note_sha256, previous))
        return "created" if status == "pending" else "skipped" if current else "older"

    def _advance_head(self, note: QueueNote) -> tuple[str | None, bool]:
        """Make this version current unless a later extraction is; (previous version, current)."""
        try:
            out = self.client.update_item(
                TableName=self.table,
                Key={"pk": _s(f"note#{note.note_sha256}")},
                UpdateExpression="SET current_version = :v, current_extracted_at = :t",
                ConditionExpression="attribute_not_exists(pk) OR current_extracted_at < :t "
                "OR (current_extracted_at = :t AND current_version <= :v)",
                ExpressionAttributeValues={
                    ":v": _s(note.model_version),
                    ":t": _s(note.extracted_at),
                },
                ReturnValues="UPDATED_OLD",
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return None, False
        return out.get("Attributes", {}).get("current_version", {}).get("S"), True

    def _supersede(self, tid: str) -> None:
        # Done, submitting or already superseded: its review stands as it is.
        with contextlib.suppress(self.client.exceptions.ConditionalCheckFailedException):
            self.client.update_item(
                TableName=self.table,
                Key={"pk": _s(tid)},
                UpdateExpression="SET #s = :sup REMOVE #q, risk, lease_owner, lease_token",
                ConditionExpression="#s IN (:p, :c)",
                ExpressionAttributeNames={"#s": "status", "#q": "queue"},
                ExpressionAttributeValues={
                    ":sup": _s("superseded"),
                    ":p": _s("pending"),
                    ":c": _s("claimed"),
                },
            )

    # ------------------------------------------------------------------ reading

    def get(self, tid: str) -> dict[str, Any]:
        """The task as plain values (entities/labels/text_ref decoded); TaskNotFound if none."""
        if (
            not isinstance(tid, str)
            or "#" not in tid
            or tid.startswith(("note#", STATS_PK, KPI_PREFIX))
        ):
            raise TaskNotFound("no such task")
        got = self.client.get_item(TableName=self.table, Key={"pk": _s(tid)}, ConsistentRead=True)
        if "Item" not in got:
            raise TaskNotFound("no such task")
        task = _plain(got["Item"])
        task["task_id"] = task.pop("pk")
        task["entities"] = [ReviewEntity.from_dict(e) for e in json.loads(task["entities"])]
        task["labels"] = json.loads(task["labels"])
        task["text_ref"] = json.loads(task["text_ref"])
        return task

    def open_tasks(self, limit: int = 100) -> list[dict[str, Any]]:
        """Open tasks (pending or claimed), riskiest first; no entities, no text."""
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": GSI_NAME,
            "KeyConditionExpression": "#q = :o",
            "ExpressionAttributeNames": {"#q": "queue"},
            "ExpressionAttributeValues": {":o": _s(OPEN)},
            "ProjectionExpression": "pk, note_id, model_version, entity_count, #s, "
            "lease_owner, lease_expires, risk",
        }
        kwargs["ExpressionAttributeNames"]["#s"] = "status"
        while len(items) < limit:
            page = self.client.query(**kwargs, Limit=min(100, limit - len(items)))
            items += [_plain(i) for i in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        for item in items:
            item["task_id"] = item.pop("pk")
        return items

    def progress(self) -> dict[str, int]:
        """Open (pending + claimed) and submitted counts."""
        open_count = 0
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": GSI_NAME,
            "KeyConditionExpression": "#q = :o",
            "ExpressionAttributeNames": {"#q": "queue"},
            "ExpressionAttributeValues": {":o": _s(OPEN)},
            "Select": "COUNT",
        }
        while True:
            page = self.client.query(**kwargs)
            open_count += int(page["Count"])
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        stats = self.client.get_item(
            TableName=self.table, Key={"pk": _s(STATS_PK)}, ConsistentRead=True
        ).get("Item", {})
        done = int(float(stats.get("done", {}).get("N", "0")))
        return {"open": open_count, "done": done, "total": open_count + done}

    # ------------------------------------------------------------------ leases

    def claim(self, reviewer_id: str, tid: str | None = None) -> Lease:
        """Claim `tid`, or the riskiest claimable note; LeaseConflict / QueueEmpty otherwise."""
        if tid is not None:
            lease = self._try_claim(reviewer_id, tid)
            if lease is None:
                self.get(tid)  # TaskNotFound when there is no such task
                raise LeaseConflict("the note is held by another reviewer or not open")
            return lease
        now = self.clock()
        for task in self.open_tasks(limit=200):
            free = task["status"] == "pending" or float(task.get("lease_expires", 0)) < now
            if free or task.get("lease_owner") == reviewer_id:
                lease = self._try_claim(reviewer_id, task["task_id"])
                if lease is not None:
                    return lease
        raise QueueEmpty("no note is waiting for review")

    def _try_claim(self, reviewer_id: str, tid: str) -> Lease | None:
        now = self.clock()
        lease = Lease(tid, reviewer_id, uuid.uuid4().hex, now + self.lease_seconds)
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"pk": _s(tid)},
                UpdateExpression="SET #s = :c, lease_owner = :me, lease_token = :tok, "
                "lease_expires = :exp, claimed_at = :now ADD claims :one",
                ConditionExpression="#q = :o AND (#s = :p OR lease_expires < :now "
                "OR (lease_owner = :me AND #s = :c))",
                ExpressionAttributeNames={"#s": "status", "#q": "queue"},
                ExpressionAttributeValues={
                    ":c": _s("claimed"),
                    ":p": _s("pending"),
                    ":o": _s(OPEN),
                    ":me": _s(reviewer_id),
                    ":tok": _s(lease.token),
                    ":exp": _n(lease.expires_at),
                    ":now": _n(now),
                    ":one": _n(1),
                },
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return None
        return lease

    def holder_check(self, tid: str, reviewer_id: str, token: str) -> dict[str, Any]:
        """The task when `reviewer_id` holds a live lease with `token`; else why not."""
        task = self.get(tid)
        self._explain(task, reviewer_id, token, raise_ok=False)
        return task

    def _explain(
        self, task: Mapping[str, Any], reviewer_id: str, token: str, *, raise_ok: bool = True
    ) -> None:
        status = task["status"]
        if status == "superseded":
            raise StaleTask("stale: the note was re-extracted by a newer model version")
        if status == "done":
            raise StaleTask("this note was already submitted")
        if status not in ("claimed", "submitting") or task.get("lease_owner") != reviewer_id:
            raise LeaseConflict("you do not hold this note; claim it first")
        if task.get("lease_token") != token:
            raise LeaseConflict("this lease was replaced by a newer claim")
        if float(task.get("lease_expires", 0)) < self.clock():
            raise LeaseConflict("your lease expired; claim the note again")
        if raise_ok:
            raise LeaseConflict("the note changed while submitting; claim it again")

    def release(self, tid: str, reviewer_id: str, token: str) -> None:
        """Give a claimed note back to the queue (the holder only)."""
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"pk": _s(tid)},
                UpdateExpression="SET #s = :p REMOVE lease_owner, lease_token, lease_expires",
                ConditionExpression="#s = :c AND lease_owner = :me AND lease_token = :tok",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":p": _s("pending"),
                    ":c": _s("claimed"),
                    ":me": _s(reviewer_id),
                    ":tok": _s(token),
                },
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            self._explain(self.get(tid), reviewer_id, token)

    # ------------------------------------------------------------------ submits

    def begin_submit(self, tid: str, reviewer_id: str, token: str, today: str) -> dict[str, Any]:
        """Lock the task for the holder's submit; the task (with its fixed ``review_dt``)."""
        task = self.get(tid)
        now = self.clock()
        try:
            self.client.transact_write_items(
                TransactItems=[
                    {
                        "ConditionCheck": {
                            "TableName": self.table,
                            "Key": {"pk": _s(f"note#{task['note_sha256']}")},
                            "ConditionExpression": "current_version = :v",
                            "ExpressionAttributeValues": {":v": _s(task["model_version"])},
                        }
                    },
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": {"pk": _s(tid)},
                            "UpdateExpression": "SET #s = :sub, lease_expires = :grace, "
                            "review_dt = if_not_exists(review_dt, :today)",
                            "ConditionExpression": "#s = :c AND lease_owner = :me "
                            "AND lease_token = :tok AND lease_expires >= :now",
                            "ExpressionAttributeNames": {"#s": "status"},
                            "ExpressionAttributeValues": {
                                ":sub": _s("submitting"),
                                ":c": _s("claimed"),
                                ":me": _s(reviewer_id),
                                ":tok": _s(token),
                                ":now": _n(now),
                                ":grace": _n(now + SUBMIT_GRACE_SECONDS),
                                ":today": _s(today),
                            },
                        }
                    },
                ]
            )
        except Exception as exc:
            if not _failed(exc):
                raise
            reasons = getattr(exc, "response", {}).get("CancellationReasons") or []
            if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                raise StaleTask(
                    "stale: the note was re-extracted by a newer model version"
                ) from None
            self._explain(self.get(tid), reviewer_id, token)
        return self.get(tid)

    def abort_submit(self, tid: str, token: str) -> None:
        """The data could not be written: hand the lock back to the (still) holder."""
        with contextlib.suppress(self.client.exceptions.ConditionalCheckFailedException):
            self.client.update_item(
                TableName=self.table,
                Key={"pk": _s(tid)},
                UpdateExpression="SET #s = :c",
                ConditionExpression="#s = :sub AND lease_token = :tok",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":c": _s("claimed"),
                    ":sub": _s("submitting"),
                    ":tok": _s(token),
                },
            )

    def finish_submit(
        self, tid: str, reviewer_id: str, token: str, *, trainable: bool
    ) -> dict[str, int]:
        """Mark the task done (data already written); the updated submitted-note counters."""
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"pk": _s(tid)},
                UpdateExpression="SET #s = :d, reviewer_id = :me, done_at = :now "
                "REMOVE #q, risk, lease_owner, lease_token, lease_expires",
                ConditionExpression="#s = :sub AND lease_token = :tok",
                ExpressionAttributeNames={"#s": "status", "#q": "queue"},
                ExpressionAttributeValues={
                    ":d": _s("done"),
                    ":sub": _s("submitting"),
                    ":me": _s(reviewer_id),
                    ":tok": _s(token),
                    ":now": _n(self.clock()),
                },
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            self._explain(self.get(tid), reviewer_id, token)
        out = self.client.update_item(
            TableName=self.table,
            Key={"pk": _s(STATS_PK)},
            UpdateExpression="ADD done :one, trainable :t",
            ExpressionAttributeValues={":one": _n(1), ":t": _n(1 if trainable else 0)},
            ReturnValues="ALL_NEW",
        )["Attributes"]
        return {k: int(float(out[k]["N"])) for k in ("done", "trainable")}

    # ------------------------------------------------------------------ KPI counters

    def add_kpi_counts(
        self, dt: str, model_version: str, counts: Mapping[str, int], seconds: float
    ) -> dict[str, tuple[dict[str, int], list[float]]]:
        """Add one submitted note to the day's counters; model_version / "*" -> (counts, seconds).

        Called once per task, after `finish_submit` (a task is done at most once, so a note is
        never counted twice; a process that dies in between leaves it uncounted here, while
        the `reviews` table, the KPIs' authority, has it).
        """
        out: dict[str, tuple[dict[str, int], list[float]]] = {}
        names = {f"#c{i}": k for i, k in enumerate(sorted(counts))}
        adds = ", ".join(f"{alias} :v{i}" for i, alias in enumerate(names))
        values = {f":v{i}": _n(counts[k]) for i, k in enumerate(names.values())}
        for version in (model_version, ALL_VERSIONS):
            item = self.client.update_item(
                TableName=self.table,
                Key={"pk": _s(f"{KPI_PREFIX}{dt}#{version}")},
                UpdateExpression=f"ADD {adds} SET secs = list_append(if_not_exists(secs, :e), :s)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={
                    **values,
                    ":e": {"L": []},
                    ":s": {"L": [_n(seconds)]},
                },
                ReturnValues="ALL_NEW",
            )["Attributes"]
            out[version] = (
                {k: int(float(item[k]["N"])) for k in counts if k in item},
                [float(v["N"]) for v in item.get("secs", {}).get("L", [])],
            )
        return out
