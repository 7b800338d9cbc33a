"""Readers for annotated corpora (IOB/CoNLL, paired sent/label files, doccano JSONL).

Every reader returns `AnnotatedDoc`s (text, tokens, character-offset entities) plus a
`ReadReport` that counts each repair and drop, so known dirt in real corpora is handled
visibly. Errors name the file and line; they never quote corpus text, because annotation
sets built from clinical notes are PHI.

Tag rules (documented in docs/annotation-formats.md):
- IOB2 (``B-X``/``I-X``/``O``), IO (``X``/``O``, an entity is a maximal run of one label)
  and BIOES/BILOU prefixes are accepted.
- An ``I-X`` that does not continue an entity of type X starts a new entity (the conlleval
  convention); each occurrence is counted in ``ReadReport.orphan_inside_tags``.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import pairwise
from pathlib import Path

from clinical_ner.model.corpus import AnnotatedDoc, Entity, ReadReport, Token
from clinical_ner.model.tokenization import tokenize_offsets

DEFAULT_LABEL_MAP: dict[str, str] = {
    "D": "DISEASE",
    "T": "TREATMENT",
    "Disease": "DISEASE",
    "Chemical": "CHEMICAL",
    "DIS": "DISEASE",
    "TREAT": "TREATMENT",
    "SYMPTOM": "SYMPTOM",
}
# Mapping a corpus type to this drops its entities (e.g. --labels Chemical=O).
DROP_LABEL = "O"

# The BioText corpus begins sentences that need a second look with a literal "<TO_SEE>".
_REVIEW_MARKER = ("<", "TO_SEE", ">")
# UTF-8 read as Latin-1 ("Ã¶" for "ö"); BioText also has "Ã1/4" where "Ã¼" lost its "¼".
_MOJIBAKE = re.compile(r"[ÂÃ][\u0080-\u00bf]")
_MOJIBAKE_QUARTER = "Ã1/4"
# Line breaks are \r\n, \r and \n only: str.splitlines() also breaks at \x85 (in mojibake such
# as "Ã\x85" for "Å") and U+2028 (legal unescaped inside a JSON string).
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_LINE_BREAK_BYTES = re.compile(rb"\r\n|\r|\n")
# X_sent / X_label (also X_sents, X_sent.txt); not "X_sentences" or "X_labeled".
_SENT_NAME = re.compile(r"_sents?(?![a-z])")
_LABEL_NAME = re.compile(r"_labels?(?![a-z])")


class AnnotationFormat(StrEnum):
    AUTO = "auto"
    IOB = "iob"
    SENT_LABEL = "sent-label"
    JSONL = "jsonl"


class AnnotationFormatError(ValueError):
    """Malformed annotation input; the message names the file and line."""

    def __init__(self, path: Path | str, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


def parse_label_map(spec: str | None) -> dict[str, str]:
    """``"D=DISEASE,T=TREATMENT"`` -> mapping, layered over the defaults."""
    mapping = dict(DEFAULT_LABEL_MAP)
    if not spec:
        return mapping
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        source, sep, target = item.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise ValueError(f"bad label mapping {item!r}: expected SOURCE=TARGET")
        mapping[source.strip()] = target.strip()
    return mapping


@dataclass
class _LabelResolver:
    mapping: dict[str, str]

    def resolve(self, raw: str, path: Path, line: int) -> str | None:
        """Canonical label for a corpus type, None when mapped to O; unknown types raise."""
        if raw in self.mapping:
            target = self.mapping[raw]
        elif raw in self.mapping.values():
            target = raw
        else:
            known = sorted(set(self.mapping) | set(self.mapping.values()) - {DROP_LABEL})
            # The type is not quoted: in a mis-columned file it is corpus text.
            raise AnnotationFormatError(
                path,
                line,
                f"unknown entity type (known: {', '.join(known)}; map it with --labels TYPE=LABEL)",
            )
        return None if target == DROP_LABEL else target


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = len(_LINE_BREAK_BYTES.split(data[: exc.start]))
        raise AnnotationFormatError(
            path, line, f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None
    return text.removeprefix("\ufeff")


def _lines(text: str) -> list[str]:
    """Lines of `text` like str.splitlines(), but broken only at \r\n, \r and \n."""
    lines = _LINE_BREAK.split(text)
    if lines[-1] == "":
        lines.pop()
    return lines


def _repair_mojibake(token: str) -> str:
    fixed = token.replace(_MOJIBAKE_QUARTER, "ü")

    def undo(match: re.Match[str]) -> str:
        try:
            return match.group(0).encode("latin-1").decode("utf-8")
        except UnicodeError:
            return match.group(0)

    return _MOJIBAKE.sub(undo, fixed)


def _split_tag(tag: str, path: Path, line: int) -> tuple[str, str | None]:
    """(prefix, type) for a tag; prefix is one of B, I, E, S or O; bare types are IO tags."""
    if tag == "O":
        return "O", None
    if len(tag) > 2 and tag[1] == "-" and tag[0] in "BIESLU":
        prefix = {"L": "E", "U": "S"}.get(tag[0], tag[0])
        return prefix, tag[2:]
    if not tag or any(c.isspace() for c in tag) or "-" in tag[:2]:
        raise AnnotationFormatError(
            path, line, "malformed tag (expected O, B-/I-/E-/S-/L-/U-TYPE or a bare TYPE)"
        )
    return "IO", tag


@dataclass
class _Sentence:
    tokens: list[str]
    tags: list[str]
    lines: list[int]


def _tags_to_token_spans(
    sentence: _Sentence, path: Path, resolver: _LabelResolver, report: ReadReport
) -> list[tuple[int, int, str | None]]:
    """Token-index spans [start, end) with canonical labels (None = dropped type)."""
    spans: list[tuple[int, int, str | None]] = []
    open_start: int | None = None
    open_type: str | None = None
    open_io = False

    def close(end: int) -> None:
        nonlocal open_start, open_type, open_io
        if open_start is not None and open_type is not None:
            line = sentence.lines[open_start]
            spans.append((open_start, end, resolver.resolve(open_type, path, line)))
        open_start, open_type, open_io = None, None, False

    for i, tag in enumerate(sentence.tags):
        prefix, etype = _split_tag(tag, path, sentence.lines[i])
        if prefix == "O":
            close(i)
        elif prefix == "IO":
            if not (open_io and open_type == etype):
                close(i)
                open_start, open_type, open_io = i, etype, True
        elif prefix in ("B", "S"):
            close(i)
            open_start, open_type = i, etype
            if prefix == "S":
                close(i + 1)
        else:  # I or E
            if open_start is None or open_io or open_type != etype:
                report.orphan_inside_tags += 1
                close(i)
                open_start, open_type = i, etype
            if prefix == "E":
                close(i + 1)
    close(len(sentence.tags))
    return spans


def _doc_from_tokens(
    sentence: _Sentence,
    path: Path,
    resolver: _LabelResolver,
    report: ReadReport,
    tag_path: Path | None = None,
) -> AnnotatedDoc | None:
    if tuple(sentence.tokens[: len(_REVIEW_MARKER)]) == _REVIEW_MARKER:
        report.review_markers_stripped += 1
        cut = len(_REVIEW_MARKER)
        sentence = _Sentence(sentence.tokens[cut:], sentence.tags[cut:], sentence.lines[cut:])
        # The marker's own tags must not leak an entity boundary into the sentence.
    if not sentence.tokens:
        report.empty_dropped += 1
        return None
    words = []
    for word in sentence.tokens:
        repaired = _repair_mojibake(word)
        if repaired != word:
            report.mojibake_tokens_repaired += 1
        words.append(repaired)
    tokens: list[Token] = []
    offset = 0
    for word in words:
        tokens.append(Token(word, offset, offset + len(word)))
        offset += len(word) + 1
    text = " ".join(words)
    entities = tuple(
        Entity(tokens[start].start, tokens[end - 1].end, label)
        for start, end, label in _tags_to_token_spans(sentence, tag_path or path, resolver, report)
        if label is not None
    )
    return AnnotatedDoc(text, tuple(tokens), entities, f"{path}:{sentence.lines[0]}")


def _token_tag_pairs(path: Path) -> Iterable[_Sentence]:
    current = _Sentence([], [], [])
    for number, raw in enumerate(_lines(_decode(path)), start=1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.startswith("-DOCSTART-"):
            if current.tokens:
                yield current
                current = _Sentence([], [], [])
            continue
        columns = line.split("\t")
        if len(columns) < 2:
            raise AnnotationFormatError(path, number, "expected 'token<TAB>tag'")
        token, tag = columns[0].strip(), columns[-1].strip()
        if not token:
            raise AnnotationFormatError(path, number, "empty token")
        current.tokens.append(token)
        current.tags.append(tag)
        current.lines.append(number)
    if current.tokens:
        yield current


def _read_iob(path: Path, resolver: _LabelResolver, report: ReadReport) -> list[AnnotatedDoc]:
    docs = []
    for sentence in _token_tag_pairs(path):
        report.docs_read += 1
        doc = _doc_from_tokens(sentence, path, resolver, report)
        if doc is not None:
            docs.append(doc)
    return docs


def label_path_for(sent_path: Path) -> Path:
    """``X_sent`` -> ``X_label`` (also ``X_sent.txt`` -> ``X_label.txt``)."""
    name = sent_path.name
    if "_sent" not in name:
        raise AnnotationFormatError(sent_path, None, "sent-label input must be the '_sent' file")
    head, _, tail = name.rpartition("_sent")
    return sent_path.with_name(f"{head}_label{tail}")


def _read_sent_label(
    path: Path, resolver: _LabelResolver, report: ReadReport
) -> list[AnnotatedDoc]:
    label_path = label_path_for(path)
    if not label_path.exists():
        raise AnnotationFormatError(path, None, f"paired label file {label_path} not found")
    if not label_path.is_file():  # a FIFO or device partner would block or never end
        raise AnnotationFormatError(label_path, None, "not a regular file")
    sent_lines = _lines(_decode(path))
    label_lines = _lines(_decode(label_path))
    docs = []
    current = _Sentence([], [], [])
    for index in range(max(len(sent_lines), len(label_lines))):
        number = index + 1
        token = sent_lines[index].strip() if index < len(sent_lines) else None
        tag = label_lines[index].strip() if index < len(label_lines) else None
        if token is None or tag is None:
            shorter = path if token is None else label_path
            raise AnnotationFormatError(
                shorter, number, f"ends early: {path.name} and {label_path.name} are misaligned"
            )
        if bool(token) != bool(tag):
            raise AnnotationFormatError(
                path,
                number,
                f"misaligned with {label_path.name}:{number} (one has a token, the other a "
                "sentence break)",
            )
        if not token:
            if current.tokens:
                report.docs_read += 1
                doc = _doc_from_tokens(current, path, resolver, report, label_path)
                if doc is not None:
                    docs.append(doc)
                current = _Sentence([], [], [])
            continue
        current.tokens.append(token)
        current.tags.append(tag)
        current.lines.append(number)
    if current.tokens:
        report.docs_read += 1
        doc = _doc_from_tokens(current, path, resolver, report, label_path)
        if doc is not None:
            docs.append(doc)
    return docs


def _jsonl_spans(record: dict, path: Path, number: int) -> list[tuple[int, int, str]]:
    key = "label" if "label" in record else "entities" if "entities" in record else None
    if key is None:
        return []
    raw_spans = record[key]
    if not isinstance(raw_spans, list):
        raise AnnotationFormatError(path, number, f"'{key}' must be a list of spans")
    spans = []
    for position, item in enumerate(raw_spans, start=1):
        if isinstance(item, dict):
            item = [
                item.get("start_offset", item.get("start")),
                item.get("end_offset", item.get("end")),
                item.get("label"),
            ]
        if (
            not isinstance(item, list | tuple)
            or len(item) != 3
            or not isinstance(item[0], int)
            or not isinstance(item[1], int)
            or isinstance(item[0], bool)
            or isinstance(item[1], bool)
            or not isinstance(item[2], str)
        ):
            raise AnnotationFormatError(  # the span itself is not quoted: it may hold text
                path,
                number,
                f"span {position} of '{key}' is not [start, end, 'LABEL'] with integer offsets",
            )
        spans.append((item[0], item[1], item[2]))
    return spans


def _read_jsonl(path: Path, resolver: _LabelResolver, report: ReadReport) -> list[AnnotatedDoc]:
    docs = []
    for number, line in enumerate(_lines(_decode(path)), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AnnotationFormatError(path, number, f"invalid JSON ({exc.msg})") from None
        except RecursionError:
            raise AnnotationFormatError(
                path, number, "JSON nested too deeply for the parser"
            ) from None
        except ValueError:  # an integer over sys.get_int_max_str_digits() digits
            raise AnnotationFormatError(
                path, number, f"JSON number has more than {sys.get_int_max_str_digits()} digits"
            ) from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise AnnotationFormatError(path, number, "expected an object with a string 'text'")
        report.docs_read += 1
        text = record["text"]
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            # A "\ud800" escape decodes to a lone surrogate that no UTF-8 output can hold.
            raise AnnotationFormatError(
                path, number, f"text contains an unpaired surrogate at character {exc.start}"
            ) from None
        if not text.strip():
            report.empty_dropped += 1
            continue
        entities = []
        for start, end, raw_label in sorted(_jsonl_spans(record, path, number)):
            if not 0 <= start < end <= len(text):
                raise AnnotationFormatError(
                    path,
                    number,
                    f"span [{start}, {end}] out of range for text of length {len(text)}",
                )
            label = resolver.resolve(raw_label, path, number)
            if label is not None:
                entities.append(Entity(start, end, label))
        for before, after in pairwise(entities):
            if after.start < before.end:
                raise AnnotationFormatError(
                    path,
                    number,
                    f"overlapping spans [{before.start}, {before.end}] and "
                    f"[{after.start}, {after.end}]",
                )
        tokens = tuple(Token(text[s:e], s, e) for s, e in tokenize_offsets(text))
        split = record.get("split")
        docs.append(
            AnnotatedDoc(
                text,
                tokens,
                tuple(entities),
                f"{path}:{number}",
                split=split if isinstance(split, str) else "",
            )
        )
    return docs


def detect_format(path: Path) -> AnnotationFormat:
    """Pick a reader by file name, then by content."""
    name = path.name.lower()
    if name.endswith((".jsonl", ".json")):
        return AnnotationFormat.JSONL
    if _SENT_NAME.search(name):
        return AnnotationFormat.SENT_LABEL
    if _LABEL_NAME.search(name):
        raise AnnotationFormatError(path, None, "pass the '_sent' file of a sent/label pair")
    first = next(
        (
            line
            for line in _lines(_decode(path))
            if line.strip() and not line.startswith("-DOCSTART-")  # as the IOB reader does
        ),
        "",
    )
    if first.lstrip().startswith("{"):
        return AnnotationFormat.JSONL
    if "\t" in first:
        return AnnotationFormat.IOB
    raise AnnotationFormatError(
        path,
        None,
        "cannot detect the format (expected token<TAB>tag lines, JSON lines, or an "
        "X_sent/X_label pair); pass --format",
    )


_READERS = {
    AnnotationFormat.IOB: _read_iob,
    AnnotationFormat.SENT_LABEL: _read_sent_label,
    AnnotationFormat.JSONL: _read_jsonl,
}


def read_annotations(
    paths: Sequence[Path | str],
    fmt: AnnotationFormat | str = AnnotationFormat.AUTO,
    labels: dict[str, str] | None = None,
    *,
    deduplicate: bool = True,
) -> tuple[list[AnnotatedDoc], ReadReport]:
    """Read annotated files into docs; duplicates are dropped (or only counted) and reported.

    With ``deduplicate=False`` (evaluation) duplicates are kept but still counted, so scores
    stay comparable with other systems evaluated on the same files.
    """
    resolver = _LabelResolver(labels if labels is not None else dict(DEFAULT_LABEL_MAP))
    report = ReadReport()
    fmt = AnnotationFormat(fmt)
    docs: list[AnnotatedDoc] = []
    for raw_path in paths:
        path = Path(raw_path)
        if not path.is_file():
            # is_file() follows symlinks and is False for FIFOs and devices, which are never
            # opened (a FIFO blocks, /dev/zero never ends).
            kind = "not a regular file" if path.exists() else "no such file"
            raise AnnotationFormatError(path, None, kind)
        file_format = detect_format(path) if fmt is AnnotationFormat.AUTO else fmt
        report.files.append(f"{path} ({file_format.value})")
        docs.extend(_READERS[file_format](path, resolver, report))
    kept: list[AnnotatedDoc] = []
    seen: dict[str, tuple[Entity, ...]] = {}
    for doc in docs:
        previous = seen.get(doc.text)
        if previous is None:
            seen[doc.text] = doc.entities
        else:
            report.duplicates_found += 1
            if previous != doc.entities:
                report.conflicting_duplicates += 1
            if deduplicate:
                report.duplicates_dropped += 1
                continue
        kept.append(doc)
    report.docs_kept = len(kept)
    for doc in kept:
        for entity in doc.entities:
            report.entities[entity.label] = report.entities.get(entity.label, 0) + 1
    return kept, report
