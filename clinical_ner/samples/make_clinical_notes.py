"""Builds the SYNTHETIC clinical-note samples (annotated notes and drift windows) from markup.

SYNTHETIC: every note in ``synthetic_clinical_notes_source.txt`` was written in-house for the
clinical-ner demo and tests. The patients, clinicians, dates and events are invented; no text
comes from a real record or from a licensed corpus. Not real patient data.

The source holds notes with inline markup ``[mention|D]`` (D = DISEASE, S = SYMPTOM,
T = TREATMENT), annotated by ``shared/data/clinical-notes-annotated/GUIDELINE.md``. This
script strips the markup, computes character offsets and writes:

- ``synthetic_clinical_notes.jsonl``: one annotated note a line, ``note_id``, ``text``,
  ``label`` ([start, end, LABEL]), ``split`` (train/dev/test), ``meta`` = "synthetic".
- ``synthetic_clinical_reference.jsonl`` (220), ``synthetic_clinical_window.jsonl`` (60):
  unannotated in-distribution notes, recombined section by section from the train notes.
- ``synthetic_clinical_shifted.jsonl`` (60): unannotated in-distribution notes in which each
  section is, with probability 0.15, replaced by a section "from another clinic" (the separate
  SHIFTED pool: other specialties, vocabulary the annotated notes never use). The share is
  chosen so the window drifts *moderately* (OOV rate +0.025, note-length PSI 0.18 against the
  reference window): the demo's drift monitor then starts a retraining, as a moderate shift in
  production would. Whole notes from the pool drift severely (OOV +0.24).
- ``synthetic_notes_bad.jsonl``: 8 deliberately bad note records (malformed JSON, a missing
  field, an empty text, a non-string text, an invalid note_id, a conflicting duplicate
  note_id, a non-object) that the validate job must quarantine (7 of the 8 lines), never drop.

Deterministic: regenerating gives byte-identical files. Run ``python make_clinical_notes.py``.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
SOURCE = HERE / "synthetic_clinical_notes_source.txt"
ANNOTATED = "synthetic_clinical_notes.jsonl"
REFERENCE = "synthetic_clinical_reference.jsonl"
WINDOW = "synthetic_clinical_window.jsonl"
SHIFTED = "synthetic_clinical_shifted.jsonl"
BAD = "synthetic_notes_bad.jsonl"

LABELS = {"D": "DISEASE", "S": "SYMPTOM", "T": "TREATMENT"}
SPLITS = ("train", "dev", "test")
MIN_WORDS, MAX_WORDS = 120, 350

_BLOCK = re.compile(r"^=== (?P<id>[a-z0-9-]+) (?P<split>train|dev|test|shifted) (?P<kind>\S+) ===$")
_MARK = re.compile(r"\[(?P<span>[^\[\]|\n]+)\|(?P<label>[DST])\]")
# A section starts at a line opening with an upper-case header ending in a colon.
_HEADER = re.compile(r"^(?P<name>[A-Z][A-Z0-9 /&'()-]{2,60}):", re.MULTILINE)
_AGE = re.compile(r"\b(\d{2})-year-old\b")


class MarkupError(ValueError):
    """A source note whose markup or text breaks the annotation rules (names the note id)."""


@dataclass(frozen=True)
class Note:
    note_id: str
    split: str
    kind: str
    text: str
    label: tuple[tuple[int, int, str], ...]


def _read_blocks(source: str) -> list[tuple[str, str, str, str]]:
    """(note_id, split, kind, raw text) of each block; lines starting with "# " are comments."""
    blocks: list[tuple[str, str, str, list[str]]] = []
    for line in source.splitlines():
        match = _BLOCK.match(line)
        if line.startswith("# ") or line == "#":
            continue
        if match:
            blocks.append((match["id"], match["split"], match["kind"], []))
        elif blocks:
            blocks[-1][3].append(line.rstrip())
        elif line.strip():
            raise MarkupError("text before the first note block")
    return [(i, s, k, "\n".join(lines).strip("\n")) for i, s, k, lines in blocks]


def parse_markup(note_id: str, raw: str) -> tuple[str, tuple[tuple[int, int, str], ...]]:
    """Strips ``[mention|L]`` markup; returns the text and the exact, checked spans."""
    parts: list[str] = []
    spans: list[tuple[int, int, str]] = []
    pos = length = 0
    for match in _MARK.finditer(raw):
        before = raw[pos : match.start()]
        parts.append(before)
        length += len(before)
        mention = match["span"]
        spans.append((length, length + len(mention), LABELS[match["label"]]))
        parts.append(mention)
        length += len(mention)
        pos = match.end()
    parts.append(raw[pos:])
    text = "".join(parts)
    for char in "[]|":
        if char in text:
            raise MarkupError(f"{note_id}: stray {char!r} (broken markup)")
    for start, end, _ in spans:
        check_span(note_id, text, start, end)
    return text, tuple(spans)


def check_span(note_id: str, text: str, start: int, end: int) -> None:
    """A mention starts and ends on a word boundary, on a letter or digit."""
    mention = text[start:end]
    if not mention or not mention[0].isalnum() or not mention[-1].isalnum():
        raise MarkupError(f"{note_id}: span {start}-{end} has edge whitespace/punctuation")
    if (start > 0 and text[start - 1].isalnum()) or (end < len(text) and text[end].isalnum()):
        raise MarkupError(f"{note_id}: span {start}-{end} is not on a word boundary")


def load_notes(source: str) -> tuple[list[Note], list[str]]:
    """Annotated notes (checked) and the unannotated texts of the shifted pool."""
    notes: list[Note] = []
    shifted: list[str] = []
    seen_ids: set[str] = set()
    seen_texts: set[str] = set()
    for note_id, split, kind, raw in _read_blocks(source):
        if note_id in seen_ids:
            raise MarkupError(f"{note_id}: duplicate note id")
        seen_ids.add(note_id)
        text, spans = parse_markup(note_id, raw)
        if split == "shifted":
            if spans:
                raise MarkupError(f"{note_id}: the shifted pool is unannotated")
            shifted.append(text)
            continue
        words = len(text.split())
        if not MIN_WORDS <= words <= MAX_WORDS:
            raise MarkupError(f"{note_id}: {words} words, outside {MIN_WORDS}-{MAX_WORDS}")
        if text in seen_texts:
            raise MarkupError(f"{note_id}: duplicate text")
        seen_texts.add(text)
        notes.append(Note(note_id, split, kind, text, spans))
    return notes, shifted


def sections(text: str) -> list[tuple[str, str]]:
    """(header name or "", section text) in order; the text before the first header is ""."""
    starts = [m.start() for m in _HEADER.finditer(text)]
    if not starts or starts[0] != 0:
        starts = [0, *starts]
    out = []
    for begin, finish in zip(starts, [*starts[1:], len(text)], strict=True):
        chunk = text[begin:finish].strip("\n")
        match = _HEADER.match(chunk)
        out.append((match["name"] if match else "", chunk))
    return out


def _vary_age(text: str, rng: random.Random) -> str:
    return _AGE.sub(lambda _m: f"{rng.randint(24, 91)}-year-old", text)


def recombined(
    prefix: str, count: int, seed: int, pool: list[str], exclude: set[str], extra: int = 0
) -> list[dict[str, str]]:
    """`count` notes: a base note whose sections are swapped, with probability 0.6 each, for a
    same-header section of another pool note; `extra` further random sections make them longer."""
    rng = random.Random(seed)
    parsed = [sections(t) for t in pool]
    by_header: dict[str, list[str]] = {}
    for secs in parsed:
        for name, chunk in secs:
            by_header.setdefault(name, []).append(chunk)
    every = [chunk for secs in parsed for name, chunk in secs if name]
    out: list[dict[str, str]] = []
    seen = set(exclude)
    while len(out) < count:
        chunks = []
        for name, chunk in rng.choice(parsed):
            alternatives = by_header.get(name, [])
            chunks.append(rng.choice(alternatives) if name and rng.random() < 0.6 else chunk)
        for _ in range(extra):
            chunk = rng.choice(every)
            if chunk not in chunks:
                chunks.insert(rng.randint(1, len(chunks)), chunk)
        text = _vary_age("\n".join(chunks), rng)
        if text in seen:
            continue
        seen.add(text)
        out.append({"note_id": f"{prefix}-{len(out):03d}", "text": text})
    return out


def shifted_window(
    count: int, seed: int, pool: list[str], foreign_pool: list[str], exclude: set[str], share: float
) -> list[dict[str, str]]:
    """In-distribution notes (`recombined` from `pool`) whose sections after the first are each
    replaced, with probability `share`, by a random section of `foreign_pool`."""
    rng = random.Random(seed)
    foreign = [chunk for text in foreign_pool for name, chunk in sections(text) if name]
    out = []
    for record in recombined("syn-clin-shift", count, seed, pool, exclude):
        chunks = [chunk for _, chunk in sections(record["text"])]
        for i in range(1, len(chunks)):
            if rng.random() < share:
                # a foreign section of about the same length: the shift is in the words, so
                # the note-length signal stays quiet
                alike = [f for f in foreign if 0.7 <= len(f) / max(len(chunks[i]), 1) <= 1.3]
                chunks[i] = rng.choice(alike or foreign)
        out.append({"note_id": record["note_id"], "text": "\n".join(chunks)})
    return out


def bad_records() -> list[str]:
    """Raw lines (not all JSON): each bad one must land in quarantine with its reason."""
    ok = "Assessment: asthma. Plan: continue albuterol and follow up in 3 months."
    return [
        '{"note_id": "synthetic-bad-001", "text": "Assessment: gout. Plan: ',  # malformed_json
        json.dumps({"note_id": "synthetic-bad-002"}),  # missing_field (text)
        json.dumps({"note_id": "synthetic-bad-003", "text": "   "}),  # empty_text
        json.dumps({"note_id": "synthetic-bad-004", "text": 42}),  # invalid_text_type
        json.dumps({"note_id": "bad id with spaces/..", "text": ok}),  # invalid_note_id
        json.dumps({"note_id": "synthetic-bad-006", "text": ok}),  # kept: the first of the pair
        json.dumps({"note_id": "synthetic-bad-006", "text": ok.replace("asthma", "gout")}),
        json.dumps(["synthetic-bad-008", ok]),  # not_an_object
    ]


def build(source: str) -> dict[str, str]:
    """File name -> file content of every generated file."""
    notes, shifted_pool = load_notes(source)
    records = [
        json.dumps(
            {
                "note_id": n.note_id,
                "text": n.text,
                "label": [list(s) for s in n.label],
                "split": n.split,
                "meta": "synthetic",
            }
        )
        for n in notes
    ]
    train = [n.text for n in notes if n.split == "train"]
    annotated = {n.text for n in notes}
    reference = recombined("syn-clin-ref", 220, 101, train, annotated)
    window = recombined("syn-clin-win", 60, 202, train, annotated | {r["text"] for r in reference})
    taken = annotated | {r["text"] for r in reference} | {r["text"] for r in window}
    shifted = shifted_window(60, 303, train, shifted_pool, taken, share=0.4)
    return {
        ANNOTATED: "".join(r + "\n" for r in records),
        REFERENCE: "".join(json.dumps(r) + "\n" for r in reference),
        WINDOW: "".join(json.dumps(r) + "\n" for r in window),
        SHIFTED: "".join(json.dumps(r) + "\n" for r in shifted),
        BAD: "".join(line + "\n" for line in bad_records()),
    }


def main() -> None:
    for name, content in build(SOURCE.read_text(encoding="utf-8")).items():
        (HERE / name).write_text(content, encoding="utf-8")


if __name__ == "__main__":
    main()
