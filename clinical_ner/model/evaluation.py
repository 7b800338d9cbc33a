"""Strict entity-level scoring (exact span and type, micro-averaged) and calibration error."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

SpanKey = tuple[int, int, str]


@dataclass
class LabelCounts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "p": self.precision,
            "r": self.recall,
            "f": self.f1,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "support": self.tp + self.fn,
        }


@dataclass
class EntityScores:
    """Micro-averaged strict scores over all labels plus per-label counts."""

    total: LabelCounts = field(default_factory=LabelCounts)
    per_label: dict[str, LabelCounts] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "ents_p": self.total.precision,
            "ents_r": self.total.recall,
            "ents_f": self.total.f1,
            "tp": self.total.tp,
            "fp": self.total.fp,
            "fn": self.total.fn,
            "per_label": {label: c.as_dict() for label, c in sorted(self.per_label.items())},
        }


def score_entities(
    gold: Sequence[Iterable[SpanKey]], predicted: Sequence[Iterable[SpanKey]]
) -> EntityScores:
    """Compare gold and predicted (start, end, label) sets document by document.

    A prediction counts only if start, end and label all match a gold entity; gold entities of
    labels the model does not know are simply never matched, so they count as misses.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold documents but {len(predicted)} predictions")
    scores = EntityScores()
    for gold_doc, pred_doc in zip(gold, predicted, strict=True):
        gold_set, pred_set = set(gold_doc), set(pred_doc)
        for key in gold_set | pred_set:
            counts = scores.per_label.setdefault(key[2], LabelCounts())
            if key in gold_set and key in pred_set:
                counts.tp += 1
                scores.total.tp += 1
            elif key in pred_set:
                counts.fp += 1
                scores.total.fp += 1
            else:
                counts.fn += 1
                scores.total.fn += 1
    return scores


def _bins(
    confidences: Sequence[float], correct: Sequence[bool], bins: int
) -> list[tuple[int, float, int]]:
    """Per equal-width bin: (count, sum of confidences, hits); 1.0 falls in the last bin."""
    if len(confidences) != len(correct):
        raise ValueError("confidences and correctness flags differ in length")
    table = [(0, 0.0, 0)] * bins
    for conf, ok in zip(confidences, correct, strict=True):
        if not 0.0 <= conf <= 1.0:
            raise ValueError(f"confidence {conf} outside [0, 1]")
        index = min(int(conf * bins), bins - 1)
        count, total, hits = table[index]
        table[index] = (count + 1, total + conf, hits + int(ok))
    return table


def expected_calibration_error(
    confidences: Sequence[float], correct: Sequence[bool], bins: int = 10
) -> float:
    """ECE with equal-width bins: the support-weighted mean |accuracy - confidence| per bin."""
    table = _bins(confidences, correct, bins)
    n = len(confidences)
    return sum(abs(hits - total) / n for count, total, hits in table if count)


def reliability_table(
    confidences: Sequence[float], correct: Sequence[bool], bins: int = 10
) -> list[dict[str, float | int]]:
    """Per non-empty bin: count, mean confidence and accuracy, for reports and plots."""
    return [
        {
            "bin_low": i / bins,
            "bin_high": (i + 1) / bins,
            "count": count,
            "mean_confidence": total / count,
            "accuracy": hits / count,
        }
        for i, (count, total, hits) in enumerate(_bins(confidences, correct, bins))
        if count
    ]
