"""NegEx-style negation trait on hand-written clinical sentences."""

from __future__ import annotations

import pytest

from clinical_ner.model.traits import NEGATION, entity_traits, is_negated


def _span(text: str, mention: str) -> tuple[int, int]:
    start = text.index(mention)
    return start, start + len(mention)


@pytest.mark.parametrize(
    ("text", "mention", "negated"),
    [
        ("No evidence of pneumonia.", "pneumonia", True),
        ("The patient denies chest pain or shortness of breath.", "shortness of breath", True),
        ("Negative for deep vein thrombosis.", "deep vein thrombosis", True),
        ("Pulmonary embolism was ruled out.", "Pulmonary embolism", True),
        ("Sepsis is unlikely given the normal lactate.", "Sepsis", True),
        ("He was discharged without antibiotics.", "antibiotics", True),
        ("History of hypertension treated with lisinopril.", "hypertension", False),
        ("History of hypertension treated with lisinopril.", "lisinopril", False),
        ("No fever, but she reports migraine.", "migraine", False),
        ("No chest pain. Asthma is well controlled.", "Asthma", False),
        ("There was no increase in seizures.", "seizures", False),
        ("No history of diabetes. Continue metformin.", "metformin", False),
        ("No complaints of pain in the knee or in the hip joint area or gout.", "gout", False),
    ],
)
def test_negation_rules(text: str, mention: str, negated: bool) -> None:
    start, end = _span(text, mention)
    assert is_negated(text, start, end) is negated
    assert entity_traits(text, start, end) == ((NEGATION,) if negated else ())
