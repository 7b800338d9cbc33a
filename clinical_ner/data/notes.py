"""Reading clinical notes from .txt/.jsonl/.csv files, accepting or quarantining every record.

Accounting rule: every record read comes out exactly once, either as an accepted `Note` or as
a `QuarantinedRecord` with a machine-readable reason, so `records_in == accepted + quarantined`
always holds and nothing is dropped silently.

What counts as one record:

- ``.txt``: the whole file is one note; its ``note_id`` is the file stem (``notes/123.txt``
  -> ``"123"``, ``a.b.txt`` -> ``"a.b"``). Locator: ``None``.
- ``.jsonl``: one JSON object per non-blank line, with ``note_id`` (string or integer) and
  ``text`` (string); other keys are ignored. Blank lines are not records. Locator: 1-based line
  number.
- ``.csv``: one row per record after a header row holding ``note_id`` and ``text`` (or, only when
  ``text`` is absent, ``transcription`` as in MTSamples). Blank rows are not records. Locator:
  1-based data row number (the header is row 0), which differs from the physical line number
  when quoted fields contain newlines.
- A file that cannot be read as records at all (unsupported extension, undecodable .txt/.csv,
  CSV without the required columns, unreadable from disk, not a regular file, a .txt over the
  size cap) is one quarantined record with locator ``None``. A CSV whose parser fails mid-file
  yields its good rows and then one quarantined record (``malformed_csv``) standing for the
  unparsed rest of the file.

Safety of reads: a path is ``stat``-ed before it is opened and only a regular file (a symlink
is followed; it must resolve to one) is ever opened, so a FIFO, a device (``/dev/zero``), a
socket or a directory is quarantined as ``not_a_regular_file`` without being opened; a symlink
loop or a dangling link is ``unreadable_file``. Reads are capped: a ``.txt`` is read with at
most cap + 1 bytes, a ``.jsonl`` line and a ``.csv`` row are read in bounded pieces and
quarantined as ``too_long`` once over their cap (`record_byte_cap`), so neither a huge file nor
a file that grows while it is read can exhaust memory.

Checks applied to each candidate note, first failure wins: note_id validity, text encodability,
normalisation, empty text (of the normalised view), length limit, then duplicates within the
run. Only accepted notes are remembered for duplicate detection.

Texts are kept as delivered: an accepted `Note` holds the text exactly as it was in the record
(a .txt file's UTF-8 BOM, an encoding mark, aside) and its sha256. The normalised view a model
reads (`model_view`) is derived from it on demand, and entity offsets found on the view are
mapped back, so offsets always index the note as delivered.

PHI: note text never appears in a quarantine detail, an exception message or a summary; details
are built from fixed templates, counts, offsets and type names only. Invalid note ids are not
echoed either (a swapped-column CSV puts note text into the id field).
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import hashlib
import io
import itertools
import json
import os
import re
import stat
import sys
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeAlias, TypeVar

DEFAULT_MAX_CHARS = 100_000
# How notes travel over HTTP: the serve container's requests and answers, Batch Transform and
# SageMaker data capture (which records these as JSON text rather than base64).
JSON_MEDIA_TYPE = "application/json"
JSONLINES_MEDIA_TYPES = ("application/jsonlines", "application/x-jsonlines", "application/jsonl")
MAX_NOTE_ID_CHARS = 128
SUPPORTED_SUFFIXES = (".txt", ".jsonl", ".csv")
TEXT_COLUMNS = ("text", "transcription")  # in order of preference

PathInput: TypeAlias = str | os.PathLike[str] | Iterable[str | os.PathLike[str]]

_BOM = "\ufeff"
_BOM_BYTES = codecs.BOM_UTF8
_READ_CHUNK = 1 << 20
# UTF-8 needs at most 4 bytes per character, so a bigger file is too long without decoding it.
_MAX_BYTES_PER_CHAR = 4
_MAX_JSON_BYTES_PER_CHAR = 6
_RECORD_SLACK_BYTES = 1 << 20

# The stdlib default (131072 chars per field) would turn a long note into a parser error that
# loses the rest of the file; length is judged by our own max_chars check instead.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class QuarantineReason(StrEnum):
    """Why a record was not accepted; the value is what lands in the quarantine table."""

    UNSUPPORTED_FILE_TYPE = "unsupported_file_type"
    UNREADABLE_FILE = "unreadable_file"
    NOT_A_REGULAR_FILE = "not_a_regular_file"
    BAD_ENCODING = "bad_encoding"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    INVALID_TEXT_TYPE = "invalid_text_type"
    SCHEMA_MISMATCH = "schema_mismatch"
    MALFORMED_ROW = "malformed_row"
    MALFORMED_CSV = "malformed_csv"
    INVALID_NOTE_ID = "invalid_note_id"
    EMPTY_TEXT = "empty_text"
    TOO_LONG = "too_long"
    DUPLICATE_NOTE_ID = "duplicate_note_id"
    DUPLICATE_RECORD = "duplicate_record"


@dataclass(frozen=True)
class Note:
    """An accepted note. `text` is the note as delivered; all entity offsets refer to it."""

    note_id: str
    text: str
    source: str
    locator: int | None
    content_sha256: str

    @property
    def char_count(self) -> int:
        return len(self.text)

    @property
    def word_count(self) -> int:
        return len(self.text.split())


@dataclass(frozen=True)
class QuarantinedRecord:
    """A rejected record: where it came from and why. `detail` never contains note text.

    `raw_sha256` is the hex sha256 of the record's raw bytes as read (the .jsonl line, the
    .csv row's fields, the .txt file), or None for a file-level record whose content was not
    read; it gives the record a path-independent identity (`record_key`).
    """

    source: str
    locator: int | None
    note_id: str | None
    reason: QuarantineReason
    detail: str
    raw_sha256: str | None = None


@dataclass
class ReadSummary:
    """Running counts of a read; complete once the stream is exhausted."""

    files: int = 0
    records_in: int = 0
    accepted: int = 0
    quarantined: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)

    def check(self) -> None:
        """Raise if the accounting invariant is broken (a bug, never a data problem)."""
        if self.records_in != self.accepted + self.quarantined:
            raise AccountingError(
                f"records_in={self.records_in} != accepted={self.accepted} + "
                f"quarantined={self.quarantined}"
            )
        if sum(self.by_reason.values()) != self.quarantined:
            raise AccountingError("per-reason quarantine counts do not add up")

    def as_dict(self) -> dict[str, object]:
        return {
            "files": self.files,
            "in": self.records_in,
            "accepted": self.accepted,
            "quarantined": self.quarantined,
            "quarantined_by_reason": dict(sorted(self.by_reason.items())),
        }


class AccountingError(RuntimeError):
    """Records in != accepted + quarantined: a bug in the reader or its caller."""


@dataclass(frozen=True)
class InputFile:
    """A file to read, in reading order. `kind` is None when the extension is unsupported."""

    path: Path
    kind: Literal["txt", "jsonl", "csv"] | None

    @property
    def source(self) -> str:
        # A file name that is not valid UTF-8 decodes to lone surrogates (PEP 383), which no
        # UTF-8 sink (Parquet, JSON) can store: show those bytes as \xNN escapes instead.
        return os.fsencode(self.path).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class NoteBatch:
    """A fully materialised read, for inputs small enough to hold in memory."""

    notes: list[Note]
    quarantined: list[QuarantinedRecord]
    summary: ReadSummary


# --------------------------------------------------------------------------- normalisation

_NEWLINES = re.compile(r"\r\n?")
# Cc minus \t and \n (\r is gone by the time this runs).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]+")
# MTSamples flattened every line break to a comma. After a colon ("DIAGNOSIS: , Morbid",
# "SUBJECTIVE:,  This", "HISTORY:  ,  , Text") each comma was a line break.
_HEADER_BREAK = re.compile(r"(?<=:)((?:[ \t]*,)+)[ \t]*")
# After a full stop a comma glued to the next word (".,POSTOPERATIVE", ". ,The", "., ,PAST") was
# a line break too; "b.i.d., aspirin" (comma then space) is a real list comma and is kept.
_SENTENCE_BREAK = re.compile(r"\.((?:[ \t]*,)+)(?=[^\s,])")
# A comma glued to an upper-case section header ("no masses,ABDOMEN: Soft",
# "PHYSICAL EXAMINATION,VITAL SIGNS:") was a line break; mixed-case words are left alone.
_CAPS_HEADER_BREAK = re.compile(r"(?<=\S),(?=[A-Z][A-Z0-9 /&()'-]{0,38}[A-Z)]:)")

_E = TypeVar("_E")


class OffsetMap:
    """Where each character of a normalised text came from in the original text.

    Normalised character ``i`` was made from ``original[starts[i]:ends[i]]``. A run the
    normaliser rewrote as a whole (``\\r\\n``, an NFC composition, the newlines of an MTSamples
    repair) maps every one of its output characters to the whole input run, so a span
    boundary inside it widens to the run; characters the normaliser deleted (control
    characters) belong to the span only when they lie inside it. An identity map stores
    nothing (most notes need no rewriting).
    """

    __slots__ = ("_ends", "_starts", "length", "original_length")

    def __init__(
        self,
        length: int,
        original_length: int,
        starts: list[int] | None = None,
        ends: list[int] | None = None,
    ) -> None:
        if (starts is None) != (ends is None):
            raise ValueError("starts and ends go together")
        if starts is not None and ends is not None and not len(starts) == len(ends) == length:
            raise ValueError("one start and one end per normalised character")
        self.length = length
        self.original_length = original_length
        self._starts = starts
        self._ends = ends

    @property
    def is_identity(self) -> bool:
        return self._starts is None

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """The ``[start, end)`` of the original text that normalised ``[start, end)`` came from."""
        if not (
            isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= self.length
        ):
            raise ValueError(
                f"span [{start}:{end}] is empty or outside the normalised text "
                f"({self.length} characters)"
            )
        if self._starts is None or self._ends is None:
            return start, end
        return self._starts[start], self._ends[end - 1]

    def then(self, step: OffsetMap) -> OffsetMap:
        """The map of this normalisation followed by `step` (which rewrote this one's output)."""
        if step.original_length != self.length:
            raise ValueError("the step did not rewrite this map's output")
        if step.is_identity:
            return self
        if self.is_identity:
            return OffsetMap(step.length, self.original_length, step._starts, step._ends)
        assert self._starts is not None and self._ends is not None
        assert step._starts is not None and step._ends is not None
        starts, ends = self._starts, self._ends
        return OffsetMap(
            step.length,
            self.original_length,
            [starts[i] for i in step._starts],
            [ends[i - 1] for i in step._ends],
        )


class _Rewrite:
    """One normalisation pass over `source`: unchanged stretches plus replaced runs, with a map."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.parts: list[str] = []
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.pos = 0
        self.changed = False

    def replace(self, start: int, end: int, new: str) -> None:
        """Copy ``source[pos:start]`` as is, then write `new` in place of ``source[start:end]``."""
        self._keep(start)
        if new == self.source[start:end]:
            self._keep(end)
            return
        self.changed = True
        self.parts.append(new)
        self.starts.extend([start] * len(new))
        self.ends.extend([end] * len(new))
        self.pos = end

    def _keep(self, upto: int) -> None:
        if upto > self.pos:
            self.parts.append(self.source[self.pos : upto])
            self.starts.extend(range(self.pos, upto))
            self.ends.extend(range(self.pos + 1, upto + 1))
            self.pos = upto

    def result(self) -> tuple[str, OffsetMap]:
        if not self.changed:
            return self.source, OffsetMap(len(self.source), len(self.source))
        self._keep(len(self.source))
        text = "".join(self.parts)
        return text, OffsetMap(len(text), len(self.source), self.starts, self.ends)


def _sub(text: str, pattern: re.Pattern[str], group: int, repl: Callable[[str], str]) -> _Rewrite:
    """Rewrite each match's `group` (0: the whole match) with ``repl(group text)``."""
    rewrite = _Rewrite(text)
    for match in pattern.finditer(text):
        rewrite.replace(match.start(group), match.end(group), repl(match.group(group)))
    return rewrite


def _commas_as_newlines(run: str) -> str:
    return "\n" * run.count(",")


_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


def _nfc_units(text: str) -> list[tuple[int, int]]:
    """The smallest runs of `text` (slices) that NFC treats as a unit, in order.

    Runs start at characters of combining class 0; a run is joined to the one before it when
    NFC of the two together differs from NFC of each (a starter that composes with the
    previous one, such as Hangul jamo), so each run's NFC is its share of NFC(text).
    """
    starts = [i for i, ch in enumerate(text) if i == 0 or not unicodedata.combining(ch)]
    starts.append(len(text))
    units: list[tuple[int, int]] = []
    unit_start = 0
    for a, b in itertools.pairwise(starts):
        if a > unit_start:
            head, tail = text[unit_start:a], text[a:b]
            joined = unicodedata.normalize("NFC", head + tail)
            if joined == unicodedata.normalize("NFC", head) + unicodedata.normalize("NFC", tail):
                units.append((unit_start, a))
                unit_start = a
    units.append((unit_start, len(text)))
    return units


def _nfc(text: str) -> _Rewrite:
    """Unicode NFC, rewriting only the smallest runs that NFC changes.

    An ASCII character never composes with what precedes it, so NFC works independently on
    each stretch of non-ASCII characters together with the one character before it (a base
    letter its combining marks may join); only stretches that are not already NFC are split
    into units (`_nfc_units`) and rewritten.
    """
    rewrite = _Rewrite(text)
    if unicodedata.is_normalized("NFC", text):
        return rewrite
    for run in _NON_ASCII.finditer(text):
        a, b = max(run.start() - 1, 0), run.end()
        stretch = text[a:b]
        if unicodedata.is_normalized("NFC", stretch):
            continue
        for start, end in _nfc_units(stretch):
            rewrite.replace(a + start, a + end, unicodedata.normalize("NFC", stretch[start:end]))
    if rewrite.result()[0] != unicodedata.normalize("NFC", text):  # never seen; stay correct
        rewrite = _Rewrite(text)
        rewrite.replace(0, len(text), unicodedata.normalize("NFC", text))
    return rewrite


def normalise_with_offsets(text: str, *, mtsamples_repair: bool = False) -> tuple[str, OffsetMap]:
    """The normalised view of a note text and the map of its characters back to `text`.

    Steps: ``\\r\\n``/``\\r`` -> ``\\n``; drop control characters except ``\\n`` and ``\\t``;
    Unicode NFC. With `mtsamples_repair` (opt-in: a repair for one corpus, never run on a
    hospital's notes by default) then undo the MTSamples comma-for-line-break artefacts (one
    ``\\n`` per flattened comma, so blank lines survive as paragraph breaks); they only touch
    ``,`` that follows ``:``, a ``.`` glued to the next word, or that precedes an upper-case
    ``HEADER:``; ordinary prose commas are unchanged. Pure and idempotent. The model reads the
    view; offsets found on it are mapped back with `OffsetMap.original_span` (`NoteView`).
    """
    offsets = OffsetMap(len(text), len(text))
    steps: list[Callable[[str], _Rewrite]] = [
        lambda t: _sub(t, _NEWLINES, 0, lambda _: "\n"),
        lambda t: _sub(t, _CONTROL, 0, lambda _: ""),
        _nfc,
    ]
    if mtsamples_repair:
        steps += [
            lambda t: _sub(t, _HEADER_BREAK, 0, _commas_as_newlines),
            lambda t: _sub(t, _SENTENCE_BREAK, 1, _commas_as_newlines),
            lambda t: _sub(t, _CAPS_HEADER_BREAK, 0, lambda _: "\n"),
        ]
    for step in steps:
        text, step_map = step(text).result()
        offsets = offsets.then(step_map)
    return text, offsets


def normalise_text(text: str, *, mtsamples_repair: bool = False) -> str:
    """The normalised view of a note text (`normalise_with_offsets` without the map)."""
    return normalise_with_offsets(text, mtsamples_repair=mtsamples_repair)[0]


@dataclass(frozen=True)
class NoteView:
    """A note as delivered (`original`) and the normalised `text` a model reads.

    Offsets found on `text` are re-anchored on `original` by `entities_on_original`, so every
    output honours ``original[start:end] == entity.text``.
    """

    original: str
    text: str
    offsets: OffsetMap

    @classmethod
    def unchanged(cls, text: str) -> NoteView:
        """The view of a text read as it is (offsets already index the delivered text)."""
        return cls(text, text, OffsetMap(len(text), len(text)))

    def entities_on_original(self, entities: Iterable[_E]) -> list[_E]:
        """`entities` (found on `text`) with start/end indexing `original` and text sliced from it.

        Each entity is a dataclass or a NamedTuple with ``start``, ``end``, ``label``, ``text``
        and ``confidence``, and optionally ``details`` (`EntityDetails`, whose offsets move
        too). Two entities that land on the same original span and label (their
        boundaries fell inside one rewritten run) are reported once, the more confident.
        """
        if self.offsets.is_identity:
            return list(entities)
        kept: dict[tuple[int, int, str], Any] = {}
        for entity in entities:
            e: Any = entity
            start, end = self.offsets.original_span(e.start, e.end)
            fields: dict[str, Any] = {"start": start, "end": end, "text": self.original[start:end]}
            details = getattr(e, "details", None)
            if details is not None:  # trait triggers and medication attributes move too
                fields["details"] = details.on_original(self.offsets.original_span, self.original)
            moved = (
                dataclasses.replace(e, **fields)
                if dataclasses.is_dataclass(e)
                else e._replace(**fields)
            )
            key = (start, end, e.label)
            if key not in kept or moved.confidence > kept[key].confidence:
                kept[key] = moved
        return list(kept.values())


def model_view(text: str, *, mtsamples_repair: bool = False) -> NoteView:
    """The `NoteView` of a note text as delivered."""
    view, offsets = normalise_with_offsets(text, mtsamples_repair=mtsamples_repair)
    return NoteView(text, view, offsets)


def content_sha256(text: str) -> str:
    """Hex sha256 of the UTF-8 bytes of a stored note text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def record_key(record: Note | QuarantinedRecord) -> str:
    """Path-independent identity of a record: what a re-run over the same content repeats.

    An accepted note is ``(note_id, note_sha256)``. A quarantined record is its reason and the
    sha256 of its raw bytes; a file-level record whose content was not read (unsupported type,
    unreadable, not a regular file, over the size cap) falls back to its reason and file name.
    Paths, directories and positions are left out, so the same content read from ``notes``,
    ``$PWD/notes``, a symlinked directory or a renamed ``.jsonl``/``.csv`` has the same keys.
    """
    if isinstance(record, Note):
        return f"note\x1f{record.note_id}\x1f{record.content_sha256}"
    if record.raw_sha256 is not None:
        return f"quarantined\x1f{record.reason.value}\x1f{record.raw_sha256}"
    name = record.source.rsplit("/", 1)[-1]
    return f"quarantined\x1f{record.reason.value}\x1f{record.note_id or ''}\x1f{name}"


def record_byte_cap(max_chars: int) -> int:
    """Most raw bytes one .jsonl line or .csv row may take before it is `too_long` unread.

    A stored text of `max_chars` characters takes at most 6 bytes per character as a JSON
    escape (``\\u0001``); the slack covers the note id and ignored fields or columns.
    """
    return max_chars * _MAX_JSON_BYTES_PER_CHAR + _RECORD_SLACK_BYTES


# --------------------------------------------------------------------------- file discovery


def _kind(path: Path) -> Literal["txt", "jsonl", "csv"] | None:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return "txt"
    if suffix == ".jsonl":
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    return None


def discover_files(paths: PathInput) -> list[InputFile]:
    """Expand inputs into files in reading order.

    Directories are walked recursively without following symlinked directories, and their
    files are ordered by relative path. Every file found is listed, supported or not, so
    unsupported ones can be quarantined rather than skipped. A path that does not exist is a
    caller error and raises `FileNotFoundError` before anything is read.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    roots = [Path(p) for p in paths]
    missing = [str(p) for p in roots if not p.exists()]
    if missing:
        raise FileNotFoundError(f"input path(s) not found: {', '.join(missing)}")
    files: list[InputFile] = []
    for root in roots:
        if root.is_dir():
            found = [Path(d) / name for d, _, names in os.walk(root) for name in names]
            # Sorted by path components so "b/a.txt" precedes "c.txt" on every platform.
            for path in sorted(found, key=lambda p: p.relative_to(root).parts):
                files.append(InputFile(path, _kind(path)))
        else:
            files.append(InputFile(root, _kind(root)))
    return files


# --------------------------------------------------------------------------- reading


def _note_id_problem(note_id: str) -> str | None:
    """Why a note id is unusable as a key, without echoing it; None when valid."""
    if not note_id or not note_id.strip():
        return "note_id is empty"
    if len(note_id) > MAX_NOTE_ID_CHARS:
        return f"note_id has {len(note_id)} characters; limit is {MAX_NOTE_ID_CHARS}"
    if note_id != note_id.strip():
        return "note_id has leading or trailing whitespace"
    if "/" in note_id:
        return "note_id contains '/'"
    for ch in note_id:
        category = unicodedata.category(ch)
        if category == "Cc":
            return f"note_id contains control character U+{ord(ch):04X}"
        if category == "Cs":
            return f"note_id contains an unpaired surrogate U+{ord(ch):04X}"
    return None


def _utf8_problem(fh: BinaryIO) -> str | None:
    """Validate the rest of an open file as UTF-8 in bounded memory; describe the first error."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    offset = 0
    while True:
        chunk = fh.read(_READ_CHUNK)
        try:
            decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            return f"invalid UTF-8 near byte offset {offset + exc.start}"
        if not chunk:
            return None
        offset += len(chunk)


_FILE_TYPES = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class NotARegularFile(Exception):
    """The path is (or resolves to) something other than a regular file; never opened."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def _file_kind(mode: int) -> str:
    return next((name for test, name in _FILE_TYPES if test(mode)), "not a regular file")


def open_regular_file(path: Path) -> BinaryIO:
    """Open `path` for binary reading only if it is (a symlink to) a regular file.

    The type is checked with stat before opening, so a FIFO or device is never opened (opening
    a FIFO blocks until a writer appears; /dev/zero never ends). The file is then opened
    non-blocking and checked again with fstat: a path swapped for another file between the two
    calls is refused as well. OSError (missing, dangling or looping symlink, permissions)
    propagates to the caller.
    """
    before = os.stat(path)
    if not stat.S_ISREG(before.st_mode):
        raise NotARegularFile(_file_kind(before.st_mode))
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    try:
        after = os.fstat(fd)
        if not stat.S_ISREG(after.st_mode) or (after.st_dev, after.st_ino) != (
            before.st_dev,
            before.st_ino,
        ):
            raise NotARegularFile(
                "replaced while being opened"
                if stat.S_ISREG(after.st_mode)
                else _file_kind(after.st_mode)
            )
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class NoteRejected(ValueError):
    """A candidate note failed a check; `detail` never contains note text or the note id."""

    def __init__(self, reason: QuarantineReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def checked_note_view(
    note_id: str,
    text: str,
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    normalise: bool = True,
    mtsamples_repair: bool = False,
) -> NoteView:
    """The `NoteView` of one candidate note, or `NoteRejected` naming the first failed check.

    The per-record checks of the readers, in their order: note_id validity, text encodability,
    normalisation, empty text, length limit. Emptiness is judged on the normalised view (what
    the model would read); the length limit on the text as delivered and on the view, whichever
    is longer. The text kept and hashed is always the text as delivered (`NoteView.original`);
    with `normalise` off the view is the text itself. Duplicate detection needs a run and stays
    with `NoteReader`. Used by every entry point, so a note is accepted or rejected the same
    way everywhere.
    """
    problem = _note_id_problem(note_id)
    if problem is not None:
        raise NoteRejected(QuarantineReason.INVALID_NOTE_ID, problem)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        # JSON "\ud800" escapes decode to lone surrogates that no UTF-8 sink can store.
        raise NoteRejected(
            QuarantineReason.BAD_ENCODING,
            f"text contains an unpaired surrogate at character {exc.start}",
        ) from None
    view = (
        model_view(text, mtsamples_repair=mtsamples_repair)
        if normalise
        else NoteView.unchanged(text)
    )
    if not view.text.strip():
        raise NoteRejected(
            QuarantineReason.EMPTY_TEXT,
            f"text is empty or whitespace only ({len(text)} characters)",
        )
    length = max(len(text), len(view.text))
    if length > max_chars:
        raise NoteRejected(
            QuarantineReason.TOO_LONG, f"text has {length} characters; limit is {max_chars}"
        )
    return view


def checked_note_text(
    note_id: str, text: str, *, max_chars: int = DEFAULT_MAX_CHARS, normalise: bool = True
) -> str:
    """The kept text (as delivered) of one candidate note, checked by `checked_note_view`."""
    return checked_note_view(note_id, text, max_chars=max_chars, normalise=normalise).original


class NoteReader:
    """Reads files into Notes/QuarantinedRecords, keeping duplicate state and counts for a run.

    One reader is one run: note ids are unique across all files it reads. `summary` is updated
    as records are yielded.
    """

    def __init__(self, *, max_chars: int = DEFAULT_MAX_CHARS, normalise: bool = True) -> None:
        if max_chars < 1:
            raise ValueError("max_chars must be positive")
        self.max_chars = max_chars
        self.normalise = normalise
        self.summary = ReadSummary()
        # note_id -> (sha256 digest, where first seen); digests keep memory at ~100 B per note.
        self._seen: dict[str, tuple[bytes, str]] = {}

    def read_file(self, file: InputFile) -> Iterator[Note | QuarantinedRecord]:
        """Yield every record of one file, counting each one."""
        self.summary.files += 1
        for record in self._records(file):
            self.summary.records_in += 1
            if isinstance(record, Note):
                self.summary.accepted += 1
            else:
                self.summary.quarantined += 1
                self.summary.by_reason[record.reason.value] += 1
            yield record

    def read(self, files: Iterable[InputFile]) -> Iterator[Note | QuarantinedRecord]:
        for file in files:
            yield from self.read_file(file)

    # -- per format

    def _records(self, file: InputFile) -> Iterator[Note | QuarantinedRecord]:
        source = file.source
        try:
            fh = open_regular_file(file.path)
        except NotARegularFile as exc:
            yield _quarantine(
                source,
                None,
                None,
                QuarantineReason.NOT_A_REGULAR_FILE,
                f"{exc.kind}: only regular files (or symlinks to them) are read",
            )
            return
        except OSError as exc:
            yield _quarantine(
                source,
                None,
                None,
                QuarantineReason.UNREADABLE_FILE,
                f"cannot open the file: {type(exc).__name__} (errno {exc.errno})",
            )
            return
        with fh:
            if file.kind is None:
                suffix = file.path.suffix or "(none)"
                yield _quarantine(
                    source,
                    None,
                    None,
                    QuarantineReason.UNSUPPORTED_FILE_TYPE,
                    f"extension {suffix!r} is not one of {', '.join(SUPPORTED_SUFFIXES)}",
                )
                return
            try:
                if file.kind == "txt":
                    yield from self._read_txt(fh, file.path, source)
                elif file.kind == "jsonl":
                    yield from self._read_jsonl(fh, source)
                else:
                    yield from self._read_csv(fh, source)
            except OSError as exc:
                # .txt/.csv fail before yielding anything; a .jsonl can fail mid-file, and then
                # this one record stands for the unread rest, so the accounting still adds up.
                yield _quarantine(
                    source,
                    None,
                    None,
                    QuarantineReason.UNREADABLE_FILE,
                    f"cannot read (the rest of) the file: {type(exc).__name__} (errno {exc.errno})",
                )

    def _read_txt(
        self, fh: BinaryIO, path: Path, source: str
    ) -> Iterator[Note | QuarantinedRecord]:
        note_id = path.stem
        known_id = note_id if _note_id_problem(note_id) is None else None
        cap = self.max_chars * _MAX_BYTES_PER_CHAR + len(_BOM_BYTES)
        size = os.fstat(fh.fileno()).st_size
        # The size on disk can be stale (a growing file), so the read itself is capped too.
        data = fh.read(cap + 1) if size <= cap else b""
        if size > cap or len(data) > cap:
            yield _quarantine(
                source,
                None,
                known_id,
                QuarantineReason.TOO_LONG,
                f"file has more than {cap} bytes, more than {self.max_chars} characters can take",
            )
            return
        raw_sha = hashlib.sha256(data).hexdigest()
        try:
            raw = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield _quarantine(
                source,
                None,
                known_id,
                QuarantineReason.BAD_ENCODING,
                f"invalid UTF-8 near byte offset {exc.start}",
                raw_sha,
            )
            return
        yield _with_raw_sha(self._check(source, None, note_id, raw.removeprefix(_BOM)), raw_sha)

    def _read_jsonl(self, fh: BinaryIO, source: str) -> Iterator[Note | QuarantinedRecord]:
        cap = record_byte_cap(self.max_chars)
        lineno = 0
        while line := fh.readline(cap + 1):
            lineno += 1
            if not line.endswith(b"\n") and len(line) > cap:
                skipped = len(line)
                while (rest := fh.readline(_READ_CHUNK)) and not rest.endswith(b"\n"):
                    skipped += len(rest)  # drain the over-long line in bounded pieces
                skipped += len(rest)
                yield _quarantine(
                    source,
                    lineno,
                    None,
                    QuarantineReason.TOO_LONG,
                    f"line has {skipped} bytes; limit is {cap} for max_chars={self.max_chars}",
                    hashlib.sha256(line).hexdigest(),
                )
                continue
            if lineno == 1:
                line = line.removeprefix(_BOM_BYTES)
            if not line.strip():
                continue
            raw_sha = hashlib.sha256(line.rstrip(b"\r\n")).hexdigest()
            try:
                decoded = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield _quarantine(
                    source,
                    lineno,
                    None,
                    QuarantineReason.BAD_ENCODING,
                    f"invalid UTF-8 near byte offset {exc.start} of the line",
                    raw_sha,
                )
                continue
            yield _with_raw_sha(self._jsonl_record(source, lineno, decoded), raw_sha)

    def _jsonl_record(self, source: str, lineno: int, line: str) -> Note | QuarantinedRecord:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            # exc.msg is a fixed parser phrase and pos a number: neither quotes the line.
            return _quarantine(
                source,
                lineno,
                None,
                QuarantineReason.MALFORMED_JSON,
                f"invalid JSON: {exc.msg} (character {exc.pos} of the line)",
            )
        except RecursionError:
            return _quarantine(
                source,
                lineno,
                None,
                QuarantineReason.MALFORMED_JSON,
                "JSON nested too deeply for the parser",
            )
        except ValueError:
            # Python refuses integers of more than sys.get_int_max_str_digits() digits (4300).
            return _quarantine(
                source,
                lineno,
                None,
                QuarantineReason.MALFORMED_JSON,
                f"JSON number has more than {sys.get_int_max_str_digits()} digits",
            )
        if not isinstance(obj, dict):
            return _quarantine(
                source,
                lineno,
                None,
                QuarantineReason.NOT_AN_OBJECT,
                f"expected a JSON object, got {_json_type(obj)}",
            )
        missing = [k for k in ("note_id", "text") if obj.get(k) is None]
        raw_id = obj.get("note_id")
        if isinstance(raw_id, int) and not isinstance(raw_id, bool):
            raw_id = str(raw_id)
        known_id = raw_id if isinstance(raw_id, str) and _note_id_problem(raw_id) is None else None
        if missing:
            return _quarantine(
                source,
                lineno,
                known_id,
                QuarantineReason.MISSING_FIELD,
                f"missing required field(s): {', '.join(missing)}",
            )
        if not isinstance(raw_id, str):
            return _quarantine(
                source,
                lineno,
                None,
                QuarantineReason.INVALID_NOTE_ID,
                f"note_id must be a string or integer, got {_json_type(raw_id)}",
            )
        text = obj["text"]
        if not isinstance(text, str):
            return _quarantine(
                source,
                lineno,
                known_id,
                QuarantineReason.INVALID_TEXT_TYPE,
                f"text must be a string, got {_json_type(text)}",
            )
        return self._check(source, lineno, raw_id, text)

    def _read_csv(self, fh: BinaryIO, source: str) -> Iterator[Note | QuarantinedRecord]:
        # Validated up front so a bad byte late in the file cannot follow already-accepted rows.
        problem = _utf8_problem(fh)
        if problem is not None:
            yield _quarantine(source, None, None, QuarantineReason.BAD_ENCODING, problem)
            return
        fh.seek(0)
        text = io.TextIOWrapper(fh, encoding="utf-8-sig", newline="")
        lines = _CappedLines(text, record_byte_cap(self.max_chars))
        reader = csv.reader(lines)
        try:
            header = next(reader, None)
        except (csv.Error, _RowTooLong) as exc:
            yield _quarantine(
                source,
                None,
                None,
                QuarantineReason.SCHEMA_MISMATCH,
                f"cannot parse header row: {exc}",
            )
            return
        columns = [h.strip() for h in header] if header else []
        text_col = next((c for c in TEXT_COLUMNS if c in columns), None)
        if "note_id" not in columns or text_col is None:
            yield _quarantine(
                source,
                None,
                None,
                QuarantineReason.SCHEMA_MISMATCH,
                "header must contain note_id and text (or transcription); found "
                f"{len(columns)} column(s)" + ("" if header else " (no header row)"),
            )
            return
        id_idx, text_idx = columns.index("note_id"), columns.index(text_col)
        rowno = 0
        while True:
            lines.start_row()
            try:
                row = next(reader)
            except StopIteration:
                return
            except _RowTooLong as exc:
                yield _quarantine(
                    source,
                    rowno + 1,
                    None,
                    QuarantineReason.TOO_LONG,
                    f"data row {rowno + 1} {exc}; the rest of the file is not read",
                )
                return
            except csv.Error as exc:
                yield _quarantine(
                    source,
                    rowno + 1,
                    None,
                    QuarantineReason.MALFORMED_CSV,
                    f"CSV parser stopped at data row {rowno + 1}: {exc}; "
                    "the rest of the file is not read",
                )
                return
            if not row:
                continue  # a blank line holds no record
            rowno += 1
            raw_sha = hashlib.sha256(
                json.dumps(row, ensure_ascii=False).encode("utf-8", "surrogatepass")
            ).hexdigest()
            yield _with_raw_sha(
                self._csv_record(source, rowno, row, len(columns), id_idx, text_idx), raw_sha
            )

    def _csv_record(
        self, source: str, rowno: int, row: list[str], width: int, id_idx: int, text_idx: int
    ) -> Note | QuarantinedRecord:
        # A row of the wrong width is misaligned, so its note_id slot may hold note text: the
        # id is not reported for such rows.
        if len(row) > width:
            return _quarantine(
                source,
                rowno,
                None,
                QuarantineReason.MALFORMED_ROW,
                f"row has {len(row)} fields but the header has {width}",
            )
        missing = [
            name for name, idx in (("note_id", id_idx), ("text", text_idx)) if idx >= len(row)
        ]
        if missing:
            return _quarantine(
                source,
                rowno,
                None,
                QuarantineReason.MISSING_FIELD,
                f"row has {len(row)} of {width} fields; missing: {', '.join(missing)}",
            )
        return self._check(source, rowno, row[id_idx], row[text_idx])

    # -- checks common to every format

    def _check(
        self, source: str, locator: int | None, note_id: str, text: str
    ) -> Note | QuarantinedRecord:
        try:
            text = checked_note_text(
                note_id, text, max_chars=self.max_chars, normalise=self.normalise
            )
        except NoteRejected as exc:
            known_id = None if exc.reason is QuarantineReason.INVALID_NOTE_ID else note_id
            return _quarantine(source, locator, known_id, exc.reason, exc.detail)
        encoded = text.encode("utf-8")
        digest = hashlib.sha256(encoded).digest()
        where = source if locator is None else f"{source}:{locator}"
        first = self._seen.get(note_id)
        if first is not None:
            same = first[0] == digest
            return _quarantine(
                source,
                locator,
                note_id,
                QuarantineReason.DUPLICATE_RECORD if same else QuarantineReason.DUPLICATE_NOTE_ID,
                (
                    f"same note_id and identical text already accepted from {first[1]}"
                    if same
                    else f"note_id already accepted from {first[1]} with different text"
                ),
            )
        self._seen[note_id] = (digest, where)
        return Note(
            note_id=note_id,
            text=text,
            source=source,
            locator=locator,
            content_sha256=digest.hex(),
        )


def _quarantine(
    source: str,
    locator: int | None,
    note_id: str | None,
    reason: QuarantineReason,
    detail: str,
    raw_sha256: str | None = None,
) -> QuarantinedRecord:
    return QuarantinedRecord(source, locator, note_id, reason, detail, raw_sha256)


def _with_raw_sha(record: Note | QuarantinedRecord, raw_sha: str) -> Note | QuarantinedRecord:
    if isinstance(record, QuarantinedRecord) and record.raw_sha256 is None:
        return replace(record, raw_sha256=raw_sha)
    return record


class _RowTooLong(Exception):
    """A CSV row grew past its cap; the parser state is lost, so the rest of the file is too."""


class _CappedLines:
    """Lines of a text stream for csv.reader, read in bounded pieces, at most `cap` per row.

    A row may span several physical lines (quoted newlines); `start_row` resets the count.
    Characters are counted, which bounds memory at 4 x `cap` bytes.
    """

    def __init__(self, stream: io.TextIOBase, cap: int) -> None:
        self._stream = stream
        self._cap = cap
        self._used = 0

    def start_row(self) -> None:
        self._used = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = self._stream.readline(self._cap - self._used + 1)
        if not line:
            raise StopIteration
        self._used += len(line)
        if self._used > self._cap:
            raise _RowTooLong(f"has more than {self._cap} characters")
        return line


_JSON_TYPE_NAMES = {bool: "boolean", int: "number", float: "number", str: "string"}


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


class NoteStream:
    """Single-pass stream of records; `summary` is final once iteration has finished."""

    def __init__(self, files: list[InputFile], reader: NoteReader) -> None:
        self.files = files
        self._reader = reader
        self._started = False

    @property
    def summary(self) -> ReadSummary:
        return self._reader.summary

    def __iter__(self) -> Iterator[Note | QuarantinedRecord]:
        if self._started:
            raise RuntimeError("a NoteStream can be iterated only once")
        self._started = True
        yield from self._reader.read(self.files)
        self._reader.summary.check()

    def collect(self) -> NoteBatch:
        notes: list[Note] = []
        quarantined: list[QuarantinedRecord] = []
        for record in self:
            if isinstance(record, Note):
                notes.append(record)
            else:
                quarantined.append(record)
        return NoteBatch(notes, quarantined, self.summary)


def read_notes(
    paths: PathInput,
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    normalise: bool = True,
) -> NoteStream:
    """Stream every record under `paths` as a Note or QuarantinedRecord.

    Files are discovered eagerly (missing paths raise `FileNotFoundError` here); records are
    read lazily, one file and one line/row at a time, so memory stays bounded by the largest
    single note plus the per-run duplicate index. Use ``.collect()`` for small inputs.
    """
    return NoteStream(discover_files(paths), NoteReader(max_chars=max_chars, normalise=normalise))
