"""Generates the SYNTHETIC extra samples of `clinical-ner local run` (no real patient data).

Written by us for the local demo and tests, from the templates of `make_samples.py`:

- ``synthetic_notes_bad.jsonl``: deliberately bad records (malformed JSON, a missing field, an
  empty text, a non-string text, an invalid note_id, a conflicting duplicate note_id) that the
  validate job must quarantine, never drop silently.
- ``synthetic_notes_reference.jsonl``: 220 in-distribution notes, the first production window
  of a model version (>= ``reference_min_notes``: it becomes the drift reference).
- ``synthetic_notes_window.jsonl``: 60 further in-distribution notes (expected drift: none).
- ``synthetic_notes_shifted.jsonl``: 60 notes from "another clinic": in half of them one
  sentence names conditions and drugs the training data never shows (vocabulary shift, and
  the model is less sure of those entities); expected drift: moderate (retrain).

Regenerate with ``python make_local_samples.py`` (deterministic).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

try:  # run as a script from this directory, or imported as a package module
    from make_samples import TEMPLATES, _fill  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - imported as clinical_ner.samples.make_local_samples
    from clinical_ner.samples.make_samples import TEMPLATES, _fill

HEADER = "SYNTHETIC sample written for clinical-ner local mode; not real patient data."

# Vocabulary the training samples never use (the shifted window's "new clinic").
SHIFTED_CONDITIONS = [
    "nephrolithiasis",
    "Lyme disease",
    "sarcoidosis",
    "pancreatitis",
    "diverticulitis",
    "herpes zoster",
    "benign prostatic hyperplasia",
    "plantar fasciitis",
]
SHIFTED_DRUGS = [
    "apixaban",
    "tamsulosin",
    "doxycycline",
    "valacyclovir",
    "pregabalin",
    "ondansetron",
    "empagliflozin",
    "hydroxychloroquine",
]


def _shifted_sentence(rng: random.Random) -> str:
    """A sentence of the usual kinds naming a condition and a drug never seen in training."""
    template = rng.choice([t for t in TEMPLATES if "{D}" in t and "{T}" in t])
    text = template.replace("{D}", rng.choice(SHIFTED_CONDITIONS)).replace(
        "{T}", rng.choice(SHIFTED_DRUGS)
    )
    return text[0].upper() + text[1:]


def in_distribution_notes(prefix: str, count: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    notes = []
    for i in range(count):
        sentences = [_fill(rng.choice(TEMPLATES), rng)["text"] for _ in range(rng.randint(3, 8))]
        notes.append({"note_id": f"{prefix}-{i:03d}", "text": " ".join(sentences)})
    return notes


def shifted_notes(count: int, seed: int, share: float = 0.5) -> list[dict[str, str]]:
    """The usual note shape; in about `share` of the notes one sentence comes from another
    clinic: it names a condition and a drug the training data never shows."""
    rng = random.Random(seed)
    notes = []
    for i in range(count):
        sentences = [_fill(rng.choice(TEMPLATES), rng)["text"] for _ in range(rng.randint(3, 8))]
        if rng.random() < share:
            sentences[rng.randrange(len(sentences))] = _shifted_sentence(rng)
        notes.append({"note_id": f"synthetic-shift-{i:03d}", "text": " ".join(sentences)})
    return notes


def bad_records() -> list[str]:
    """Raw lines (not all JSON): each must land in quarantine with its reason."""
    ok = "Assessment: asthma. Plan: continue albuterol and follow up in 3 months."
    return [
        '{"note_id": "synthetic-bad-001", "text": "Assessment: gout. Plan: ',  # malformed_json
        json.dumps({"note_id": "synthetic-bad-002"}),  # missing_field (text)
        json.dumps({"note_id": "synthetic-bad-003", "text": "   "}),  # empty_text
        json.dumps({"note_id": "synthetic-bad-004", "text": 42}),  # invalid_text_type
        json.dumps({"note_id": "bad id with spaces/..", "text": ok}),  # invalid_note_id
        json.dumps({"note_id": "synthetic-bad-006", "text": ok}),
        json.dumps({"note_id": "synthetic-bad-006", "text": ok.replace("asthma", "gout")}),
        json.dumps(["synthetic-bad-008", ok]),  # not_an_object
    ]


def main() -> None:
    here = Path(__file__).parent

    def write(name: str, lines: list[str]) -> None:
        (here / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    write("synthetic_notes_bad.jsonl", bad_records())
    for name, notes in (
        ("synthetic_notes_reference.jsonl", in_distribution_notes("synthetic-ref", 220, 11)),
        ("synthetic_notes_window.jsonl", in_distribution_notes("synthetic-win", 60, 13)),
        ("synthetic_notes_shifted.jsonl", shifted_notes(60, 17)),
    ):
        write(name, [json.dumps(n) for n in notes])


if __name__ == "__main__":
    main()
