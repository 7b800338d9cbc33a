"""Batch extraction: notes in, partitioned entity/note/quarantine Parquet and a run summary out.

Output layout under ``output_dir``::

    entities/dt=YYYY-MM-DD/part-<run_id>-00000.parquet
    notes/dt=YYYY-MM-DD/part-<run_id>-00000.parquet
    quarantine/dt=YYYY-MM-DD/part-<run_id>-00000.parquet
    summary.json

Idempotency is keyed on content, never on paths: ``run_id`` hashes the model version and
the multiset of `clinical_ner.data.notes.record_key`s of the input (``(note_id, note_sha256)`` per
accepted note; reason and raw-bytes sha256 per quarantined record), so the same notes read
through ``notes``, ``$PWD/notes``, a symlinked directory or renamed ``.jsonl``/``.csv`` files
get the same run id. It is computed by a first, read-only pass over the input (no inference);
the extracting pass recomputes it and refuses to publish (`InputChangedError`) when the input
changed in between. A run writes its files under hidden ``_tmp-`` names (ignored by Athena,
Spark, pyarrow and DuckDB globs on ``part-*``), and only after the accounting invariant has
been checked deletes every earlier ``part-<run_id>-*`` file of that run in any ``dt=``
partition and renames its own into place. Re-running the same content therefore replaces rows
instead of duplicating them, even on another day; a different model version, or different
content, is a different run and adds rows (tell them apart by ``model_version``, or
deduplicate by ``note_id``/``note_sha256`` in the query layer). Every run writes at least one
file per table (possibly empty) so all three tables always exist with their schema.
``summary.json`` describes the latest run written into the directory.

Preconditions are checked before any input is read or any inference runs: the output
directory must be creatable and writable (`prepare_output_dir`), and callers loading a model
directory check `model_metadata_problem` (a raw spaCy ``model-best`` has no calibration).

The model is anything with the `NerModel` interface (`clinical_ner.model.inference`); its output is
checked, not trusted: a span that does not slice to its own text, an unknown label, a
confidence outside [0, 1], a repeated span or a wrong number of results raises
`ModelContractError` naming the note id and offsets, never the text.

Offsets index the note as delivered. The model reads each note's normalised view
(`clinical_ner.data.notes.model_view`: line ends, control characters, NFC; the MTSamples comma
repair only with ``mtsamples_repair=True``), and the entities it finds there are mapped back
onto the delivered text, so every entity row has ``text == note[start_char:end_char]`` and
``note_sha256`` is the sha256 of the delivered text.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from clinical_ner.data.notes import (
    DEFAULT_MAX_CHARS,
    AccountingError,
    Note,
    NoteReader,
    NoteView,
    PathInput,
    QuarantinedRecord,
    discover_files,
    model_view,
    record_key,
)
from clinical_ner.data.schemas import (
    NOTE_STATUS_PROCESSED,
    PARTITION_COLUMN,
    TABLES,
    file_schema,
    make_entity_id,
)

if TYPE_CHECKING:  # spaCy stays out of runtimes that only write tables (publish Lambda)
    from clinical_ner.model.inference import PredictedEntity

DEFAULT_BATCH_SIZE = 64
DEFAULT_ROWS_PER_FILE = 250_000
SUMMARY_FILE = "summary.json"
_KEY_SPACE = 1 << 256


class Predictor(Protocol):
    """The slice of `clinical_ner.model.inference.NerModel` that extraction relies on."""

    @property
    def version(self) -> str: ...

    @property
    def labels(self) -> Sequence[str]: ...

    def predict(
        self, texts: Iterable[str], batch_size: int = ...
    ) -> Iterator[list[PredictedEntity]]: ...


class ModelContractError(RuntimeError):
    """The model returned something that breaks the PredictedEntity contract (a bug)."""


class EntityOffsetError(ModelContractError):
    """A predicted entity's offsets do not slice its own text out of the note."""


class OutputDirError(ValueError):
    """The output directory cannot be used (empty path, a file, not writable)."""


class InputChangedError(ValueError):
    """The input's content changed between the run-id pass and the extracting pass."""


class UncalibratedModelError(ValueError):
    """A model directory lacks this project's metadata (model card with calibration, metrics)."""


def prepare_output_dir(output_dir: str | os.PathLike[str]) -> Path:
    """Create `output_dir` if needed and prove it is writable, before any work is done.

    An empty path is refused (it would mean the current directory), as is an existing
    non-directory; writability is proven by creating and removing a probe file, which also
    holds for root and read-only mounts where permission bits say nothing.
    """
    if not os.fspath(output_dir).strip():
        raise OutputDirError("output directory is empty; name a directory")
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"output {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputDirError(
            f"output directory {out} is not writable: {exc.strerror or type(exc).__name__}"
        ) from None
    return out


def model_metadata_problem(model_dir: str | os.PathLike[str]) -> str | None:
    """Why `model_dir` is not a model this project trained (None when it is).

    `clinical_ner.model.training.train_model` writes a model card with ``model_version`` and a
    ``calibration`` map, and ``metrics.json``. A raw spaCy ``model-best`` has neither, so its
    confidences would be uncalibrated (1.0 for nearly every entity) and unversioned.
    """
    from clinical_ner.model.contracts import (
        METRICS_FILE,
        MODEL_CARD_FILE,
        ContractError,
        read_model_card_file,
    )

    path = Path(model_dir)
    card_path = path / MODEL_CARD_FILE
    if not card_path.is_file():
        return f"{path} has no {MODEL_CARD_FILE} (not trained by clinical-ner train)"
    try:
        card = read_model_card_file(card_path)
    except ContractError as exc:  # not JSON, not an object, a newer schema; names the file
        return str(exc)
    except OSError as exc:
        return f"{card_path} is unreadable: {type(exc).__name__}"
    calibration = card.get("calibration")
    if not (
        isinstance(calibration, dict)
        and isinstance(calibration.get("x"), list)
        and isinstance(calibration.get("y"), list)
        and len(calibration["x"]) == len(calibration["y"]) >= 2
    ):
        return f"{card_path} has no confidence calibration"
    if not isinstance(card.get("model_version"), str) or not card["model_version"]:
        return f"{card_path} has no model_version"
    if not (path / METRICS_FILE).is_file():
        return f"{path} has no {METRICS_FILE}"
    return None


@dataclass
class ExtractionSummary:
    """Counts and throughput of one run; `as_dict()` is what `summary.json` holds."""

    run_id: str
    model_version: str
    dt: str
    inference_time: datetime
    files: int = 0
    records_in: int = 0
    processed: int = 0
    quarantined: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    entities: int = 0
    entities_by_label: dict[str, int] = field(default_factory=dict)
    words: int = 0
    elapsed_seconds: float = 0.0
    output_files: dict[str, list[str]] = field(default_factory=dict)

    @property
    def notes_per_second(self) -> float:
        return self.processed / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    @property
    def words_per_second(self) -> float:
        return self.words / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    def check(self) -> None:
        """Raise AccountingError unless in == processed + quarantined (and per-reason sums)."""
        if self.records_in != self.processed + self.quarantined:
            raise AccountingError(
                f"in={self.records_in} != processed={self.processed} + "
                f"quarantined={self.quarantined}"
            )
        if sum(self.quarantined_by_reason.values()) != self.quarantined:
            raise AccountingError("per-reason quarantine counts do not add up")
        if sum(self.entities_by_label.values()) != self.entities:
            raise AccountingError("per-label entity counts do not add up")

    def as_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "model_version": self.model_version,
            "dt": self.dt,
            "inference_time": self.inference_time.isoformat(),
            "files": self.files,
            "in": self.records_in,
            "processed": self.processed,
            "quarantined": self.quarantined,
            "quarantined_by_reason": dict(sorted(self.quarantined_by_reason.items())),
            "entities": self.entities,
            "entities_by_label": dict(sorted(self.entities_by_label.items())),
            "words": self.words,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "notes_per_second": round(self.notes_per_second, 2),
            "words_per_second": round(self.words_per_second, 1),
            "output_files": self.output_files,
        }


def run_extraction(
    model: Predictor,
    inputs: PathInput,
    output_dir: str | os.PathLike[str],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_chars: int = DEFAULT_MAX_CHARS,
    now: datetime | None = None,
    rows_per_file: int = DEFAULT_ROWS_PER_FILE,
    mtsamples_repair: bool = False,
) -> ExtractionSummary:
    """Extract entities from every note under `inputs` into `output_dir` (see module doc).

    `now` (timezone-aware) fixes `inference_time`, `quarantined_at` and the `dt` partition;
    it defaults to the current UTC time. `mtsamples_repair` lets the model read MTSamples
    notes with their flattened line breaks restored (off: a repair for one corpus, not for a
    hospital's notes); offsets index the delivered text either way. Missing input paths raise
    FileNotFoundError and an unusable output directory `OutputDirError`, both before any input
    is read.
    """
    if batch_size < 1 or rows_per_file < 1:
        raise ValueError("batch_size and rows_per_file must be positive")
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC)
    dt = now.date().isoformat()
    started = time.perf_counter()

    files = discover_files(inputs)
    out = prepare_output_dir(output_dir)
    keys = ContentKeys()
    prepass = NoteReader(max_chars=max_chars, normalise=True)
    for record in prepass.read(files):
        keys.add(record)
    del prepass  # its duplicate index is rebuilt by the extracting pass
    run_id = keys.run_id(model.version)
    summary = ExtractionSummary(
        run_id=run_id, model_version=model.version, dt=dt, inference_time=now
    )
    writers = {
        name: PartWriter(out, name, schema, run_id, dt, rows_per_file)
        for name, schema in TABLES.items()
    }
    for writer in writers.values():
        writer.remove_stale_tmp()

    job = ExtractionJob(
        model, summary, writers, batch_size, now, normalise=True, mtsamples_repair=mtsamples_repair
    )
    reader = NoteReader(max_chars=max_chars, normalise=True)
    seen = ContentKeys()
    try:
        pending: list[Note] = []
        for record in reader.read(files):
            seen.add(record)
            if isinstance(record, Note):
                pending.append(record)
                if len(pending) >= batch_size:
                    job.process(pending)
                    pending = []
            else:
                job.quarantine(record)
        job.process(pending)
        for writer in writers.values():
            writer.flush(force=True)

        reader.summary.check()
        summary.files = reader.summary.files
        summary.records_in = reader.summary.records_in
        summary.quarantined_by_reason = dict(reader.summary.by_reason)
        summary.check()
        if reader.summary.accepted != summary.processed:
            raise AccountingError(
                f"accepted={reader.summary.accepted} != processed={summary.processed}"
            )
        if seen != keys:
            raise InputChangedError(
                f"the input changed while it was being extracted ({keys.count} records when "
                f"the run id was computed, {seen.count} now); nothing was published, re-run"
            )
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise

    for name, writer in writers.items():
        summary.output_files[name] = [p.relative_to(out).as_posix() for p in writer.commit()]
    summary.elapsed_seconds = time.perf_counter() - started
    _write_json_atomic(out / SUMMARY_FILE, summary.as_dict())
    return summary


@dataclass
class ContentKeys:
    """Order-free digest of a run's `record_key`s: a sum of sha256 values mod 2**256.

    Constant memory however many records; equal for the same multiset of records in any
    file layout or order.
    """

    count: int = 0
    total: int = 0

    def add(self, record: Note | QuarantinedRecord) -> None:
        digest = hashlib.sha256(record_key(record).encode("utf-8", "surrogatepass")).digest()
        self.count += 1
        self.total = (self.total + int.from_bytes(digest, "big")) % _KEY_SPACE

    def run_id(self, model_version: str) -> str:
        """Deterministic id of (input content, model version); 16 hex chars."""
        h = hashlib.sha256()
        h.update(f"model_version={model_version}\n".encode())
        h.update(f"records={self.count}\ncontent={self.total:064x}\n".encode())
        return h.hexdigest()[:16]


def compute_run_id(records: Iterable[Note | QuarantinedRecord], model_version: str) -> str:
    """The run id of these records under `model_version` (see module doc)."""
    keys = ContentKeys()
    for record in records:
        keys.add(record)
    return keys.run_id(model_version)


class ExtractionJob:
    """Turns records into rows for one run and keeps the counts.

    With `normalise` the model reads each note's normalised view (`model_view`) and its
    offsets are mapped back onto the delivered text; without it the predictor's offsets must
    already index the delivered text (answers replayed from the serving container, which maps
    them itself). Either way the rows index the note as delivered.
    """

    def __init__(
        self,
        model: Predictor,
        summary: ExtractionSummary,
        writers: dict[str, PartWriter],
        batch_size: int,
        now: datetime,
        *,
        normalise: bool = False,
        mtsamples_repair: bool = False,
    ) -> None:
        self.model = model
        self.normalise = normalise
        self.mtsamples_repair = mtsamples_repair
        self.labels = frozenset(model.labels)
        self.summary = summary
        self.writers = writers
        self.batch_size = batch_size
        self.now = now
        # Every model label is reported, so "0 TREATMENT" is visible rather than missing.
        self.summary.entities_by_label = {label: 0 for label in self.labels}

    def quarantine(self, record: QuarantinedRecord) -> None:
        self.summary.quarantined += 1
        self.writers["quarantine"].add(
            {
                "source": record.source,
                "locator": record.locator,
                "note_id": record.note_id,
                "reason": record.reason.value,
                "detail": record.detail,
                "quarantined_at": self.now,
            }
        )

    def process(self, notes: list[Note]) -> None:
        if not notes:
            return
        views = [
            model_view(n.text, mtsamples_repair=self.mtsamples_repair)
            if self.normalise
            else NoteView.unchanged(n.text)
            for n in notes
        ]
        results = list(self.model.predict([v.text for v in views], batch_size=self.batch_size))
        if len(results) != len(notes):
            raise ModelContractError(
                f"model {self.model.version} returned {len(results)} results for {len(notes)} texts"
            )
        for note, view, entities in zip(notes, views, results, strict=True):
            # The model's contract is checked on the text it read; the rows index the note.
            self._check_entities(note.note_id, view.text, entities)
            self._write_note(note, view.entities_on_original(entities))

    def _check_entities(self, note_id: str, text: str, entities: list[PredictedEntity]) -> None:
        seen: set[tuple[int, int, str]] = set()
        for e in entities:
            where = f"note_id={note_id!r} span [{e.start}:{e.end}] label {e.label!r}"
            if not (
                isinstance(e.start, int)
                and isinstance(e.end, int)
                and 0 <= e.start < e.end <= len(text)
            ):
                raise EntityOffsetError(
                    f"model {self.model.version}: {where} is outside the note "
                    f"({len(text)} characters) or empty"
                )
            if text[e.start : e.end] != e.text:
                raise EntityOffsetError(
                    f"model {self.model.version}: {where}: entity text ({len(e.text)} "
                    "characters) differs from the note text at those offsets"
                )
            if e.label not in self.labels:
                raise ModelContractError(
                    f"model {self.model.version}: {where}: label not in the model's labels "
                    f"{sorted(self.labels)}"
                )
            if not 0.0 <= e.confidence <= 1.0:
                raise ModelContractError(
                    f"model {self.model.version}: {where}: confidence {e.confidence!r} "
                    "is not in [0, 1]"
                )
            if (e.start, e.end, e.label) in seen:
                raise ModelContractError(f"model {self.model.version}: {where} is repeated")
            seen.add((e.start, e.end, e.label))

    def _write_note(self, note: Note, entities: list[PredictedEntity]) -> None:
        counts = Counter({label: 0 for label in self.labels})
        for e in sorted(entities, key=lambda e: (e.start, e.end, e.label)):
            counts[e.label] += 1
            self.writers["entities"].add(
                {
                    "note_id": note.note_id,
                    "entity_id": make_entity_id(
                        note.note_id, note.content_sha256, e.start, e.end, e.label
                    ),
                    "label": e.label,
                    "text": e.text,
                    "start_char": e.start,
                    "end_char": e.end,
                    "confidence": float(e.confidence),
                    "negated": bool(e.negated),
                    **e.details.row(),
                    "model_version": self.model.version,
                    "inference_time": self.now,
                    "source": note.source,
                    "note_sha256": note.content_sha256,
                }
            )
        words = note.word_count
        self.writers["notes"].add(
            {
                "note_id": note.note_id,
                "note_sha256": note.content_sha256,
                "source": note.source,
                "char_count": note.char_count,
                "word_count": words,
                "entity_count": len(entities),
                "entity_counts_by_label": json.dumps(
                    dict(sorted(counts.items())), separators=(",", ":")
                ),
                "mean_confidence": (
                    statistics.fmean(float(e.confidence) for e in entities) if entities else None
                ),
                "model_version": self.model.version,
                "status": NOTE_STATUS_PROCESSED,
                "inference_time": self.now,
            }
        )
        self.summary.processed += 1
        self.summary.words += words
        self.summary.entities += len(entities)
        for label, n in counts.items():
            self.summary.entities_by_label[label] += n


class PartWriter:
    """Buffers rows of one table and writes them as Parquet parts of one run (see module doc)."""

    def __init__(
        self,
        root: Path,
        table: str,
        schema: pa.Schema,
        run_id: str,
        dt: str,
        rows_per_file: int,
    ) -> None:
        self.table_dir = root / table
        self.partition_dir = self.table_dir / f"{PARTITION_COLUMN}={dt}"
        self.schema = file_schema(schema)
        self.run_id = run_id
        self.rows_per_file = rows_per_file
        self.rows: list[dict[str, object]] = []
        self.written: list[Path] = []

    def _tmp_name(self, seq: int) -> str:
        return f"_tmp-{self.run_id}-{seq:05d}.parquet"

    def _final_name(self, seq: int) -> str:
        return f"part-{self.run_id}-{seq:05d}.parquet"

    def remove_stale_tmp(self) -> None:
        """Drop temp files a crashed earlier attempt of this run left behind."""
        for path in self.table_dir.glob(f"{PARTITION_COLUMN}=*/_tmp-{self.run_id}-*.parquet"):
            path.unlink(missing_ok=True)

    def add(self, row: dict[str, object]) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.rows_per_file:
            self.flush()

    def flush(self, *, force: bool = False) -> None:
        """Write buffered rows; `force` writes even zero rows if nothing was written yet."""
        if not self.rows and not (force and not self.written):
            return
        self.partition_dir.mkdir(parents=True, exist_ok=True)
        path = self.partition_dir / self._tmp_name(len(self.written))
        pq.write_table(pa.Table.from_pylist(self.rows, schema=self.schema), path)
        self.written.append(path)
        self.rows = []

    def commit(self) -> list[Path]:
        """Replace every earlier part of this run (any dt) with this attempt's files."""
        for old in self.table_dir.glob(f"{PARTITION_COLUMN}=*/part-{self.run_id}-*.parquet"):
            old.unlink()
        final = []
        for seq, tmp in enumerate(self.written):
            target = tmp.with_name(self._final_name(seq))
            tmp.replace(target)
            final.append(target)
        return final

    def abort(self) -> None:
        for path in self.written:
            path.unlink(missing_ok=True)
        self.written = []
        self.rows = []


def _write_json_atomic(path: Path, payload: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)
