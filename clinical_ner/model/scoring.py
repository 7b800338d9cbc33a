"""Running a model over annotated docs and scoring it (strict entity match, calibration)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from clinical_ner.model.corpus import AnnotatedDoc
from clinical_ner.model.evaluation import expected_calibration_error, score_entities
from clinical_ner.model.inference import NerModel


def evaluate_docs(
    model: NerModel, docs: Sequence[AnnotatedDoc], batch_size: int = 128
) -> dict[str, object]:
    """Strict micro P/R/F (exact span and label) plus per-label scores, speed and ECE.

    The model tokenizes each text itself, exactly as it does on raw notes; for the token
    corpora the text is the corpus tokens joined by spaces, which the model's tokenizer splits
    back into the corpus's own tokens, so spans are compared on the corpus's tokens.
    """
    started = time.perf_counter()
    predictions = list(model.predict([d.text for d in docs], batch_size=batch_size))
    seconds = time.perf_counter() - started
    gold = [[(e.start, e.end, e.label) for e in d.entities] for d in docs]
    predicted = [[(p.start, p.end, p.label) for p in doc_preds] for doc_preds in predictions]
    scores = score_entities(gold, predicted).as_dict()
    gold_sets = [set(g) for g in gold]
    confidences = [p.confidence for doc_preds in predictions for p in doc_preds]
    correct = [
        (p.start, p.end, p.label) in g
        for doc_preds, g in zip(predictions, gold_sets, strict=True)
        for p in doc_preds
    ]
    words = sum(len(d.tokens) for d in docs)
    per_label = scores["per_label"]
    assert isinstance(per_label, dict)
    for label in model.labels:
        per_label.setdefault(
            label, {"p": 0.0, "r": 0.0, "f": 0.0, "tp": 0, "fp": 0, "fn": 0, "support": 0}
        )
    return {
        **scores,
        "docs": len(docs),
        "words": words,
        "seconds": round(seconds, 3),
        "words_per_second": round(words / seconds, 1) if seconds > 0 else 0.0,
        "model_version": model.version,
        "model_labels": list(model.labels),
        "unknown_gold_labels": sorted({e[2] for g in gold for e in g} - set(model.labels)),
        "ece": expected_calibration_error(confidences, correct),
    }
