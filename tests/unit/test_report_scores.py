"""The local run's report shows per-label P/R/F1 with support, labels from the model's metadata."""

from __future__ import annotations

from clinical_ner_local.report import _scores_section


def _counts(tp: int, fp: int, fn: int) -> dict[str, float | int]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"p": p, "r": r, "f": f, "tp": tp, "fp": fp, "fn": fn, "support": tp + fn}


def _split(per_label: dict[str, dict]) -> dict:
    tp = sum(c["tp"] for c in per_label.values())
    fp = sum(c["fp"] for c in per_label.values())
    fn = sum(c["fn"] for c in per_label.values())
    total = _counts(tp, fp, fn)
    return {"ents_p": total["p"], "ents_r": total["r"], "ents_f": total["f"], "tp": tp, "fn": fn}


def test_support_per_label_and_split_and_what_the_scores_mean() -> None:
    dev = {"DISEASE": _counts(8, 2, 2), "SYMPTOM": _counts(3, 1, 4)}
    test = {"DISEASE": _counts(5, 5, 0)}  # no SYMPTOM in test: support 0, not a missing row
    metrics = {
        "labels": ["SYMPTOM", "DISEASE"],
        "dev": {**_split(dev), "per_label": dev},
        "test": {**_split(test), "per_label": test},
    }
    text = "\n".join(_scores_section(metrics, {"dev": 4, "test": 3}))
    assert "| label | dev P | dev R | dev F1 | dev support | test P |" in text
    assert "| DISEASE | 0.800 | 0.800 | 0.800 | 10 | 0.500 | 1.000 | 0.667 | 5 |" in text
    assert "| SYMPTOM | 0.750 | 0.429 | 0.545 | 7 | 0.000 | 0.000 | 0.000 | 0 |" in text
    assert "| all (micro) | 0.786 | 0.647 | 0.710 | 17 |" in text
    assert "exactly" in text and "SYNTHETIC" in text and "(dev 4 docs, test 3 docs)" in text


def test_labels_come_from_the_model_not_from_the_scores() -> None:
    dev = {"DISEASE": _counts(1, 0, 0), "OTHER": _counts(0, 0, 3)}
    text = "\n".join(_scores_section({"labels": ["DISEASE"], "dev": {"per_label": dev}}))
    assert "| DISEASE |" in text and "OTHER" not in text
    missing = "\n".join(_scores_section({"dev": {"per_label": dev}}))
    assert "not shown" in missing and "labels" in missing
