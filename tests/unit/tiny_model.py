"""A tiny NER model trained in-test on the bundled synthetic annotations (few steps, ~10 s).

The `tiny_model_dir` fixture (conftest.py) trains it once per session into a temp directory.
"""

from __future__ import annotations

from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[2] / "clinical_ner" / "samples"
ANNOTATIONS = SAMPLES / "synthetic_annotations.jsonl"
NOTES = SAMPLES / "synthetic_notes.jsonl"
STEPS = 80


def train_tiny(out: Path) -> Path:
    from clinical_ner.model.readers import read_annotations
    from clinical_ner.model.training import TrainingInputs, split_by_hash, train_model

    docs, report = read_annotations([ANNOTATIONS])
    train, dev = split_by_hash(docs, 0.15)
    train_model(
        TrainingInputs(train, dev, {str(ANNOTATIONS): "sha"}, {"train": report.as_dict()}),
        out,
        seed=3,
        overrides={"training.max_steps": STEPS},
        log=lambda _: None,
    )
    return out
