"""Shared by the review tests: SYNTHETIC notes (astral characters, combining marks), a
dictionary predictor, and extraction output written by the real `run_extraction`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from clinical_ner.data.extraction import run_extraction
from clinical_ner.model.inference import PredictedEntity

SECRET = "ZEBRAFINCH-SECRET"  # a distinctive word in a note: it must never reach a log line
LABELS = ("DISEASE", "TREATMENT")
# word -> (label, confidence, negated); the predictor marks every occurrence.
LEXICON = {
    "asthma": ("DISEASE", 0.42, False),
    "salbutamol": ("TREATMENT", 0.91, False),
    "fever": ("DISEASE", 0.55, True),
    "pneumonia": ("DISEASE", 0.35, False),
    "amoxicillin": ("TREATMENT", 0.62, False),
}
NOTES = [
    {
        "note_id": "rev-001",
        # emoji (astral, 2 UTF-16 units each) before the mentions; a combining mark inside.
        "text": "😷🤒 Patient with asthma and no fever; start salbutamol. Cafe\u0301 "
        f"visit. {SECRET} diabetes noted 👍.",
    },
    {"note_id": "rev-002", "text": "Suspected pneumonia, treated with amoxicillin. 🫁 ok."},
    {"note_id": "rev-003", "text": "Routine check, nothing found."},
]


class DictionaryPredictor:
    """A `Predictor` that finds LEXICON words (exact case) in the text it is given."""

    version = "clinical-ner-aaaaaaaaaaaa"
    labels = LABELS

    def predict(self, texts: Iterable[str], batch_size: int = 64) -> Iterator[list]:
        for text in texts:
            found = []
            for word, (label, conf, neg) in LEXICON.items():
                start = text.find(word)
                if start >= 0:
                    found.append(
                        PredictedEntity(start, start + len(word), label, word, conf, negated=neg)
                    )
            yield sorted(found, key=lambda e: e.start)


def write_notes(path: Path) -> Path:
    path.write_text("".join(json.dumps(n, ensure_ascii=False) + "\n" for n in NOTES), "utf-8")
    return path


def make_extraction(root: Path) -> tuple[Path, Path]:
    """(extract output dir, notes file) for the SYNTHETIC notes above."""
    notes = write_notes(root / "notes.jsonl")
    out = root / "out"
    run_extraction(DictionaryPredictor(), [notes], out, now=datetime(2025, 3, 4, 10, tzinfo=UTC))
    return out, notes
