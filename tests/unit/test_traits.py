"""NegEx-style negation trait on hand-written clinical sentences."""

from __future__ import annotations

import pytest

from clinical_ner.model.traits import NEGATION, NegationScanner, entity_traits, is_negated


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


@pytest.mark.parametrize(
    ("text", "mention", "negated"),
    [
        # Added triggers, pseudo-triggers and terminators (each answered the other way before).
        ("Cyanosis not observed.", "Cyanosis", True),
        ("Fungal changes are not observed.", "Fungal changes", True),
        ("A mass is not palpable.", "mass", True),
        ("She has noticed no worsening in her weakness.", "weakness", False),
        ("Risks including but not limited to bleeding.", "bleeding", False),
        ("Call if symptoms do not improve or fever.", "fever", False),
        ("It is not clear whether he took his lisinopril.", "lisinopril", False),
        ("The biopsy was not successful because of seizure activity.", "seizure activity", False),
    ],
)
def test_added_negation_phrases(text: str, mention: str, negated: bool) -> None:
    start, end = _span(text, mention)
    assert is_negated(text, start, end) is negated


@pytest.mark.parametrize(
    ("text", "mention", "trigger"),
    [
        (
            "She has not had leg swelling, cough, shortness of breath, palpitations, or chest "
            "pain.",
            "chest pain",
            "not",
        ),
        (
            "Denies fever, chills, night sweats, weight loss, nausea, or diarrhea.",
            "diarrhea",
            "Denies",
        ),
        ("No limitation in any of his joints or active swelling today.", "swelling", "No"),
        # Not a list: one long phrase, a new statement, a terminator, a clause end.
        ("No pain when she walks up the stairs to her room with a cane.", "cane", None),
        (
            "No fever, chills, and she was admitted with a severe pneumonia of the lung.",
            "pneumonia",
            None,
        ),
        (
            "No fever, chills, night sweats, but weight loss and severe abdominal pain.",
            "abdominal pain",
            None,
        ),
        (
            "No fever, chills, or sweats. Nausea, vomiting, and abdominal pain.",
            "abdominal pain",
            None,
        ),
    ],
)
def test_comma_list_negation(text: str, mention: str, trigger: str | None) -> None:
    # GUIDELINE.md section 2: a comma list after a cue is negated up to the end of the clause.
    start, end = _span(text, mention)
    scanner = NegationScanner(text)
    assert scanner.negation_trigger(start, end) is None  # beyond NegEx's SCOPE_WORDS
    found = scanner.list_negation_trigger(start, end)
    assert (text[found[0] : found[1]] if found else None) == trigger


def test_shortcut_keeps_case_folded_and_cut_triggers() -> None:
    # The scanner skips windows without a pre-trigger word; IGNORECASE also matches "absence"
    # spelled with a long s, and an entity starting inside "noted" leaves the prefix "no".
    text = "Ab\u017fence of fever."
    start, end = _span(text, "fever")
    assert is_negated(text, start, end) is True
    text = "noted fever today"
    assert NegationScanner(text).is_negated(2, 11) is True


@pytest.mark.parametrize(
    ("text", "mention", "negated"),
    [
        # NegEx / ConText lexicon entries added for the train part t (each answered the other
        # way before): "deny", a declined treatment, post-posed "absent" / "free", a
        # non-contributory history, and the pseudo-trigger "not increase".
        ("They deny any gasping events.", "gasping events", True),
        ("She declined chemotherapy.", "chemotherapy", True),
        ("Varicosities absent.", "Varicosities", True),
        ("He has been pain free since.", "pain", True),
        ("Family history noncontributory for coronary disease.", "coronary disease", True),
        ("The cough does not increase with inspiration, wheezing is heard.", "wheezing", False),
    ],
)
def test_lexicon_additions(text: str, mention: str, negated: bool) -> None:
    start, end = _span(text, mention)
    assert is_negated(text, start, end) is negated


@pytest.mark.parametrize(
    ("text", "mention", "trigger_at"),
    [
        ("Neurological: (-) numbness", "numbness", 14),
        ("(-) back pain (chronic) (-) decreased ROM (-) episodic weakness", "decreased ROM", 24),
        (
            "(-) back pain (chronic) (-) decreased ROM (-) episodic weakness",
            "episodic weakness",
            42,
        ),
        ("(-) breathing difficulties, respiratory symptoms", "respiratory symptoms", 0),
        # "(+)" between, a clause break, or too far: not negated.
        ("(-) numbness (+) joint pain", "joint pain", None),
        ("(-) numbness. Joint pain", "Joint pain", None),
        ("(-) he says that today he has had some joint pain", "joint pain", None),
        ("joint pain (-)", "joint pain", None),
    ],
)
def test_marker_negation(text: str, mention: str, trigger_at: int | None) -> None:
    # Review-of-systems templates mark absent findings "(-)" (GUIDELINE.md section 2 negated).
    start, end = _span(text, mention)
    found = NegationScanner(text).marker_negation_trigger(start, end)
    assert found == (None if trigger_at is None else (trigger_at, trigger_at + 3))
