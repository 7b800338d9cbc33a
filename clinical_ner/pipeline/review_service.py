"""The review loop's operations (queue + data + policy), called by the app and the publish step.

`ReviewService.submit` is the one path from a reviewer's decisions to data: check the lease
(nothing written if it is not held), check the decisions against the note (nothing written
if they break the contract), lock the task against a newer extraction (stale submits are
refused), write the `reviews` rows and the final annotation under keys fixed per task (a
retried submit overwrites, never duplicates), then mark the task done. Notes in the validated
evaluation slice go to ``raw/validated_eval/``, outside what training reads. After a submit,
the running day's KPIs go to `publish_metrics` (CloudWatch) and a crossed retraining threshold
calls `on_retrain_due` (the retraining trigger); neither can undo or fail a written review.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from clinical_ner.data.notes import Note
from clinical_ner.data.review import (
    CheckedReview,
    QueueNote,
    ReviewEntity,
    annotation_jsonl,
    annotation_record,
    check_submission,
    compute_kpis,
    decision_counts,
    kpis_from_counts,
    retrain_due,
    review_id,
    review_rows,
)
from clinical_ner.data.schemas import PARTITION_COLUMN, make_entity_id
from clinical_ner.model.enrichment import EntityDetails
from clinical_ner.pipeline.review_queue import ALL_VERSIONS, QueueError, ReviewQueue
from clinical_ner.pipeline.review_store import NoteTexts, ObjectStore, parquet_bytes
from clinical_ner.pipeline.review_store import read_review_rows as _read_rows
from clinical_ner.pipeline.stage_config import LAKE, LakeLayout, ReviewSettings

log = logging.getLogger(__name__)


class TextUnavailable(QueueError):
    """The note's curated text cannot be found (expired or moved); nothing is served."""

    status = 503


def queue_notes_from_answers(
    notes: Sequence[Note],
    answers: Mapping[str, Mapping[str, Any]],
    labels: Sequence[str],
    *,
    curated_dt: str,
    extracted_at: datetime,
) -> list[QueueNote]:
    """Queue entries of one publish run (the publish step's own notes and answers)."""
    out = []
    for note in notes:
        answer = answers[note.note_id]
        entities = tuple(
            sorted(
                (
                    ReviewEntity(
                        make_entity_id(
                            note.note_id,
                            note.content_sha256,
                            int(e["start"]),
                            int(e["end"]),
                            str(e["label"]),
                        ),
                        int(e["start"]),
                        int(e["end"]),
                        str(e["label"]),
                        float(e["confidence"]),
                        bool(e.get("negated", False)),
                        EntityDetails.from_json(
                            e, note.text, f"note_id={note.note_id!r}"
                        ).review_summary()
                        if "traits" in e
                        else None,
                    )
                    for e in answer["entities"]  # type: ignore[union-attr]
                ),
                key=lambda e: (e.start, e.end, e.label),
            )
        )
        out.append(
            QueueNote(
                note.note_id,
                note.content_sha256,
                str(answer["model_version"]),
                entities,
                tuple(sorted(labels)),
                extracted_at.astimezone(UTC).isoformat(),
                {"curated_dt": curated_dt},
            )
        )
    return out


def enqueue_notes(
    queue: ReviewQueue, notes: Iterable[QueueNote], settings: ReviewSettings
) -> dict[str, int]:
    """Queue every note of a run (idempotent); counts by outcome, for the step's log line."""
    counts: Counter[str] = Counter()
    for note in notes:
        counts[
            queue.enqueue(
                note,
                high_confidence_threshold=settings.high_confidence_threshold,
                high_confidence_sample_rate=settings.high_confidence_sample_rate,
                validated_eval_fraction=settings.validated_eval_fraction,
            )
        ] += 1
    return dict(sorted(counts.items()))


@dataclass
class ReviewService:
    """What the workbench API does, over a queue, a lake store and a text lookup."""

    queue: ReviewQueue
    store: ObjectStore
    texts: NoteTexts
    settings: ReviewSettings = field(default_factory=ReviewSettings)
    layout: LakeLayout = LAKE
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    on_retrain_due: Callable[[int], None] | None = None  # trainable reviewed notes so far
    # PutMetricData entries of the running day's KPIs (the runtime sends them to CloudWatch)
    publish_metrics: Callable[[list[dict[str, Any]]], None] | None = None
    stage: str = "dev"  # the metrics' Stage dimension

    def queue_view(self, reviewer_id: str, limit: int = 50) -> dict[str, Any]:
        now = self.queue.clock()
        items = []
        for t in self.queue.open_tasks(limit):
            held = t["status"] != "pending" and float(t.get("lease_expires", 0)) >= now
            items.append(
                {
                    "task_id": t["task_id"],
                    "note_id": t["note_id"],
                    "model_version": t["model_version"],
                    "entity_count": int(t["entity_count"]),
                    "held": held,
                    "held_by_me": held and t.get("lease_owner") == reviewer_id,
                }
            )
        return {"items": items, "progress": self.queue.progress()}

    def claim(self, reviewer_id: str, task_id: str | None = None) -> dict[str, Any]:
        lease = self.queue.claim(reviewer_id, task_id)
        return {
            "task_id": lease.task_id,
            "lease_token": lease.token,
            "lease_expires": lease.expires_at,
        }

    def release(self, reviewer_id: str, task_id: str, token: str) -> None:
        self.queue.release(task_id, reviewer_id, token)

    def _text(self, task: Mapping[str, Any]) -> str:
        text = self.texts.get(task["note_id"], task["note_sha256"], task["text_ref"])
        if text is None:
            raise TextUnavailable("the note's text is not available any more")
        return text

    def note(self, reviewer_id: str, task_id: str, token: str) -> dict[str, Any]:
        """Text and entities of a note, for the lease holder only."""
        task = self.queue.holder_check(task_id, reviewer_id, token)
        return {
            "task_id": task_id,
            "note_id": task["note_id"],
            "note_sha256": task["note_sha256"],
            "model_version": task["model_version"],
            "labels": task["labels"],
            "text": self._text(task),
            "entities": [e.as_dict() for e in task["entities"]],
            "lease_expires": float(task["lease_expires"]),
        }

    def submit(self, reviewer_id: str, task_id: str, token: str, payload: object) -> dict[str, Any]:
        task = self.queue.holder_check(task_id, reviewer_id, token)
        text = self._text(task)
        review = check_submission(
            payload,
            note_id=task["note_id"],
            note_sha256=task["note_sha256"],
            text=text,
            entities=task["entities"],
            labels=task["labels"],
        )
        now = self.now()
        locked = self.queue.begin_submit(task_id, reviewer_id, token, now.date().isoformat())
        sha, version = task["note_sha256"], task["model_version"]
        evaluation = bool(task["validated_eval"])
        rid = review_id(sha, version)
        try:
            rows = review_rows(
                note_id=task["note_id"],
                note_sha256=sha,
                model_version=version,
                reviewer_id=reviewer_id,
                review=review,
                validated_eval=evaluation,
                reviewed_at=now,
            )
            dt = locked["review_dt"]
            self.store.put(
                f"{self.layout.reviews}{PARTITION_COLUMN}={dt}/part-{rid}.parquet",
                parquet_bytes(rows),
            )
            record = annotation_record(
                note_id=task["note_id"],
                note_sha256=sha,
                model_version=version,
                text=text,
                review=review,
            )
            prefix = self.layout.validated_eval if evaluation else self.layout.reviewed_annotations
            # Keyed by text: a later review of the same note replaces the earlier annotation.
            self.store.put(f"{prefix}{sha}.jsonl", annotation_jsonl(record))
        except BaseException:
            self.queue.abort_submit(task_id, token)
            raise
        counters = self.queue.finish_submit(task_id, reviewer_id, token, trainable=not evaluation)
        due = not evaluation and retrain_due(
            counters["trainable"] - 1,
            counters["trainable"],
            self.settings.retrain_after_reviewed_notes,
        )
        if self.publish_metrics is not None:
            self._publish_kpis(locked["review_dt"], version, review, now)
        if due and self.on_retrain_due is not None:
            try:
                self.on_retrain_due(counters["trainable"])
            except Exception as exc:  # the review is written; the next crossing retries
                log.error("retraining trigger failed", extra={"error_type": type(exc).__name__})
        log.info(
            "review submitted",
            extra={"review_id": rid, "decisions": len(review.decisions), "eval": evaluation},
        )
        return {
            "review_id": rid,
            "decisions": len(review.decisions),
            "validated_eval": evaluation,
            "retrain_due": due,
            "progress": self.queue.progress(),
        }

    def _publish_kpis(self, dt: str, version: str, review: CheckedReview, now: datetime) -> None:
        """The day's KPIs (this version and all versions) after one submit; never raises."""
        from clinical_ner.pipeline.monitoring import review_metric_data

        assert self.publish_metrics is not None
        minutes = self.settings.manual_entry_minutes_per_note
        try:
            day = self.queue.add_kpi_counts(
                dt, version, decision_counts(review), review.seconds_spent
            )
            kpis = {v: kpis_from_counts(dt, v, c, secs, minutes) for v, (c, secs) in day.items()}
            self.publish_metrics(
                review_metric_data(self.stage, version, kpis[version], kpis[ALL_VERSIONS], now)
            )
        except Exception as exc:  # metrics are best effort; the reviews table is the record
            log.error("review metrics failed", extra={"error_type": type(exc).__name__})

    def kpis(self) -> list[dict[str, Any]]:
        return compute_kpis(
            _read_rows(self.store, self.layout), self.settings.manual_entry_minutes_per_note
        )
