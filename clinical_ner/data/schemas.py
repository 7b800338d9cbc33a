"""The record contracts of the extraction tables (entities, notes, quarantine), defined once.

Every writer (local CLI, Glue, Batch Transform post-processing) builds its Parquet from these
schemas and every reader (Athena, DuckDB, pandas, the monitor) can rely on them. Column
descriptions live next to the types (as Arrow field metadata too) so `docs/data-contracts.md`
and Glue table comments can be generated from the same source.

`dt` is the Hive partition column: it is part of each table's logical schema (what Athena and
DuckDB show) but is stored in the directory name (``dt=YYYY-MM-DD/``), not inside the Parquet
files, because Athena/Glue reject a partition key that is also a data column. Use
`file_schema()` for what goes into a file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pyarrow as pa

from clinical_ner.model.medication import ATTRIBUTE_TYPES

PARTITION_COLUMN = "dt"
TIMESTAMP = pa.timestamp("us", tz="UTC")
ENTITY_ID_HEX_CHARS = 16


@dataclass(frozen=True)
class Column:
    """One column of a record contract."""

    name: str
    type: pa.DataType
    nullable: bool
    description: str


def _schema(table: str, columns: list[Column]) -> pa.Schema:
    return pa.schema(
        [
            pa.field(c.name, c.type, nullable=c.nullable, metadata={"description": c.description})
            for c in columns
        ],
        metadata={"table": table},
    )


_DT = Column(
    PARTITION_COLUMN,
    pa.string(),
    False,
    "Partition: UTC date (YYYY-MM-DD) of the run that wrote the row. Stored in the path only.",
)
_NOTE_SHA = Column(
    "note_sha256",
    pa.string(),
    False,
    "Hex sha256 of the note text as delivered (never rewritten), UTF-8; identifies the exact "
    "text the offsets refer to.",
)
_SOURCE = Column(
    "source",
    pa.string(),
    False,
    "Input file the record came from (path or object key as given to the run).",
)
_MODEL_VERSION = Column(
    "model_version", pa.string(), False, "Version of the NER model that produced the row."
)
_INFERENCE_TIME = Column(
    "inference_time",
    TIMESTAMP,
    False,
    "When the extraction run started (UTC, microseconds); one value per run.",
)

_TRAIT_TRIGGER = pa.struct(
    [
        pa.field("trait", pa.string()),
        pa.field("trigger", pa.string()),
        pa.field("start_char", pa.int32()),
        pa.field("end_char", pa.int32()),
        pa.field("source", pa.string()),
    ]
)
_CODE_CANDIDATE = pa.struct(
    [
        pa.field("code", pa.string()),
        pa.field("description", pa.string()),
        pa.field("score", pa.float32()),
    ]
)
_ATTRIBUTE = pa.struct(
    [
        pa.field("type", pa.string()),
        pa.field("text", pa.string()),
        pa.field("start_char", pa.int32()),
        pa.field("end_char", pa.int32()),
    ]
)

ENTITY_COLUMNS: tuple[Column, ...] = (
    Column("note_id", pa.string(), False, "Identifier of the note the entity was found in."),
    Column(
        "entity_id",
        pa.string(),
        False,
        "Deterministic id: first 16 hex chars of sha256(note_id, note_sha256, start_char, "
        "end_char, label). Same note text + same span + same label -> same id on every re-run; "
        "unique per (entity_id, model_version).",
    ),
    Column(
        "label",
        pa.string(),
        False,
        "Entity type: one of the producing model's labels (from its metadata), e.g. "
        "DISEASE, SYMPTOM, TREATMENT.",
    ),
    Column(
        "text",
        pa.string(),
        False,
        "The mention exactly as in the note: stored_note_text[start_char:end_char]. PHI.",
    ),
    Column(
        "start_char",
        pa.int32(),
        False,
        "Start offset (inclusive, Python str index = Unicode code points) in the stored text.",
    ),
    Column("end_char", pa.int32(), False, "End offset (exclusive) in the stored note text."),
    Column(
        "confidence",
        pa.float32(),
        False,
        "Model confidence in [0, 1] that this span has this label.",
    ),
    Column(
        "negated",
        pa.bool_(),
        False,
        "True when the mention is negated in its clause (NegEx rules), e.g. 'no evidence of X'.",
    ),
    Column(
        "historical",
        pa.bool_(),
        False,
        "True when the mention is in the patient's past ('history of', 'status post', a past "
        "medical/surgical history section).",
    ),
    Column(
        "hypothetical",
        pa.bool_(),
        False,
        "True when the mention is conditional or a possibility ('if', 'return if', 'risks of').",
    ),
    Column(
        "family",
        pa.bool_(),
        False,
        "True when the mention is about someone else, e.g. a relative ('mother had', family "
        "history section).",
    ),
    Column(
        "uncertain",
        pa.bool_(),
        False,
        "True when the writer is not sure ('possible', 'rule out', 'suspicious for').",
    ),
    Column(
        "trait_triggers",
        pa.list_(_TRAIT_TRIGGER),
        False,
        "Why each true trait is true: trait name, the trigger words (or section header) as in "
        "the note, their offsets, and source (rule or section). PHI (note words).",
    ),
    Column(
        "section",
        pa.string(),
        True,
        "Canonical section of the note the mention is in (e.g. past_medical_history, "
        "family_history, medications); null before the first section header.",
    ),
    Column(
        "icd10cm_code",
        pa.string(),
        True,
        "Top ICD-10-CM candidate (DISEASE and SYMPTOM mentions), e.g. I25.10; null otherwise.",
    ),
    Column("icd10cm_description", pa.string(), True, "Tabular-list description of the top code."),
    Column(
        "icd10cm_score",
        pa.float32(),
        True,
        "Linker similarity of the top code in [0, 1] (not a probability).",
    ),
    Column(
        "icd10cm_chapter",
        pa.string(),
        True,
        "ICD-10-CM chapter of the top code, e.g. 'IX Diseases of the circulatory system "
        "(I00-I99)'.",
    ),
    Column(
        "icd10cm_candidates",
        pa.list_(_CODE_CANDIDATE),
        False,
        "Up to 5 ranked ICD-10-CM candidates (code, description, score), best first; empty for "
        "mentions that are not coded.",
    ),
    Column(
        "drug_name",
        pa.string(),
        True,
        "Normalised drug name of a TREATMENT mention that names a drug (brand -> generic); null "
        "otherwise.",
    ),
    Column("drug_mesh_id", pa.string(), True, "MeSH identifier of the drug, when known."),
    Column("drug_drugbank_id", pa.string(), True, "DrugBank identifier of the drug, when known."),
    Column("drug_nhs_url", pa.string(), True, "NHS medicines page of the drug, when known."),
    Column(
        "attributes",
        pa.list_(_ATTRIBUTE),
        False,
        "Medication attributes linked to a TREATMENT mention (type as Comprehend Medical: "
        "DOSAGE, STRENGTH, ROUTE_OR_MODE, FREQUENCY, DURATION, FORM, RATE), with text and "
        "offsets into the note. PHI (note words).",
    ),
    *(
        Column(
            kind.lower(),
            pa.string(),
            True,
            f"The {kind} attribute text(s) of the mention, '; '-joined; null when none.",
        )
        for kind in ATTRIBUTE_TYPES
    ),
    _MODEL_VERSION,
    _INFERENCE_TIME,
    _DT,
    _SOURCE,
    _NOTE_SHA,
)

NOTE_COLUMNS: tuple[Column, ...] = (
    Column("note_id", pa.string(), False, "Identifier of the note (unique within a run)."),
    _NOTE_SHA,
    _SOURCE,
    Column("char_count", pa.int32(), False, "Length of the stored note text in characters."),
    Column("word_count", pa.int32(), False, "Whitespace-separated words in the stored text."),
    Column("entity_count", pa.int32(), False, "Entities extracted from the note (may be 0)."),
    Column(
        "entity_counts_by_label",
        pa.string(),
        False,
        "Compact JSON object label -> count, keys sorted, every label of the producing "
        'model present (from its metadata), e.g. {"DISEASE":2,"SYMPTOM":1,"TREATMENT":0}. '
        "A JSON string because Athena (json_extract_scalar) and DuckDB (->>) both read it "
        "without a map type, and a new label needs no schema change.",
    ),
    Column(
        "mean_confidence",
        pa.float32(),
        True,
        "Mean entity confidence in the note; null when the note has no entity.",
    ),
    _MODEL_VERSION,
    Column("status", pa.string(), False, 'Processing status; "processed" for every row.'),
    _INFERENCE_TIME,
    _DT,
)

QUARANTINE_COLUMNS: tuple[Column, ...] = (
    _SOURCE,
    Column(
        "locator",
        pa.int32(),
        True,
        "1-based line number (.jsonl) or data row number (.csv, header excluded); null when "
        "the record is the whole file (.txt, or a file rejected as a whole).",
    ),
    Column(
        "note_id",
        pa.string(),
        True,
        "The record's note id when it was readable and valid; null otherwise.",
    ),
    Column(
        "reason",
        pa.string(),
        False,
        "Machine-readable reason code (clinical_ner.data.notes.QuarantineReason).",
    ),
    Column(
        "detail",
        pa.string(),
        False,
        "Human-readable explanation. Never contains note text.",
    ),
    Column("quarantined_at", TIMESTAMP, False, "When the run quarantined the record (UTC)."),
    _DT,
)

ENTITY_SCHEMA = _schema("entities", list(ENTITY_COLUMNS))
NOTE_SCHEMA = _schema("notes", list(NOTE_COLUMNS))
QUARANTINE_SCHEMA = _schema("quarantine", list(QUARANTINE_COLUMNS))

TABLES: dict[str, pa.Schema] = {
    "entities": ENTITY_SCHEMA,
    "notes": NOTE_SCHEMA,
    "quarantine": QUARANTINE_SCHEMA,
}

NOTE_STATUS_PROCESSED = "processed"

# The validation team's decisions (docs/review.md); not in TABLES: extraction never writes it.
REVIEW_COLUMNS: tuple[Column, ...] = (
    Column(
        "review_id",
        pa.string(),
        False,
        "One submitted review of one note: 16 hex chars of sha256(note_sha256, model_version).",
    ),
    Column("note_id", pa.string(), False, "Identifier of the reviewed note."),
    _NOTE_SHA,
    Column(
        "entity_id",
        pa.string(),
        True,
        "The model entity decided on (entities.entity_id); for `added` the id of the new "
        "span; null for the `note_reviewed` row.",
    ),
    Column(
        "decision",
        pa.string(),
        False,
        "accepted / rejected / relabelled / span_fixed / added, or note_reviewed (one row "
        "per submitted note, carrying the time spent).",
    ),
    Column("start_char", pa.int32(), True, "Final start offset (code points); null if none."),
    Column("end_char", pa.int32(), True, "Final end offset (exclusive); null if none."),
    Column("label", pa.string(), True, "Final label; null for rejected and note_reviewed."),
    Column("model_start_char", pa.int32(), True, "The model's start offset; null for added."),
    Column("model_end_char", pa.int32(), True, "The model's end offset; null for added."),
    Column("model_label", pa.string(), True, "The model's label; null for added."),
    Column("model_confidence", pa.float32(), True, "The model's confidence; null for added."),
    _MODEL_VERSION,
    Column(
        "reviewer_id",
        pa.string(),
        False,
        "Who reviewed: the Cognito `sub` of the reviewer (in AWS), the local reviewer name.",
    ),
    Column("seconds_spent", pa.float64(), False, "Seconds the reviewer spent on the note."),
    Column(
        "validated_eval",
        pa.bool_(),
        False,
        "True when the note is in the validated evaluation set (never trained on).",
    ),
    Column("reviewed_at", TIMESTAMP, False, "When the review was submitted (UTC)."),
    _DT,
)
REVIEW_SCHEMA = _schema("reviews", list(REVIEW_COLUMNS))


def describe(schema: pa.Schema) -> dict[str, str]:
    """Column name -> description, in column order (for docs and Glue column comments)."""
    return {f.name: (f.metadata or {}).get(b"description", b"").decode() for f in schema}


def file_schema(schema: pa.Schema) -> pa.Schema:
    """The schema of one Parquet file of a table: the logical schema minus the partition."""
    return schema.remove(schema.get_field_index(PARTITION_COLUMN))


def make_entity_id(note_id: str, note_sha256: str, start: int, end: int, label: str) -> str:
    """Deterministic entity id; the unit separator keeps field boundaries unambiguous."""
    key = "\x1f".join((note_id, note_sha256, str(start), str(end), label))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:ENTITY_ID_HEX_CHARS]
