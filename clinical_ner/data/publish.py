"""Batch Transform in and out: curated notes -> JSON Lines input; JSON Lines output -> Parquet.

The extraction state machine (AWS) and the local runner do the same three things:

1. `transform_input` turns the curated notes of one validate_notes run into the JSON Lines the
   serving container's ``/invocations`` accepts (``{"note_id", "text"}`` per line).
2. SageMaker Batch Transform (or the local ``serve`` process) answers one JSON object per line:
   ``note_id``, ``model_version``, ``note_sha256`` and ``entities`` (start/end/label/text/
   confidence/negated and the structured details: section, traits, ICD-10-CM codes, drug,
   medication attributes), see `clinical_ner.runtime.serve`.
3. `publish_transform_output` joins the answers with the curated notes and writes the
   ``entities`` and ``notes`` tables with the *same writers and checks* as local extraction
   (`clinical_ner.data.extraction`): an answer whose offsets do not slice its own text, an unknown
   label, a confidence outside [0, 1] or a repeated span fails the run (naming note id and
   offsets, never text).

Labels: the label set is the model's own (`model_labels` reads it from the ``labels`` of the
model's ``metrics.json``/``clinical_ner.json``), never a constant, so a model with a new label
(e.g. SYMPTOM) publishes its rows and every note's ``entity_counts_by_label`` lists it.

Idempotency: the publish run id is a hash of the model version and the sorted (note_id,
note_sha256) pairs of the answered notes, and the partition is the curated run's ``dt``. A
retried or repeated publish of the same notes by the same model writes the same
``part-<run_id>-NNNNN.parquet`` names in the same partition and replaces them (locally by the
extraction writer's commit; on S3 by overwriting the keys and deleting other keys of that run
in that partition), so re-publishing never duplicates rows. Re-dropping a raw file is stopped
earlier too: validate_notes quarantines notes whose id is already curated.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

from clinical_ner.data.extraction import (
    DEFAULT_ROWS_PER_FILE,
    ExtractionJob,
    ExtractionSummary,
    ModelContractError,
    PartWriter,
)
from clinical_ner.data.notes import Note, content_sha256
from clinical_ner.data.schemas import PARTITION_COLUMN, TABLES
from clinical_ner.model.enrichment import EnrichmentFormatError, EntityDetails

PUBLISHED_TABLES = ("entities", "notes")
# Lake prefix (under the lake root) of Batch Transform inputs/outputs, one folder per run.
TRANSFORM_PREFIX = "inference/transform/"
TRANSFORM_INPUT_FILE = "notes.jsonl"
# Batch Transform names its output after the input object, with ".out" appended.
TRANSFORM_OUTPUT_SUFFIX = ".out"


@dataclass(frozen=True)
class AnsweredEntity:
    """An entity of a transform answer (the attributes extraction's checks and rows read)."""

    start: int
    end: int
    label: str
    text: str
    confidence: float
    negated: bool = False
    details: EntityDetails = field(default_factory=EntityDetails)


class TransformOutputError(ModelContractError):
    """The transform output does not answer the curated notes one-to-one and consistently."""


def model_labels(metadata: Mapping[str, object], where: str = "model metadata") -> tuple[str, ...]:
    """The label set of a model from its card or metrics (``{"labels": [...]}``), sorted.

    The one source of labels for consumers of model output that have no loaded model: a
    missing, empty or malformed list is an error, never a fallback to a fixed set.
    """
    raw = metadata.get("labels")
    if not isinstance(raw, list | tuple) or not raw:
        raise ModelContractError(f"{where} has no non-empty 'labels' list")
    if not all(isinstance(label, str) and label.strip() == label and label for label in raw):
        raise ModelContractError(f"{where}: 'labels' must be non-empty strings without padding")
    if len(set(raw)) != len(raw):
        raise ModelContractError(f"{where}: 'labels' repeats a label")
    return tuple(sorted(raw))


def transform_paths(run_id: str) -> dict[str, str]:
    """Lake keys of a run's transform input object and output prefix."""
    base = f"{TRANSFORM_PREFIX}{run_id}/"
    return {
        "input_key": f"{base}input/{TRANSFORM_INPUT_FILE}",
        "output_prefix": f"{base}output/",
        "output_key": f"{base}output/{TRANSFORM_INPUT_FILE}{TRANSFORM_OUTPUT_SUFFIX}",
    }


# --------------------------------------------------------------------------- curated notes


def read_curated_notes(paths: Iterable[Path | str], run_id: str | None = None) -> list[Note]:
    """Notes from curated Parquet files, optionally only those admitted by run `run_id`.

    Sorted by note id so that everything downstream is deterministic.
    """
    notes: list[Note] = []
    for path in paths:
        table = pq.read_table(
            path, columns=["note_id", "text", "note_sha256", "source", "locator", "run_id"]
        )
        for row in table.to_pylist():
            if run_id is not None and row["run_id"] != run_id:
                continue
            if content_sha256(row["text"]) != row["note_sha256"]:
                raise TransformOutputError(
                    f"curated note {row['note_id']!r}: note_sha256 does not match its text"
                )
            notes.append(
                Note(row["note_id"], row["text"], row["source"], row["locator"], row["note_sha256"])
            )
    ids = [n.note_id for n in notes]
    if len(ids) != len(set(ids)):
        raise TransformOutputError("curated notes repeat a note_id within the window")
    return sorted(notes, key=lambda n: n.note_id)


def transform_input(notes: Iterable[Note]) -> Iterator[bytes]:
    """JSON Lines for the serving container, one ``{"note_id", "text"}`` object per line."""
    for note in notes:
        yield (
            json.dumps({"note_id": note.note_id, "text": note.text}, ensure_ascii=False) + "\n"
        ).encode("utf-8")


# --------------------------------------------------------------------------- transform output


def parse_transform_output(lines: Iterable[bytes | str]) -> dict[str, dict[str, object]]:
    """note_id -> answer object, from the container's JSON Lines output (blank lines skipped)."""
    answers: dict[str, dict[str, object]] = {}
    for number, line in enumerate(lines, start=1):
        text = line.decode("utf-8") if isinstance(line, bytes) else line
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TransformOutputError(
                f"transform output line {number}: not JSON ({exc.msg})"
            ) from None
        if isinstance(record, dict) and isinstance(record.get("error"), dict):
            # The server answers a refused JSON Lines record with an error entry (serve.py);
            # curated notes passed the same checks, so this is a contract break, not bad data.
            code = record["error"].get("code")
            raise TransformOutputError(
                f"transform output line {number}: the model refused the record "
                f"({code if isinstance(code, str) else 'no error code'}); curated notes must "
                "pass the server's checks"
            )
        if not isinstance(record, dict) or not isinstance(record.get("note_id"), str):
            raise TransformOutputError(f"transform output line {number}: no note_id")
        if not isinstance(record.get("entities"), list):
            raise TransformOutputError(f"transform output line {number}: no entities list")
        if not isinstance(record.get("model_version"), str):
            raise TransformOutputError(f"transform output line {number}: no model_version")
        note_id = record["note_id"]
        if note_id in answers:
            raise TransformOutputError(f"transform output repeats note_id {note_id!r}")
        answers[note_id] = record
    return answers


def _entities(note: Note, answer: Mapping[str, object]) -> list[AnsweredEntity]:
    if answer.get("note_sha256") not in (None, note.content_sha256):
        raise TransformOutputError(
            f"note_id={note.note_id!r}: the answer is for another text (note_sha256 differs)"
        )
    result = []
    for i, e in enumerate(answer["entities"]):  # type: ignore[union-attr]
        try:
            start, end, label = int(e["start"]), int(e["end"]), str(e["label"])
            text, confidence = str(e["text"]), float(e["confidence"])
        except (KeyError, TypeError, ValueError):
            raise TransformOutputError(
                f"note_id={note.note_id!r}: entity {i} lacks start/end/label/text/confidence"
            ) from None
        try:
            details = EntityDetails.from_json(e, note.text, f"note_id={note.note_id!r} entity {i}")
        except EnrichmentFormatError as exc:
            raise TransformOutputError(str(exc)) from None
        negated = bool(e.get("negated", False))
        # An answer of a model served before traits existed has `negated` and no `traits`.
        if "traits" in e and negated != details.has("negated"):
            raise TransformOutputError(
                f"note_id={note.note_id!r}: entity {i}: negated disagrees with its traits"
            )
        result.append(AnsweredEntity(start, end, label, text, confidence, negated, details))
    return result


class _Answers:
    """A `Predictor` that replays transform answers in the order the notes are processed."""

    def __init__(
        self, version: str, labels: Sequence[str], per_text: list[list[AnsweredEntity]]
    ) -> None:
        self._version = version
        self._labels = list(labels)
        self._queue = iter(per_text)

    @property
    def version(self) -> str:
        return self._version

    @property
    def labels(self) -> Sequence[str]:
        return self._labels

    def predict(self, texts: Iterable[str], batch_size: int = 64) -> Iterator[list[AnsweredEntity]]:
        for _ in texts:
            yield next(self._queue)


@dataclass
class PublishResult:
    run_id: str
    dt: str
    model_version: str
    summary: ExtractionSummary
    files: dict[str, list[Path]]  # table -> written files (relative to the output dir)

    def as_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "dt": self.dt,
            "model_version": self.model_version,
            "notes": self.summary.processed,
            "entities": self.summary.entities,
            "entities_by_label": dict(sorted(self.summary.entities_by_label.items())),
            "words": self.summary.words,
            "files": {t: [p.as_posix() for p in ps] for t, ps in self.files.items()},
        }


def publish_run_id(notes: Sequence[Note], model_version: str) -> str:
    h = hashlib.sha256(f"publish\nmodel_version={model_version}\n".encode())
    for note in sorted(notes, key=lambda n: n.note_id):
        h.update(f"{note.note_id}\0{note.content_sha256}\n".encode())
    return h.hexdigest()[:16]


def publish_transform_output(
    notes: Sequence[Note],
    answers: Mapping[str, Mapping[str, object]],
    output_dir: Path | str,
    *,
    dt: str,
    labels: Sequence[str],
    now: datetime | None = None,
    rows_per_file: int = DEFAULT_ROWS_PER_FILE,
) -> PublishResult:
    """Write the entities/notes tables of `notes` answered by `answers` (see module doc).

    Every note must have exactly one answer and every answer a note; all answers must carry
    the same model version. `labels` is the answering model's label set (`model_labels`): an
    answered label outside it fails the run, and every note counts each of them.
    """
    if not notes:
        raise ValueError("no notes to publish")
    if isinstance(labels, str) or not labels:
        raise ValueError("labels must be the model's non-empty label set")
    now = (now or datetime.now(UTC)).astimezone(UTC)
    by_id = {n.note_id: n for n in notes}
    missing = sorted(set(by_id) - set(answers))
    extra = sorted(set(answers) - set(by_id))
    if missing or extra:
        raise TransformOutputError(
            f"transform output does not match the curated notes: {len(missing)} note(s) "
            f"without an answer (first: {missing[:3]}), {len(extra)} answer(s) for unknown "
            f"notes (first: {extra[:3]})"
        )
    versions = {str(a["model_version"]) for a in answers.values()}
    if len(versions) != 1:
        raise TransformOutputError(f"answers come from several model versions: {sorted(versions)}")
    model_version = versions.pop()
    ordered = sorted(notes, key=lambda n: n.note_id)
    per_note = [_entities(n, answers[n.note_id]) for n in ordered]
    model = _Answers(model_version, labels, per_note)

    run_id = publish_run_id(ordered, model_version)
    out = Path(output_dir)
    summary = ExtractionSummary(
        run_id=run_id, model_version=model_version, dt=dt, inference_time=now
    )
    writers = {
        name: PartWriter(out, name, TABLES[name], run_id, dt, rows_per_file)
        for name in PUBLISHED_TABLES
    }
    for writer in writers.values():
        writer.remove_stale_tmp()
    job = ExtractionJob(model, summary, writers, len(ordered), now)
    try:
        job.process(ordered)
        for writer in writers.values():
            writer.flush(force=True)
        summary.records_in = len(ordered)
        summary.check()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    files = {name: [p.relative_to(out) for p in w.commit()] for name, w in writers.items()}
    return PublishResult(run_id, dt, model_version, summary, files)


def partition_of(relative: Path) -> str:
    """``entities/dt=2024-01-31/part-...`` -> ``2024-01-31``."""
    for part in relative.parts:
        if part.startswith(f"{PARTITION_COLUMN}="):
            return part.split("=", 1)[1]
    raise ValueError(f"{relative} is not under a {PARTITION_COLUMN}= partition")
