"""Shared by the review tests: SYNTHETIC notes (astral characters, combining marks), a
dictionary predictor, and extraction output written by the real `run_extraction`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from clinical_ner.data.extraction import run_extraction
from clinical_ner.model.enrichment import Enricher, built_enrichment_dir
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


@cache
def _enricher() -> Enricher:
    return Enricher.load(built_enrichment_dir())


class DictionaryPredictor:
    """A `Predictor` that finds LEXICON words (exact case) in the text it is given.

    The entities get the product's real details (section, traits, codes, drug, attributes):
    "no fever" is negated by the real rules, as the LEXICON says.
    """

    version = "clinical-ner-aaaaaaaaaaaa"
    labels = LABELS

    def predict(self, texts: Iterable[str], batch_size: int = 64) -> Iterator[list]:
        for text in texts:
            spans = []
            for word, (label, *_) in LEXICON.items():
                start = text.find(word)
                if start >= 0:
                    spans.append((start, start + len(word), label))
            spans.sort()
            found = []
            for (start, end, label), details in zip(
                spans, _enricher().details(text, spans), strict=True
            ):
                word = text[start:end]
                assert details.has("negated") == LEXICON[word][2], word
                found.append(
                    PredictedEntity(start, end, label, word, LEXICON[word][1], 0.0, details)
                )
            yield found


def write_notes(path: Path) -> Path:
    path.write_text("".join(json.dumps(n, ensure_ascii=False) + "\n" for n in NOTES), "utf-8")
    return path


def make_extraction(root: Path) -> tuple[Path, Path]:
    """(extract output dir, notes file) for the SYNTHETIC notes above."""
    notes = write_notes(root / "notes.jsonl")
    out = root / "out"
    run_extraction(DictionaryPredictor(), [notes], out, now=datetime(2025, 3, 4, 10, tzinfo=UTC))
    return out, notes
