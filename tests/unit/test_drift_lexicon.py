"""A drift baseline built with a public lexicon stores no word outside it (PHI)."""

import pytest

from clinical_ner.model import drift

NOTES = [
    f"Patient Quillfeather visit {i}: hypertension treated with lisinopril, the patient improved."
    for i in range(40)
]


def _baseline(**kwargs):
    return drift.build_profile(NOTES, [[] for _ in NOTES], labels=["DISEASE"], **kwargs)


def test_without_a_lexicon_a_recurring_name_enters_the_vocabulary():
    assert "quillfeather" in _baseline()["vocabulary"]["tokens"]


def test_with_a_lexicon_only_public_words_enter_and_the_rest_count_as_oov():
    lexicon = {"hypertension", "lisinopril", "the", "and", "with", "patient"}
    profile = _baseline(lexicon=lexicon)
    tokens = profile["vocabulary"]["tokens"]
    assert "quillfeather" not in tokens
    assert set(tokens) <= lexicon
    assert profile["vocabulary"]["lexicon_words"] == len(lexicon)
    assert profile["oov"]["rate"] > 0  # the name (and "visit", "treated", ...) are OOV now


def test_a_lexicon_is_refused_for_a_window_profile():
    baseline = _baseline(lexicon={"the"})
    with pytest.raises(ValueError, match="lexicon applies to a baseline"):
        drift.build_profile(NOTES, [[] for _ in NOTES], reference=baseline, lexicon={"the"})
