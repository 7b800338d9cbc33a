"""The JSON Lines a Batch Transform of the `serve` container answers, built from a model (tests)."""

from __future__ import annotations

import json

from clinical_ner.data.notes import Note
from clinical_ner.model.inference import NerModel


def transform_answer_lines(model: NerModel, notes: list[Note]) -> list[str]:
    """One answer line per note, in the shape `serve` writes (`publish.parse_transform_output`)."""
    lines = []
    for note, ents in zip(notes, model.predict([n.text for n in notes]), strict=True):
        entities = [
            {
                "start": e.start,
                "end": e.end,
                "label": e.label,
                "text": e.text,
                "confidence": e.confidence,
                "negated": e.negated,
                **e.details.to_json(),
            }
            for e in ents
        ]
        record = {
            "note_id": note.note_id,
            "model_version": model.version,
            "note_sha256": note.content_sha256,
            "entities": entities,
        }
        lines.append(json.dumps(record))
    return lines
