"""The review loop's domain logic: decisions checked, final annotations, reviews rows, KPIs.

Pure functions over plain data (no AWS, no HTTP): `clinical_ner.pipeline.review_queue` keeps
the queue and `clinical_ner.runtime.review_app` serves the workbench; both call this module
(docs/review.md). Offsets are Python code points into the note as delivered, as in the
`entities` table; the page works in UTF-16 code units and converts (`utf16_to_codepoint`,
`codepoint_to_utf16` are the reference the page's JavaScript is tested against).

PHI: errors name fields, indices, offsets and labels, never note text.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from itertools import pairwise
from typing import Any

from clinical_ner.data.schemas import REVIEW_SCHEMA, file_schema, make_entity_id
from clinical_ner.model.enrichment import EntityDetails

MAX_DECISIONS = 5000
# The folder name of the validated evaluation set (LAKE.validated_eval = raw/validated_eval/);
# data_prep refuses to train on any annotation file under a folder of this name.
VALIDATED_EVAL_DIR = "validated_eval"
MAX_SECONDS_SPENT = 24 * 3600.0
_EVAL_SALT = "clinical-ner-validated-eval-v1"
_SAMPLE_SALT = "clinical-ner-review-sample-v1"
REVIEW_FILE_SCHEMA = file_schema(REVIEW_SCHEMA)


class Decision(StrEnum):
    """What a reviewer did with one span (NOTE_REVIEWED: the one row per submitted note)."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    RELABELLED = "relabelled"
    SPAN_FIXED = "span_fixed"
    ADDED = "added"
    NOTE_REVIEWED = "note_reviewed"


ON_MODEL_ENTITY = (Decision.ACCEPTED, Decision.REJECTED, Decision.RELABELLED, Decision.SPAN_FIXED)


class ReviewInputError(ValueError):
    """A submission breaks the contract; the message names fields/indices, never text."""


@dataclass(frozen=True)
class ReviewEntity:
    """A model entity as the queue keeps it (no text: the note's offsets slice it)."""

    entity_id: str
    start: int
    end: int
    label: str
    confidence: float
    negated: bool = False
    # `EntityDetails.review_summary()`: section, trait names, top codes, DrugBank id, attribute
    # offsets (ids and offsets only: the queue keeps no clinical words).
    details: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {
            "entity_id": self.entity_id,
            "start": self.start,
            "end": self.end,
            "label": self.label,
            "confidence": round(float(self.confidence), 6),
            "negated": self.negated,
        }
        if self.details is not None:
            out["details"] = dict(self.details)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ReviewEntity:
        return cls(
            str(raw["entity_id"]),
            int(raw["start"]),
            int(raw["end"]),
            str(raw["label"]),
            float(raw["confidence"]),
            bool(raw.get("negated", False)),
            raw.get("details") if isinstance(raw.get("details"), dict) else None,
        )


@dataclass(frozen=True)
class DecisionRecord:
    """One checked decision: the model's entity (None for added) and the final span."""

    decision: Decision
    entity: ReviewEntity | None
    start: int | None
    end: int | None
    label: str | None
    entity_id: str


@dataclass(frozen=True)
class CheckedReview:
    """A submission that passed `check_submission`."""

    decisions: tuple[DecisionRecord, ...]
    seconds_spent: float

    def final_spans(self) -> list[tuple[int, int, str]]:
        """The note's final annotation: every decision that keeps or adds a span, sorted."""
        return sorted(
            (d.start, d.end, d.label)  # type: ignore[misc]
            for d in self.decisions
            if d.decision is not Decision.REJECTED and d.label is not None
        )


# --------------------------------------------------------------------------- offsets


def codepoint_to_utf16(text: str, offset: int) -> int:
    """The UTF-16 code-unit offset (JavaScript string index) of code-point `offset`."""
    return offset + sum(1 for ch in text[:offset] if ord(ch) > 0xFFFF)


def utf16_to_codepoint(text: str, offset: int) -> int:
    """The code-point offset of UTF-16 offset `offset`; inside a surrogate pair is an error."""
    units = 0
    for i, ch in enumerate(text):
        if units == offset:
            return i
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > offset:
            raise ReviewInputError(f"UTF-16 offset {offset} falls inside a surrogate pair")
    if units == offset:
        return len(text)
    raise ReviewInputError(f"UTF-16 offset {offset} is beyond the note")


@dataclass(frozen=True)
class QueueNote:
    """What the queue needs of one extracted note: ids, model entities, where its text is."""

    note_id: str
    note_sha256: str
    model_version: str
    entities: tuple[ReviewEntity, ...]
    labels: tuple[str, ...]
    extracted_at: str  # ISO time of the extraction run: orders model versions of one note
    text_ref: Mapping[str, str]  # e.g. {"curated_dt": "2024-01-31"}; never the text


def queue_notes_from_rows(
    entity_rows: Iterable[Mapping[str, Any]],
    note_rows: Iterable[Mapping[str, Any]],
    labels: Sequence[str],
    text_ref: Mapping[str, str] | None = None,
) -> list[QueueNote]:
    """Queue entries from `entities`/`notes` table rows (as written by extraction/publish)."""
    by_note: dict[tuple[str, str], list[ReviewEntity]] = defaultdict(list)
    for r in entity_rows:
        by_note[(r["note_id"], r["model_version"])].append(
            ReviewEntity(
                r["entity_id"],
                int(r["start_char"]),
                int(r["end_char"]),
                r["label"],
                float(r["confidence"]),
                bool(r["negated"]),
                EntityDetails.from_row(r).review_summary() if "section" in r else None,
            )
        )
    out = []
    for n in note_rows:
        key = (n["note_id"], n["model_version"])
        ts = n["inference_time"]
        out.append(
            QueueNote(
                n["note_id"],
                n["note_sha256"],
                n["model_version"],
                tuple(sorted(by_note.get(key, []), key=lambda e: (e.start, e.end, e.label))),
                tuple(sorted(labels)),
                ts.isoformat() if isinstance(ts, datetime) else str(ts),
                dict(text_ref or {}),
            )
        )
    return out


# --------------------------------------------------------------------------- queue policy


def _unit(salt: str, key: str) -> float:
    digest = hashlib.sha256(f"{salt}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_validated_eval(note_sha256: str, fraction: float) -> bool:
    """Whether a note (by text hash, whatever model read it) is in the validated eval set."""
    return _unit(_EVAL_SALT, note_sha256) < fraction


def min_confidence(entities: Sequence[ReviewEntity]) -> float | None:
    return min((e.confidence for e in entities), default=None)


def selected_for_review(
    note_sha256: str,
    entities: Sequence[ReviewEntity],
    *,
    high_confidence_threshold: float,
    high_confidence_sample_rate: float,
) -> bool:
    """Every uncertain (or entity-less) note is queued; confident ones by a stable hash sample."""
    lowest = min_confidence(entities)
    if lowest is None or lowest < high_confidence_threshold:
        return True
    return _unit(_SAMPLE_SALT, note_sha256) < high_confidence_sample_rate


def risk_key(entities: Sequence[ReviewEntity], note_sha256: str) -> str:
    """Sort key, riskiest first: no entity, then lowest confidence (string order = risk order)."""
    lowest = min_confidence(entities)
    head = "0-none" if lowest is None else f"1-{lowest:.6f}"
    return f"{head}#{note_sha256}"


def retrain_due(reviewed_before: int, reviewed_after: int, threshold: int) -> bool:
    """True when the count of trainable reviewed notes crossed a multiple of `threshold`."""
    return reviewed_after // threshold > reviewed_before // threshold


def review_id(note_sha256: str, model_version: str) -> str:
    return hashlib.sha256(f"{note_sha256}\x1f{model_version}".encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- submissions


def _int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ReviewInputError(f"{where} must be an integer")
    return value


def _span(raw: Mapping[str, Any], where: str, text_length: int) -> tuple[int, int]:
    start, end = _int(raw.get("start"), f"{where}.start"), _int(raw.get("end"), f"{where}.end")
    if not 0 <= start < end <= text_length:
        raise ReviewInputError(
            f"{where}: span [{start}, {end}] is empty or outside the note ({text_length} chars)"
        )
    return start, end


def _label(raw: Mapping[str, Any], where: str, labels: frozenset[str]) -> str:
    label = raw.get("label")
    if not isinstance(label, str) or label not in labels:
        raise ReviewInputError(f"{where}.label must be one of {sorted(labels)}")
    return label


def check_submission(
    payload: object,
    *,
    note_id: str,
    note_sha256: str,
    text: str,
    entities: Sequence[ReviewEntity],
    labels: Sequence[str],
) -> CheckedReview:
    """Check a submitted note's decisions against its model entities (see docs/review.md).

    Every model entity gets exactly one of accepted / rejected / relabelled / span_fixed;
    added spans name no entity; spans are code-point offsets into `text`, not blank, and the
    final spans do not overlap (training data must not). Raises `ReviewInputError`.
    """
    if not isinstance(payload, Mapping):
        raise ReviewInputError("the body must be a JSON object")
    raw_decisions = payload.get("decisions")
    if not isinstance(raw_decisions, list):
        raise ReviewInputError("decisions must be a list")
    if len(raw_decisions) > MAX_DECISIONS:
        raise ReviewInputError(f"at most {MAX_DECISIONS} decisions per note")
    seconds = payload.get("seconds_spent")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ReviewInputError("seconds_spent must be a number")
    if not (math.isfinite(seconds) and 0 <= seconds <= MAX_SECONDS_SPENT):
        raise ReviewInputError(f"seconds_spent must be in [0, {MAX_SECONDS_SPENT:.0f}]")
    label_set = frozenset(labels)
    by_id = {e.entity_id: e for e in entities}
    decided: set[str] = set()
    records: list[DecisionRecord] = []
    for i, raw in enumerate(raw_decisions):
        where = f"decisions[{i}]"
        if not isinstance(raw, Mapping):
            raise ReviewInputError(f"{where} must be an object")
        try:
            kind = Decision(raw.get("decision"))
        except ValueError:
            raise ReviewInputError(
                f"{where}.decision must be one of {[d.value for d in Decision][:5]}"
            ) from None
        if kind is Decision.NOTE_REVIEWED:
            raise ReviewInputError(f"{where}.decision note_reviewed is written by the server")
        if kind is Decision.ADDED:
            if raw.get("entity_id") is not None:
                raise ReviewInputError(f"{where}: an added span has no entity_id")
            start, end = _span(raw, where, len(text))
            label = _label(raw, where, label_set)
            new_id = make_entity_id(note_id, note_sha256, start, end, label)
            records.append(DecisionRecord(kind, None, start, end, label, new_id))
            continue
        entity_id = raw.get("entity_id")
        if not isinstance(entity_id, str) or entity_id not in by_id:
            raise ReviewInputError(f"{where}.entity_id is not a model entity of this note")
        if entity_id in decided:
            raise ReviewInputError(f"{where}: entity {entity_id} already has a decision")
        decided.add(entity_id)
        e = by_id[entity_id]
        if kind is Decision.REJECTED:
            records.append(DecisionRecord(kind, e, None, None, None, entity_id))
            continue
        start, end, label = e.start, e.end, e.label
        if kind is Decision.RELABELLED:
            label = _label(raw, where, label_set)
            if label == e.label:
                raise ReviewInputError(f"{where}: relabelled needs a different label")
        elif kind is Decision.SPAN_FIXED:
            start, end = _span(raw, where, len(text))
            label = _label(raw, where, label_set) if "label" in raw else e.label
            if (start, end) == (e.start, e.end):
                raise ReviewInputError(f"{where}: span_fixed needs a different span")
        records.append(DecisionRecord(kind, e, start, end, label, entity_id))
    missing = sorted(set(by_id) - decided)
    if missing:
        raise ReviewInputError(
            f"{len(missing)} model entit{'y has' if len(missing) == 1 else 'ies have'} no "
            f"decision (first: {missing[0]})"
        )
    review = CheckedReview(tuple(records), float(seconds))
    spans = review.final_spans()
    for start, end, _ in spans:
        if not text[start:end].strip():
            raise ReviewInputError(f"span [{start}, {end}] is only whitespace")
    for (s1, e1, _), (s2, e2, _) in pairwise(spans):
        if s2 < e1:
            raise ReviewInputError(f"final spans [{s1}, {e1}] and [{s2}, {e2}] overlap")
    return review


# --------------------------------------------------------------------------- outputs


def annotation_record(
    *, note_id: str, note_sha256: str, model_version: str, text: str, review: CheckedReview
) -> dict[str, Any]:
    """The note's final annotation as doccano JSONL (``text`` + ``label`` spans)."""
    return {
        "text": text,
        "label": [[s, e, lab] for s, e, lab in review.final_spans()],
        "note_id": note_id,
        "note_sha256": note_sha256,
        "model_version": model_version,
        "source": "review",
    }


def annotation_jsonl(record: Mapping[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")


def review_rows(
    *,
    note_id: str,
    note_sha256: str,
    model_version: str,
    reviewer_id: str,
    review: CheckedReview,
    validated_eval: bool,
    reviewed_at: datetime,
) -> list[dict[str, Any]]:
    """Rows of the `reviews` table (file schema: `dt` lives in the path)."""
    rid = review_id(note_sha256, model_version)
    base = {
        "review_id": rid,
        "note_id": note_id,
        "note_sha256": note_sha256,
        "model_version": model_version,
        "reviewer_id": reviewer_id,
        "seconds_spent": review.seconds_spent,
        "validated_eval": validated_eval,
        "reviewed_at": reviewed_at,
    }
    rows = [
        {
            **base,
            "entity_id": None,
            "decision": Decision.NOTE_REVIEWED.value,
            "start_char": None,
            "end_char": None,
            "label": None,
            "model_start_char": None,
            "model_end_char": None,
            "model_label": None,
            "model_confidence": None,
        }
    ]
    for d in review.decisions:
        e = d.entity
        rows.append(
            {
                **base,
                "entity_id": d.entity_id,
                "decision": d.decision.value,
                "start_char": d.start,
                "end_char": d.end,
                "label": d.label,
                "model_start_char": e.start if e else None,
                "model_end_char": e.end if e else None,
                "model_label": e.label if e else None,
                "model_confidence": e.confidence if e else None,
            }
        )
    return rows


# --------------------------------------------------------------------------- KPIs


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def compute_kpis(
    rows: Iterable[Mapping[str, Any]], manual_entry_minutes_per_note: float
) -> list[dict[str, Any]]:
    """KPIs per (dt, model_version) from `reviews` rows (same definitions as the named query).

    precision = accepted / model entities; recall = model entities kept (accepted, relabelled,
    span_fixed) / final entities; recall_exact = accepted / final entities; corrections per 100
    model entities = (rejected + relabelled + span_fixed + added) * 100 / model entities;
    hours saved = notes x manual minutes / 60 - review hours.
    """
    groups: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"seconds": [], "n": defaultdict(int)}
    )
    for r in rows:
        g = groups[(str(r["dt"]), str(r["model_version"]))]
        g["n"][r["decision"]] += 1
        if r["decision"] == Decision.NOTE_REVIEWED.value:
            g["seconds"].append(float(r["seconds_spent"]))
    return [
        kpis_from_counts(dt, version, g["n"], g["seconds"], manual_entry_minutes_per_note)
        for (dt, version), g in sorted(groups.items())
    ]


def decision_counts(review: CheckedReview) -> dict[str, int]:
    """Rows of one submitted note by decision (its `note_reviewed` row included)."""
    counts = {d.value: 0 for d in Decision}
    counts[Decision.NOTE_REVIEWED.value] = 1
    for d in review.decisions:
        counts[d.decision.value] += 1
    return counts


def kpis_from_counts(
    dt: str,
    model_version: str,
    counts: Mapping[str, int],
    seconds: Sequence[float],
    manual_entry_minutes_per_note: float,
) -> dict[str, Any]:
    """The KPI row of one group from its decision counts and per-note seconds."""
    n = defaultdict(int, counts)
    model = sum(n[d.value] for d in ON_MODEL_ENTITY)
    kept = n["accepted"] + n["relabelled"] + n["span_fixed"]
    final = kept + n["added"]
    corrections = n["rejected"] + n["relabelled"] + n["span_fixed"] + n["added"]
    notes = len(seconds)
    review_hours = sum(seconds) / 3600
    return {
        "dt": dt,
        "model_version": model_version,
        "notes_reviewed": notes,
        "model_entities": model,
        "final_entities": final,
        "accepted": n["accepted"],
        "production_precision": _ratio(n["accepted"], model),
        "production_recall": _ratio(kept, final),
        "production_recall_exact": _ratio(n["accepted"], final),
        "corrections_per_100_entities": _ratio(100 * corrections, model),
        "median_review_seconds": statistics.median(seconds) if notes else None,
        "review_hours": review_hours,
        "hours_saved": notes * manual_entry_minutes_per_note / 60 - review_hours,
    }
