"""Writes the SYNTHETIC reviewer's final annotations of the shifted window (review-loop demo).

SYNTHETIC: the "reviewer" is the annotation guideline applied as a dictionary. Every mention
annotated in ``synthetic_clinical_notes.jsonl`` (one label per mention string) is marked at
every word-bounded occurrence in each note of ``synthetic_clinical_shifted.jsonl``, longest
first, without overlaps. The result is appended to ``synthetic_review_corrections.jsonl`` as
``{"note_id", "source", "note_sha256", "seconds_spent", "final": [[start, end, LABEL]]}``:
what the note's annotation must be after review, whatever the model found (the scripted
reviewer in ``clinical_ner_local.scripted_reviewer`` turns it into accept / reject / relabel /
span fix / add decisions). Code-point offsets into the note as stored. Deterministic; the
hand-written lines at the top of the file are kept. Run ``python make_review_corrections.py``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

HERE = Path(__file__).parent
ANNOTATED = HERE / "synthetic_clinical_notes.jsonl"
WINDOW = HERE / "synthetic_clinical_shifted.jsonl"
CORRECTIONS = HERE / "synthetic_review_corrections.jsonl"
MARKER = '{"_comment": "SYNTHETIC final annotations of synthetic_clinical_shifted.jsonl'


def guideline_dictionary() -> dict[str, str]:
    """Mention string -> label, for mentions annotated with one label only."""
    seen: dict[str, set[str]] = {}
    for line in ANNOTATED.read_text(encoding="utf-8").splitlines():
        doc = json.loads(line)
        for start, end, label in doc["label"]:
            seen.setdefault(doc["text"][start:end], set()).add(label)
    return {m: next(iter(ls)) for m, ls in seen.items() if len(ls) == 1 and len(m) >= 3}


def final_spans(text: str, dictionary: dict[str, str]) -> list[list[object]]:
    """Every word-bounded occurrence of a dictionary mention, longest first, no overlaps."""
    taken = [False] * len(text)
    spans = []
    for mention in sorted(dictionary, key=lambda m: (-len(m), m)):
        for match in re.finditer(rf"(?<!\w){re.escape(mention)}(?!\w)", text):
            s, e = match.span()
            if not any(taken[s:e]):
                taken[s:e] = [True] * (e - s)
                spans.append([s, e, dictionary[mention]])
    return sorted(spans)


def build() -> str:
    """The corrections file: the hand-written lines, then one line per shifted-window note."""
    kept = [
        line
        for line in CORRECTIONS.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith(MARKER) and '"source": ' not in line
    ]
    dictionary = guideline_dictionary()
    lines = [
        *kept,
        MARKER + " (clinical_ner/samples/make_review_corrections.py): the guideline's "
        'dictionary applied to each note; seconds_spent is synthetic too."}',
    ]
    for raw in WINDOW.read_text(encoding="utf-8").splitlines():
        note = json.loads(raw)
        sha = hashlib.sha256(note["text"].encode("utf-8")).hexdigest()
        record = {
            "note_id": note["note_id"],
            "source": WINDOW.name,
            "note_sha256": sha,
            "seconds_spent": 45 + int(sha[:4], 16) % 75,
            "final": final_spans(note["text"], dictionary),
        }
        lines.append(json.dumps(record))
    return "".join(f"{line}\n" for line in lines)


def main() -> None:
    CORRECTIONS.write_text(build(), encoding="utf-8")


if __name__ == "__main__":
    main()
