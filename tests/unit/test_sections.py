"""Section headers in plain and MTSamples (commas for line breaks) form, on synthetic notes."""

from __future__ import annotations

import time

import pytest

from clinical_ner.model.sections import SECTION_NAMES, SectionIndex

# One header per canonical section name, as notes write them.
HEADERS = [
    ("CHIEF COMPLAINT", "chief_complaint"),
    ("HISTORY OF PRESENT ILLNESS", "history_of_present_illness"),
    ("PAST MEDICAL HISTORY", "past_medical_history"),
    ("PAST SURGICAL HISTORY", "past_surgical_history"),
    ("FAMILY HISTORY", "family_history"),
    ("SOCIAL HISTORY", "social_history"),
    ("CURRENT MEDICATIONS", "medications"),
    ("ALLERGIES", "allergies"),
    ("REVIEW OF SYSTEMS", "review_of_systems"),
    ("PHYSICAL EXAMINATION", "physical_exam"),
    ("LABORATORY DATA", "studies"),
    ("POSTOPERATIVE DIAGNOSIS", "diagnoses"),
    ("ASSESSMENT AND PLAN", "assessment_plan"),
    ("PROCEDURE PERFORMED", "procedure"),
    ("HOSPITAL COURSE", "hospital_course"),
    ("PAIN MANAGEMENT", "other"),
]


def test_every_section_name_is_covered() -> None:
    assert sorted(name for _, name in HEADERS) == sorted(SECTION_NAMES)


def _body_offset(text: str) -> int:
    return text.index("Body text")


@pytest.mark.parametrize(("header", "name"), HEADERS)
def test_plain_form(header: str, name: str) -> None:
    text = f"Seen in clinic today.\n{header}: Body text here.\nPLAN: Follow up.\n"
    index = SectionIndex(text)
    section = index.at(_body_offset(text))
    assert section is not None and section.name == name
    assert section.header == f"{header}:"
    assert text[section.header_start : section.header_end] == section.header
    assert section.end == text.index("\nPLAN:") + 1
    assert index.at(0) is None  # before the first header


@pytest.mark.parametrize(("header", "name"), HEADERS)
def test_mtsamples_comma_form(header: str, name: str) -> None:
    text = f"Seen in clinic today.,{header}:,  Body text here.,2.  More text.,PLAN: , Follow up."
    index = SectionIndex(text)
    section = index.at(_body_offset(text))
    assert section is not None and section.name == name
    assert section.header == f"{header}:"
    assert text[section.header_start : section.header_end] == section.header
    # "2.  More text." is a list item, not a header: the section runs on to PLAN.
    assert index.at(text.index("More text")) == section
    assert index.at(text.index("Follow up")).name == "assessment_plan"


def test_title_case_and_abbreviated_headers() -> None:
    text = "Family History: Body text.\nPMH: diabetes.\nHPI: cough.\nA/P: rest."
    index = SectionIndex(text)
    assert [s.name for s in index.sections] == [
        "family_history",
        "past_medical_history",
        "history_of_present_illness",
        "assessment_plan",
    ]


def test_exam_subheaders_stay_in_their_section() -> None:
    text = (
        "REVIEW OF SYSTEMS:,HEENT:  No headache.,"
        "PHYSICAL EXAMINATION:,Vitals:  BP 120/80.,Neck:  Supple."
    )
    index = SectionIndex(text)
    assert [s.name for s in index.sections] == ["review_of_systems", "physical_exam"]
    assert index.at(text.index("No headache")).name == "review_of_systems"
    assert index.at(text.index("Supple")).name == "physical_exam"


def test_exam_subheader_outside_an_exam_opens_one() -> None:
    text = "ALLERGIES:,  None.,HEENT:  Normocephalic.,ASSESSMENT:,  Stable."
    index = SectionIndex(text)
    assert [s.name for s in index.sections] == ["allergies", "physical_exam", "assessment_plan"]


def test_header_after_a_sentence_end() -> None:
    text = "The patient is stable.  PLAN:  Continue lisinopril."
    assert SectionIndex(text).at(text.index("Continue")).name == "assessment_plan"


@pytest.mark.parametrize(
    "text",
    [
        "The dose was adjusted, dose: 5 mg daily.",  # lower case after a comma
        "Tolerated well.  Note: call if worse.",  # title case, unknown, mid-paragraph
        "1.  HYPERTENSION: controlled.",  # after a list number, not a sentence end
        "Follow up at 10:30 tomorrow.",
        "Dr. Smith: seen.",  # a title abbreviation, not a sentence end
    ],
)
def test_prose_with_colons_is_not_a_header(text: str) -> None:
    assert SectionIndex(text).sections == ()


def test_unknown_all_caps_header_is_other() -> None:
    text = "CORONARY RISK FACTORS:,  History of hypertension."
    section = SectionIndex(text).at(text.index("History"))
    assert section is not None and (section.name, section.header) == (
        "other",
        "CORONARY RISK FACTORS:",
    )


def test_unicode_before_header_keeps_offsets() -> None:
    text = "Café née Zoë — ünïcödé 😀.\nFAMILY HISTORY: Mother with diabetes."
    section = SectionIndex(text).at(text.index("Mother"))
    assert section is not None and section.name == "family_history"
    assert text[section.header_start : section.header_end] == "FAMILY HISTORY:"


def test_empty_text() -> None:
    index = SectionIndex("")
    assert index.sections == ()
    assert index.at(0) is None


def test_hostile_megabyte_finishes_fast() -> None:
    # Candidate starts everywhere (commas, sentence ends) with long header-like runs and no colon:
    # a scan that is not linear takes minutes here. A generous bound, not a benchmark.
    hostile = ("," + "A" * 59 + ". " + "B" * 30 + " ") * (1_000_000 // 93)
    start = time.perf_counter()
    index = SectionIndex(hostile)
    assert time.perf_counter() - start < 10
    assert index.sections == ()
    many = "HEENT: x," * (1_000_000 // 9)
    assert len(SectionIndex(many).sections) == 1


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("HISTORY OF PRESENT COMPLAINT", "history_of_present_illness"),
        ("HISTORY OF PRESENTING ILLNESS", "history_of_present_illness"),
        ("PRESENTATION HISTORY", "history_of_present_illness"),
        ("TREATMENT", "assessment_plan"),
        ("MEDICAL DECISION MAKING", "assessment_plan"),
        ("NECK EXAM", "physical_exam"),
    ],
)
def test_header_variants(header: str, name: str) -> None:
    # Were `other` before: variants of known headers (GUIDELINE.md section 2 section names).
    text = f"Seen today.,{header}:,  Body text here."
    assert SectionIndex(text).at(_body_offset(text)).name == name


def test_compound_subheaders_stay_in_the_review_of_systems() -> None:
    # A body-system word with a suffix or joined by "/" / "AND" is a sub-header too; these
    # opened `other` (and then a physical exam at the next sub-header) before.
    text = (
        "REVIEW OF SYSTEMS:,CONSTITUTIONAL SYMPTOMS:  No fever.,ENT:  Unremarkable.,"
        "HEMATOLOGIC/LYMPHATIC:  No bruising.,SKIN AND BREASTS:  No rash."
    )
    index = SectionIndex(text)
    assert [s.name for s in index.sections] == ["review_of_systems"]
    for finding in ("fever", "Unremarkable", "bruising", "rash"):
        assert index.at(text.index(finding)).name == "review_of_systems"
