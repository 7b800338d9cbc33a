"""The logic behind the two data-prep Glue jobs, shared by Glue, local runs and tests.

The Glue scripts in ``glue_jobs/`` only parse arguments, move bytes and rows with Spark, and
call into this module. Everything that decides what happens to a record lives here (or in
`clinical_ner.data.notes` / `clinical_ner.model.readers`, which this module drives):

validate_notes
    `process_note_object` reads one raw object (bytes) with the core `NoteReader`;
    `select_new_objects` skips objects a previous run already processed (the ledger, our
    equivalent of Glue job bookmarks); `resolve_duplicates` applies the note-id uniqueness
    rule across objects, runs and the already-curated table; `RunSummary` keeps the
    ``in == curated + quarantined`` accounting.

prepare_training_data
    `build_training_dataset` turns annotation files (bytes keyed by object key) into a
    versioned dataset: deterministic JSONL splits, a stable per-document train/dev/test
    assignment and a manifest of counts and content hashes. The dataset version is a hash of
    the content, so the same annotations always give the same version.

Nothing here logs or returns note text except inside the data rows themselves.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from clinical_ner import __version__ as CORE_VERSION
from clinical_ner.data.notes import (
    DEFAULT_MAX_CHARS,
    AccountingError,
    Note,
    NoteReader,
    QuarantinedRecord,
    QuarantineReason,
    ReadSummary,
    discover_files,
)
from clinical_ner.data.review import VALIDATED_EVAL_DIR
from clinical_ner.data.schemas import (
    PARTITION_COLUMN,
    QUARANTINE_SCHEMA,
    TIMESTAMP,
    Column,
    file_schema,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from clinical_ner.model.corpus import AnnotatedDoc

VALIDATE_JOB = "validate_notes"
PREPARE_JOB = "prepare_training_data"

_DT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def check_dt(dt: str) -> str:
    """Validate a ``YYYY-MM-DD`` partition value (a real calendar date)."""
    if not _DT_RE.match(dt):
        raise ValueError(f"dt must be YYYY-MM-DD, got {dt!r}")
    _dt.date.fromisoformat(dt)
    return dt


def utc_today() -> str:
    return _dt.datetime.now(_dt.UTC).date().isoformat()


def partition_prefix(prefix: str, dt: str) -> str:
    """``curated/notes/`` + ``2024-01-31`` -> ``curated/notes/dt=2024-01-31/``."""
    return f"{prefix}{PARTITION_COLUMN}={check_dt(dt)}/"


# =========================================================================== record contracts

CURATED_NOTE_COLUMNS: tuple[Column, ...] = (
    Column("note_id", pa.string(), False, "Identifier of the note; unique across curated/notes."),
    Column(
        "text",
        pa.string(),
        False,
        "The note text exactly as delivered (the raw record's text; a .txt file's UTF-8 BOM "
        "aside), never rewritten: all entity offsets refer to this text; the model reads "
        "clinical_ner.data.notes.model_view of it. PHI.",
    ),
    Column("note_sha256", pa.string(), False, "Hex sha256 of the text as delivered (UTF-8)."),
    Column("source", pa.string(), False, "Object key (relative to the lake root) it came from."),
    Column(
        "locator",
        pa.int32(),
        True,
        "1-based line (.jsonl) or data row (.csv); null for a .txt note (the whole file).",
    ),
    Column("char_count", pa.int32(), False, "Length of the text in characters."),
    Column("word_count", pa.int32(), False, "Whitespace-separated words in the text."),
    Column("run_id", pa.string(), False, "The validate_notes run that admitted the note."),
    Column("ingested_at", TIMESTAMP, False, "When that run started (UTC)."),
    Column(
        PARTITION_COLUMN,
        pa.string(),
        False,
        "Partition: UTC date (YYYY-MM-DD) of the run. Stored in the path only.",
    ),
)

LEDGER_COLUMNS: tuple[Column, ...] = (
    Column("source", pa.string(), False, "Object key relative to the lake root."),
    Column("size_bytes", pa.int64(), False, "Object size when it was processed."),
    Column("modified_at", TIMESTAMP, False, "Object last-modified time when processed."),
    Column("object_sha256", pa.string(), False, "Hex sha256 of the object bytes."),
    Column("run_id", pa.string(), False, "The run that processed it."),
    Column("processed_at", TIMESTAMP, False, "When that run started (UTC)."),
    Column("records_in", pa.int64(), False, "Records read from the object."),
    Column("accepted", pa.int64(), False, "Records accepted by the reader (before dedupe)."),
    Column("quarantined", pa.int64(), False, "Records the reader quarantined."),
)


def _to_schema(table: str, columns: Sequence[Column]) -> pa.Schema:
    return pa.schema(
        [
            pa.field(c.name, c.type, nullable=c.nullable, metadata={"description": c.description})
            for c in columns
        ],
        metadata={"table": table},
    )


CURATED_NOTE_SCHEMA = _to_schema("curated_notes", CURATED_NOTE_COLUMNS)
LEDGER_SCHEMA = _to_schema("validate_notes_ledger", LEDGER_COLUMNS)
CURATED_NOTE_FILE_SCHEMA = file_schema(CURATED_NOTE_SCHEMA)
QUARANTINE_FILE_SCHEMA = file_schema(QUARANTINE_SCHEMA)


def spark_schema(schema: pa.Schema) -> Any:
    """The Spark StructType of an Arrow schema (the subset of types our contracts use)."""
    from pyspark.sql import types as T

    def convert(t: pa.DataType) -> Any:
        if pa.types.is_string(t):
            return T.StringType()
        if pa.types.is_int32(t):
            return T.IntegerType()
        if pa.types.is_int64(t):
            return T.LongType()
        if pa.types.is_float32(t):
            return T.FloatType()
        if pa.types.is_float64(t):
            return T.DoubleType()
        if pa.types.is_boolean(t):
            return T.BooleanType()
        if pa.types.is_timestamp(t):
            return T.TimestampType()
        raise TypeError(f"no Spark type for Arrow type {t}")

    return T.StructType([T.StructField(f.name, convert(f.type), f.nullable) for f in schema])


# =========================================================================== validate_notes


@dataclass(frozen=True)
class ObjectRef:
    """One raw object as listed: its key and the version fingerprint the ledger compares."""

    source: str
    size_bytes: int
    modified_at: _dt.datetime

    @property
    def fingerprint(self) -> tuple[str, int, int]:
        return (self.source, self.size_bytes, _epoch_ms(self.modified_at))


def _epoch_ms(ts: _dt.datetime) -> int:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=_dt.UTC)
    return int(ts.timestamp() * 1000)


def select_new_objects(
    listed: Iterable[ObjectRef], processed: Iterable[tuple[str, int, _dt.datetime]]
) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """Split listed objects into (to_process, already_processed), both sorted by key.

    An object is already processed when the ledger holds the same key, size and modification
    time. Overwriting a key (raw is versioned) changes its modification time, so the new
    version is processed; its notes then compete with the curated ones under the note-id rule.
    """
    seen = {(s, int(n), _epoch_ms(m)) for s, n, m in processed}
    new: list[ObjectRef] = []
    old: list[ObjectRef] = []
    for ref in sorted(listed, key=lambda r: r.source):
        (old if ref.fingerprint in seen else new).append(ref)
    return new, old


@dataclass(frozen=True)
class ObjectResult:
    """What the core reader made of one raw object."""

    source: str
    object_sha256: str
    notes: list[Note]
    quarantined: list[QuarantinedRecord]
    summary: ReadSummary


def process_note_object(
    source: str, data: bytes, *, max_chars: int = DEFAULT_MAX_CHARS, normalise: bool = True
) -> ObjectResult:
    """Read one raw object's bytes with the core `NoteReader` (format chosen by extension).

    Accepted notes keep their text as delivered; `normalise` only decides whether the empty and
    length checks also look at the normalised view (see `data.notes.checked_note_view`).

    The reader works on files, so the bytes are written to a private temporary file that keeps
    the object's base name (a ``.txt`` note id is the file stem); the temporary path is then
    replaced by `source` in every record it produced.
    """
    name = PurePosixPath(source).name or "object"
    with tempfile.TemporaryDirectory(prefix="clinical-ner-obj-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        tmp_source = str(path)
        reader = NoteReader(max_chars=max_chars, normalise=normalise)
        notes: list[Note] = []
        quarantined: list[QuarantinedRecord] = []
        for record in reader.read_file(discover_files(path)[0]):
            if isinstance(record, Note):
                notes.append(replace(record, source=source))
            else:
                quarantined.append(
                    replace(
                        record,
                        source=source,
                        detail=record.detail.replace(tmp_source, source),
                    )
                )
        reader.summary.check()
        return ObjectResult(
            source=source,
            object_sha256=hashlib.sha256(data).hexdigest(),
            notes=notes,
            quarantined=quarantined,
            summary=reader.summary,
        )


@dataclass(frozen=True)
class NoteKey:
    """The text-free part of an accepted note that the duplicate rule needs."""

    note_id: str
    note_sha256: str
    source: str
    locator: int | None

    @property
    def record_key(self) -> tuple[str, int]:
        return (self.source, -1 if self.locator is None else self.locator)


class Decision(StrEnum):
    WRITE = "write"  # a new curated note
    ALREADY_CURATED = "already_curated"  # this very record is in curated already (re-run)


@dataclass(frozen=True)
class Resolution:
    """Outcome of `resolve_duplicates`: record_key -> decision or quarantine record."""

    decisions: dict[tuple[str, int], Decision]
    rejected: dict[tuple[str, int], QuarantinedRecord]


def resolve_duplicates(
    candidates: Iterable[NoteKey], existing: Mapping[str, tuple[str, str]]
) -> Resolution:
    """Apply note-id uniqueness across the run's objects and the curated table.

    `existing` maps a curated note_id to ``(note_sha256, source)``. Candidates are judged in
    (source, locator) order, the same order the core reader uses inside one file; the first
    acceptable occurrence of a note id wins:

    - curated already has the id with the same text from the same object: the record was
      admitted by an earlier (possibly interrupted) run -> ALREADY_CURATED, not written again;
    - same id and same text seen before (curated or earlier in this run) -> DUPLICATE_RECORD;
    - same id, different text -> DUPLICATE_NOTE_ID (curated is append-only; a corrected note
      needs a new id).
    """
    decisions: dict[tuple[str, int], Decision] = {}
    rejected: dict[tuple[str, int], QuarantinedRecord] = {}
    first_in_run: dict[str, NoteKey] = {}
    for cand in sorted(candidates, key=lambda c: c.record_key):
        key = cand.record_key
        if key in decisions or key in rejected:
            raise ValueError(f"record {key} listed twice")
        prior = existing.get(cand.note_id)
        if prior is not None:
            sha, src = prior
            if sha == cand.note_sha256 and src == cand.source:
                decisions[key] = Decision.ALREADY_CURATED
            elif sha == cand.note_sha256:
                rejected[key] = _dup(
                    cand,
                    QuarantineReason.DUPLICATE_RECORD,
                    f"same note_id and identical text already curated from {src}",
                )
            else:
                rejected[key] = _dup(
                    cand,
                    QuarantineReason.DUPLICATE_NOTE_ID,
                    f"note_id already curated from {src} with different text",
                )
            continue
        first = first_in_run.get(cand.note_id)
        if first is not None:
            where = first.source if first.locator is None else f"{first.source}:{first.locator}"
            if first.note_sha256 == cand.note_sha256:
                rejected[key] = _dup(
                    cand,
                    QuarantineReason.DUPLICATE_RECORD,
                    f"same note_id and identical text already accepted from {where}",
                )
            else:
                rejected[key] = _dup(
                    cand,
                    QuarantineReason.DUPLICATE_NOTE_ID,
                    f"note_id already accepted from {where} with different text",
                )
            continue
        first_in_run[cand.note_id] = cand
        decisions[key] = Decision.WRITE
    return Resolution(decisions, rejected)


def _dup(cand: NoteKey, reason: QuarantineReason, detail: str) -> QuarantinedRecord:
    return QuarantinedRecord(cand.source, cand.locator, cand.note_id, reason, detail)


def note_key(note: Note) -> NoteKey:
    return NoteKey(note.note_id, note.content_sha256, note.source, note.locator)


def quarantine_key(rec: QuarantinedRecord) -> tuple[str, int, str]:
    """Identity of a quarantine row, used to keep re-runs from writing it twice."""
    return (rec.source, -1 if rec.locator is None else rec.locator, rec.reason.value)


def curated_row(note: Note, *, run_id: str, ingested_at: _dt.datetime) -> dict[str, Any]:
    """A curated/notes row (file schema: no partition column)."""
    return {
        "note_id": note.note_id,
        "text": note.text,
        "note_sha256": note.content_sha256,
        "source": note.source,
        "locator": note.locator,
        "char_count": note.char_count,
        "word_count": note.word_count,
        "run_id": run_id,
        "ingested_at": ingested_at,
    }


def quarantine_row(rec: QuarantinedRecord, *, quarantined_at: _dt.datetime) -> dict[str, Any]:
    """A quarantine row (file schema of `clinical_ner.data.schemas.QUARANTINE_SCHEMA`)."""
    return {
        "source": rec.source,
        "locator": rec.locator,
        "note_id": rec.note_id,
        "reason": rec.reason.value,
        "detail": rec.detail,
        "quarantined_at": quarantined_at,
    }


def ledger_row(
    ref: ObjectRef,
    *,
    object_sha256: str,
    records_in: int,
    accepted: int,
    quarantined: int,
    run_id: str,
    processed_at: _dt.datetime,
) -> dict[str, Any]:
    """A ledger row: this object version was fully processed by `run_id`."""
    return {
        "source": ref.source,
        "size_bytes": ref.size_bytes,
        "modified_at": ref.modified_at,
        "object_sha256": object_sha256,
        "run_id": run_id,
        "processed_at": processed_at,
        "records_in": records_in,
        "accepted": accepted,
        "quarantined": quarantined,
    }


def as_tuple(row: Mapping[str, Any], schema: pa.Schema) -> tuple[Any, ...]:
    """A row dict in the column order of `schema` (what Spark's createDataFrame wants)."""
    return tuple(row[name] for name in schema.names)


@dataclass
class RunSummary:
    """The JSON report of one validate_notes run. Invariant: in == curated + quarantined."""

    run_id: str
    dt: str
    started_at: str
    objects_listed: int = 0
    objects_skipped: int = 0  # already in the ledger: not read again
    objects_processed: int = 0
    records_in: int = 0
    curated_written: int = 0
    curated_already_present: int = 0  # admitted by an earlier interrupted run
    quarantined_written: int = 0
    quarantined_already_present: int = 0
    quarantined_by_reason: Counter[str] = field(default_factory=Counter)
    finished_at: str | None = None

    @property
    def curated(self) -> int:
        return self.curated_written + self.curated_already_present

    @property
    def quarantined(self) -> int:
        return self.quarantined_written + self.quarantined_already_present

    def check(self) -> None:
        if self.records_in != self.curated + self.quarantined:
            raise AccountingError(
                f"in={self.records_in} != curated={self.curated} + quarantined={self.quarantined}"
            )
        if sum(self.quarantined_by_reason.values()) != self.quarantined:
            raise AccountingError("per-reason quarantine counts do not add up")
        if self.objects_listed != self.objects_skipped + self.objects_processed:
            raise AccountingError("objects listed != skipped + processed")

    def to_dict(self) -> dict[str, Any]:
        self.check()
        return {
            "job": VALIDATE_JOB,
            "core_version": CORE_VERSION,
            "run_id": self.run_id,
            "dt": self.dt,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "objects": {
                "listed": self.objects_listed,
                "skipped_already_processed": self.objects_skipped,
                "processed": self.objects_processed,
            },
            "in": self.records_in,
            "curated": self.curated,
            "quarantined": self.quarantined,
            "curated_written": self.curated_written,
            "curated_already_present": self.curated_already_present,
            "quarantined_written": self.quarantined_written,
            "quarantined_already_present": self.quarantined_already_present,
            "quarantined_by_reason": dict(sorted(self.quarantined_by_reason.items())),
        }


def summarise_run(
    summary: RunSummary,
    results: Iterable[tuple[int, list[tuple[str, int, str]]]],
    resolution: Resolution,
    existing_quarantine: set[tuple[str, int, str]],
) -> set[tuple[str, int, str]]:
    """Fill `summary` from per-object (records_in, reader quarantine keys) and the resolution.

    Returns the quarantine keys that must be written (the rest exist from an earlier run).
    """
    to_write: set[tuple[str, int, str]] = set()
    keys: list[tuple[str, int, str]] = []
    for records_in, q_keys in results:
        summary.records_in += records_in
        keys.extend(q_keys)
    keys.extend(quarantine_key(r) for r in resolution.rejected.values())
    for key in keys:
        summary.quarantined_by_reason[key[2]] += 1
        if key in existing_quarantine:
            summary.quarantined_already_present += 1
        else:
            summary.quarantined_written += 1
            to_write.add(key)
    for decision in resolution.decisions.values():
        if decision is Decision.WRITE:
            summary.curated_written += 1
        else:
            summary.curated_already_present += 1
    return to_write


# =========================================================================== training data

DATASET_FORMAT = "jsonl"
SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class SplitSpec:
    """Stable per-document split: a salted sha256 of the document text picks the split."""

    dev_fraction: float = 0.1
    test_fraction: float = 0.1
    salt: str = "clinical-ner-split-v1"

    def __post_init__(self) -> None:
        if self.dev_fraction < 0 or self.test_fraction < 0:
            raise ValueError("split fractions must be >= 0")
        if self.dev_fraction + self.test_fraction >= 1:
            raise ValueError("dev + test fractions must leave room for train")

    def assign_record(self, text: str, explicit: str = "") -> str:
        """The record's own split when it names one of train/dev/test, else the hash split.

        An annotator's held-out test set stays held out: hashing would move some of its docs
        into train (and some train docs into test)."""
        named = explicit.strip().lower()
        return named if named in SPLITS else self.assign(text)

    def assign(self, text: str) -> str:
        digest = hashlib.sha256(f"{self.salt}\x1f{text}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        if u < self.test_fraction:
            return "test"
        if u < self.test_fraction + self.dev_fraction:
            return "dev"
        return "train"


class AnnotationFileReason(StrEnum):
    """Why an annotation file was left out of a dataset."""

    MALFORMED = "malformed_annotations"  # the core reader rejected it (AnnotationFormatError)
    ORPHAN_LABEL_FILE = "orphan_label_file"  # an X_label without its X_sent
    UNREADABLE = "unreadable_file"
    # Under a `validated_eval` folder: the validated evaluation set is never trained on.
    VALIDATED_EVAL = "validated_eval"


@dataclass(frozen=True)
class RejectedFile:
    source: str
    reason: AnnotationFileReason
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "reason": self.reason.value, "detail": self.detail}


class EmptyDatasetError(ValueError):
    """No annotated document survived reading: there is nothing to train on."""


@dataclass(frozen=True)
class TrainingDataset:
    dataset_version: str
    files: dict[str, bytes]  # file name -> content (train.jsonl, dev.jsonl, test.jsonl)
    manifest: dict[str, Any]
    rejected: list[RejectedFile]

    def manifest_bytes(self) -> bytes:
        return (json.dumps(self.manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")


def doc_id(text: str) -> str:
    """Stable document id: the first 16 hex chars of sha256(text)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def doc_record(doc: AnnotatedDoc, source: str) -> dict[str, Any]:
    """One JSONL line: what a trainer needs to rebuild the doc exactly (tokens + spans)."""
    return {
        "id": doc_id(doc.text),
        "text": doc.text,
        "tokens": [[t.start, t.end] for t in doc.tokens],
        "entities": [[e.start, e.end, e.label] for e in sorted(doc.entities)],
        "source": source,
    }


def _is_label_file(key: str) -> bool:
    return "_label" in PurePosixPath(key).name and "_sent" not in PurePosixPath(key).name


def _sent_partner(label_key: str) -> str:
    p = PurePosixPath(label_key)
    head, _, tail = p.name.rpartition("_label")
    return str(p.with_name(f"{head}_sent{tail}"))


def build_training_dataset(
    files: Mapping[str, bytes],
    *,
    labels: Mapping[str, str] | None = None,
    split: SplitSpec | None = None,
    created_by: str = PREPARE_JOB,
) -> TrainingDataset:
    """Read every annotation file (key -> bytes) with the core readers into a dataset.

    Keys keep their relative layout so ``X_sent``/``X_label`` pairs stay side by side; a pair
    is read through its ``_sent`` file. Each file is first read alone so a malformed one is
    rejected with the reader's message (file and line, never text) instead of failing the
    whole dataset; the good files are then read together so duplicates across files are
    dropped once. The dataset version is ``ds-`` + 16 hex chars of a sha256 over the split
    parameters and each split's training content (text, tokens, entities; not the source
    file names): the same annotations give the same version.
    """
    from clinical_ner.model.readers import (  # lazy: validate_notes must not need this import
        AnnotationFormatError,
        read_annotations,
    )

    split = split or SplitSpec()
    keys = sorted(files)
    rejected: list[RejectedFile] = []
    with tempfile.TemporaryDirectory(prefix="clinical-ner-ann-") as tmp:
        root = Path(tmp)
        paths: dict[str, Path] = {}
        for key in keys:
            rel = PurePosixPath(key)
            if rel.is_absolute() or ".." in rel.parts:
                raise ValueError(f"annotation key {key!r} must be relative")
            path = root.joinpath(*rel.parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(files[key])
            paths[key] = path

        def to_key(text: str) -> str:
            for key, path in paths.items():
                text = text.replace(str(path), key)
            return text.replace(str(root) + os.sep, "")

        readable: list[str] = []
        for key in keys:
            if VALIDATED_EVAL_DIR in PurePosixPath(key).parts:
                rejected.append(
                    RejectedFile(
                        key, AnnotationFileReason.VALIDATED_EVAL, "validated evaluation set"
                    )
                )
                continue
            if _is_label_file(key):
                if _sent_partner(key) not in files:
                    rejected.append(
                        RejectedFile(
                            key,
                            AnnotationFileReason.ORPHAN_LABEL_FILE,
                            f"no {_sent_partner(key)} to pair it with",
                        )
                    )
                continue
            try:
                read_annotations([paths[key]], labels=dict(labels) if labels else None)
            except AnnotationFormatError as exc:
                rejected.append(RejectedFile(key, AnnotationFileReason.MALFORMED, to_key(str(exc))))
                continue
            except (OSError, UnicodeError) as exc:
                rejected.append(
                    RejectedFile(
                        key, AnnotationFileReason.UNREADABLE, f"{type(exc).__name__} while reading"
                    )
                )
                continue
            except (ValueError, RecursionError) as exc:
                # Any other refusal of one file (the readers name the known ones) must reject
                # that file only; the type name is reported, never a message that could quote it.
                rejected.append(
                    RejectedFile(
                        key, AnnotationFileReason.MALFORMED, f"{type(exc).__name__} while reading"
                    )
                )
                continue
            readable.append(key)
        if not readable:
            raise EmptyDatasetError(
                f"no readable annotation file among {len(keys)} object(s); "
                f"rejected: {[r.to_dict() for r in rejected]}"
            )
        docs, report = read_annotations(
            [paths[k] for k in readable], labels=dict(labels) if labels else None
        )
        report_dict = json.loads(to_key(json.dumps(report.as_dict())))
        # (record, the record's own "split" field or "") pairs: the field picks the split only.
        records = [(doc_record(d, to_key(d.source)), d.split) for d in docs]

    if not records:
        raise EmptyDatasetError("the annotation files hold no document")
    by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    explicit: Counter[str] = Counter()
    for rec, own in sorted(records, key=lambda r: (r[0]["id"], r[0]["text"])):
        name = split.assign_record(rec["text"], own)
        explicit["explicit" if own.strip().lower() in SPLITS else "hashed"] += 1
        if own.strip() and own.strip().lower() not in SPLITS:
            explicit["unrecognised"] += 1
        by_split[name].append(rec)
    out_files: dict[str, bytes] = {}
    split_stats: dict[str, Any] = {}
    for name in SPLITS:
        lines = [json.dumps(r, ensure_ascii=False, sort_keys=True) for r in by_split[name]]
        content = ("\n".join(lines) + "\n").encode("utf-8") if lines else b""
        fname = f"{name}.{DATASET_FORMAT}"
        out_files[fname] = content
        labels_count: Counter[str] = Counter(e[2] for r in by_split[name] for e in r["entities"])
        # The version hashes what training sees (text, tokens, entities), not `source`:
        # renaming or re-splitting annotation files does not make a new dataset version.
        training_content = "\n".join(
            json.dumps({k: v for k, v in r.items() if k != "source"}, sort_keys=True)
            for r in by_split[name]
        )
        split_stats[name] = {
            "file": fname,
            "docs": len(by_split[name]),
            "entities": dict(sorted(labels_count.items())),
            "sha256": hashlib.sha256(content).hexdigest(),
            "bytes": len(content),
            "content_sha256": hashlib.sha256(training_content.encode("utf-8")).hexdigest(),
        }
    version_basis = json.dumps(
        {
            "format": DATASET_FORMAT,
            "split": {"dev": split.dev_fraction, "test": split.test_fraction, "salt": split.salt},
            # Which docs each split holds is in its content hash, explicit splits included.
            "content": {n: s["content_sha256"] for n, s in split_stats.items()},
        },
        sort_keys=True,
    )
    version = "ds-" + hashlib.sha256(version_basis.encode()).hexdigest()[:16]
    manifest = {
        "dataset_version": version,
        "format": DATASET_FORMAT,
        "record_fields": {
            "id": "first 16 hex chars of sha256(text)",
            "text": "document text (a sentence for token corpora)",
            "tokens": "[start, end] character offsets of the corpus tokens",
            "entities": "[start, end, label] character spans, end exclusive",
            "source": "annotation object key and line",
        },
        "split": {
            "method": (
                "a record's own split field (train/dev/test) when it has one; otherwise "
                "sha256(salt + text) -> uniform [0,1): < test -> test, < test+dev -> dev"
            ),
            "explicit_docs": explicit["explicit"],
            "hashed_docs": explicit["hashed"],
            "unrecognised_split_values": explicit["unrecognised"],
            "dev_fraction": split.dev_fraction,
            "test_fraction": split.test_fraction,
            "salt": split.salt,
        },
        "splits": split_stats,
        "docs_total": len(records),
        "sources": [
            {
                "key": k,
                "sha256": hashlib.sha256(files[k]).hexdigest(),
                "bytes": len(files[k]),
                "used": k in readable or (_is_label_file(k) and _sent_partner(k) in readable),
            }
            for k in keys
        ],
        "rejected_files": [r.to_dict() for r in rejected],
        "read_report": report_dict,
        "created_by": {"job": created_by, "core_version": CORE_VERSION},
    }
    return TrainingDataset(version, out_files, manifest, rejected)


def training_prefix(curated_training_prefix: str, version: str) -> str:
    if not re.fullmatch(r"ds-[0-9a-f]{16}", version):
        raise ValueError(f"not a dataset version: {version!r}")
    return f"{curated_training_prefix}{version}/"


# =========================================================================== Spark-side I/O


_EMRFS_FOLDER_MARKER = "_$folder$"


class SparkLake:
    """Byte-level access to the lake root through Hadoop's FileSystem (S3 on Glue, local here).

    Spark reads and writes the tables; this writes the small JSON documents (run summaries,
    manifests) and answers existence questions, with the same URI handling everywhere.
    """

    def __init__(self, spark: Any, root: str) -> None:
        sc = spark.sparkContext
        self._jvm = sc._jvm
        conf = sc._jsc.hadoopConfiguration()
        root_path = self._jvm.org.apache.hadoop.fs.Path(root.rstrip("/") or "/")
        self._fs = root_path.getFileSystem(conf)
        self.root = str(self._fs.makeQualified(root_path).toString()).rstrip("/")

    def uri(self, key: str) -> str:
        return f"{self.root}/{key.lstrip('/')}"

    def key(self, uri: str) -> str:
        """Object key relative to the root for a URI Spark reported (e.g. binaryFile's path)."""
        qualified = str(self._fs.makeQualified(self._jvm.org.apache.hadoop.fs.Path(uri)).toString())
        if not qualified.startswith(self.root + "/"):
            raise ValueError(f"{uri} is not under the lake root {self.root}")
        return qualified[len(self.root) + 1 :]

    def _path(self, key: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(self.uri(key))

    def exists(self, key: str) -> bool:
        return bool(self._fs.exists(self._path(key)))

    def has_data_files(self, prefix: str) -> bool:
        """True when a file not hidden by Spark (``_x``/``.x``) exists under `prefix`."""
        if not self.exists(prefix):
            return False
        it = self._fs.listFiles(self._path(prefix), True)
        while it.hasNext():
            name = str(it.next().getPath().getName())
            if not name.startswith(("_", ".")):
                return True
        return False

    def list_objects(self, prefix: str) -> list[ObjectRef]:
        """Every file under `prefix`, recursively, including empty and ``_``/``.`` named ones.

        Spark's file sources skip zero-length and hidden files; listing through the
        FileSystem API instead means such objects are quarantined, never silently ignored.
        """
        if not self.exists(prefix):
            return []
        refs: list[ObjectRef] = []
        it = self._fs.listFiles(self._path(prefix), True)
        while it.hasNext():
            status = it.next()
            if str(status.getPath().getName()).endswith(_EMRFS_FOLDER_MARKER):
                continue  # an EMRFS directory placeholder, not data
            refs.append(
                ObjectRef(
                    self.key(str(status.getPath().toString())),
                    int(status.getLen()),
                    _dt.datetime.fromtimestamp(status.getModificationTime() / 1000, _dt.UTC),
                )
            )
        return sorted(refs, key=lambda r: r.source)

    def write_bytes(self, key: str, data: bytes) -> None:
        out = self._fs.create(self._path(key), True)
        try:
            out.write(bytearray(data))
        finally:
            out.close()

    def read_bytes(self, key: str) -> bytes:
        stream = self._fs.open(self._path(key))
        try:
            return bytes(self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
        finally:
            stream.close()

    def write_json(self, key: str, doc: Mapping[str, Any]) -> None:
        self.write_bytes(key, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8"))
