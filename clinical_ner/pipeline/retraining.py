"""Start the training state machine on a trigger, debounced (the ``retraining_trigger`` Lambda).

Triggers (`parse_trigger`):

- ``drift``: a moderate drift alarm changed to ALARM (CloudWatch invokes the Lambda directly
  with the alarm's state-change event). Evidence: alarm name, reason, time.
- ``new_annotations``: an S3 "Object Created" event under ``raw/annotations/`` (EventBridge).
  Evidence: object key, size, time (never content).
- ``manual``: ``{"trigger": "manual", "reason": "...", "force": false}`` from a person.
- ``reviewed_annotations``: ``{"trigger": "reviewed_annotations", "reviewed_notes": N,
  "threshold": T}`` from the review loop (`ReviewService.on_retrain_due`, the review Lambda
  invoking this one asynchronously) when the count of trainable reviewed notes crossed a
  multiple of ``retrain_after_reviewed_notes``. Evidence: the counts (never note content).

Debounce (`start_training`): no new execution while one is RUNNING, and none within
``cooldown`` after the start of the most recent execution (any status), so an alarm that
flaps, or a hundred annotation files dropped at once, start one run. For
``reviewed_annotations`` the cool-down counts from the latest execution *of that kind*: the
trigger fires once per ``retrain_after_reviewed_notes`` reviewed notes (it cannot flap), and
a drift run that started before those notes were reviewed never trained on them, so it must
not swallow the one trigger they get. A manual trigger with
``force: true`` skips the cool-down but never stacks on a RUNNING execution. The check reads
the state machine's own execution history (no extra state store); the Lambda runs with
reserved concurrency 1, so two triggers cannot both pass the check at the same moment, and the
execution name is derived from the trigger and the cool-down slot, so a duplicate that slipped
through would be rejected by Step Functions as an existing execution name.

Annotation files that arrive while a run is RUNNING are not lost: they sit in
``raw/annotations/`` and the next run's data-prep step reads everything there.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from clinical_ner.pipeline.stage_config import LAKE

TRIGGER_DRIFT = "drift"
TRIGGER_ANNOTATIONS = "new_annotations"
TRIGGER_MANUAL = "manual"
TRIGGER_REVIEWED = "reviewed_annotations"
REASON_MAX = 500
_MAX_HISTORY_PAGES = 10
_NAME_SAFE = re.compile(r"[^A-Za-z0-9_-]")


class TriggerError(ValueError):
    """The event is not a trigger this function understands."""


@dataclass(frozen=True)
class Trigger:
    kind: str
    evidence: dict[str, Any] = field(default_factory=dict)
    force: bool = False


def parse_trigger(
    event: Mapping[str, Any], annotations_prefix: str = LAKE.raw_annotations
) -> Trigger:
    """A `Trigger` from a CloudWatch alarm action, an S3 EventBridge event or a manual call."""
    if not isinstance(event, Mapping):
        raise TriggerError("event must be a JSON object")
    if event.get("source") == "aws.cloudwatch" and "alarmData" in event:
        data = event["alarmData"]
        state = data.get("state", {})
        return Trigger(
            TRIGGER_DRIFT,
            {
                "alarm_name": data.get("alarmName"),
                "alarm_arn": event.get("alarmArn"),
                "state": state.get("value"),
                "previous_state": data.get("previousState", {}).get("value"),
                "reason": str(state.get("reason", ""))[:REASON_MAX],
                "time": event.get("time") or state.get("timestamp"),
            },
        )
    if event.get("source") == "aws.s3" and event.get("detail-type") == "Object Created":
        detail = event.get("detail", {})
        key = detail.get("object", {}).get("key", "")
        if not key.startswith(annotations_prefix):
            raise TriggerError(f"object is not under {annotations_prefix}")
        return Trigger(
            TRIGGER_ANNOTATIONS,
            {
                "bucket": detail.get("bucket", {}).get("name"),
                "key": key,
                "size": detail.get("object", {}).get("size"),
                "time": event.get("time"),
            },
        )
    if event.get("trigger") == TRIGGER_MANUAL:
        force = event.get("force", False)
        if not isinstance(force, bool):
            raise TriggerError("force must be true or false")
        reason = str(event.get("reason") or "manual request")[:REASON_MAX]
        return Trigger(
            TRIGGER_MANUAL, {"reason": reason, "requested_by": event.get("requested_by")}, force
        )
    if event.get("trigger") == TRIGGER_REVIEWED:
        counts = {k: event.get(k) for k in ("reviewed_notes", "threshold")}
        for key, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TriggerError(f"{key} must be a positive integer")
        return Trigger(TRIGGER_REVIEWED, {**counts, "time": event.get("time")})
    raise TriggerError(
        "unknown event: expected a CloudWatch alarm action, an S3 Object Created event, "
        '{"trigger": "manual"} or {"trigger": "reviewed_annotations"}'
    )


def execution_name(trigger: Trigger, now: datetime, cooldown: timedelta) -> str:
    """``<trigger>-<cool-down slot>-<hash>``: one name per trigger kind and cool-down slot."""
    seconds = max(int(cooldown.total_seconds()), 1)
    slot = int(now.timestamp()) // seconds
    if trigger.force:  # a forced manual run gets its own slot per minute
        slot = int(now.timestamp()) // 60
    digest = hashlib.sha256(f"{trigger.kind}:{slot}:{trigger.force}".encode()).hexdigest()[:8]
    return _NAME_SAFE.sub("-", f"{trigger.kind}-{slot}-{digest}")[:80]


def start_training(
    sfn: Any,
    state_machine_arn: str,
    trigger: Trigger,
    *,
    cooldown: timedelta,
    now: datetime | None = None,
    dataset_version: str = "latest",
) -> dict[str, Any]:
    """Start one training execution unless debounced; returns what happened (JSON-able)."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    running = sfn.list_executions(
        stateMachineArn=state_machine_arn, statusFilter="RUNNING", maxResults=1
    ).get("executions", [])
    if running:
        return _skipped(trigger, "an execution is running", running[0])
    if not trigger.force:
        if trigger.kind == TRIGGER_REVIEWED:
            recent = _recent_of_kind(sfn, state_machine_arn, trigger.kind, now - cooldown)
        else:
            recent = sfn.list_executions(stateMachineArn=state_machine_arn, maxResults=10).get(
                "executions", []
            )
        if recent:
            latest = max(recent, key=lambda e: _as_utc(e["startDate"]))
            if now - _as_utc(latest["startDate"]) < cooldown:
                return _skipped(trigger, f"within the {cooldown} cool-down", latest)
    payload = {
        "trigger": trigger.kind,
        "dataset_version": dataset_version,
        "evidence": trigger.evidence,
        "requested_at": now.isoformat(timespec="seconds"),
    }
    name = execution_name(trigger, now, cooldown)
    try:
        started = sfn.start_execution(
            stateMachineArn=state_machine_arn, name=name, input=json.dumps(payload, default=str)
        )
    except Exception as exc:  # botocore ClientError; keep this module free of botocore
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        if code == "ExecutionAlreadyExists":
            return {"started": False, "trigger": trigger.kind, "reason": "duplicate in slot"}
        raise
    return {
        "started": True,
        "trigger": trigger.kind,
        "execution_arn": started["executionArn"],
        "name": name,
    }


def _recent_of_kind(
    sfn: Any, state_machine_arn: str, kind: str, since: datetime
) -> list[dict[str, Any]]:
    """Executions named by `execution_name` for `kind` that started after `since`."""
    found: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"stateMachineArn": state_machine_arn, "maxResults": 100}
    for _ in range(_MAX_HISTORY_PAGES):  # the newest 1,000 executions cover any cool-down
        page = sfn.list_executions(**kwargs)
        found += [
            e
            for e in page.get("executions", [])
            if str(e.get("name", "")).startswith(f"{kind}-") and _as_utc(e["startDate"]) >= since
        ]
        if not page.get("nextToken"):
            break
        kwargs["nextToken"] = page["nextToken"]
    return found


def _as_utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _skipped(trigger: Trigger, reason: str, execution: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "started": False,
        "trigger": trigger.kind,
        "reason": reason,
        "blocking_execution": execution.get("executionArn"),
        "blocking_status": execution.get("status"),
    }
