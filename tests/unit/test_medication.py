"""Medication attributes (clinical_ner.model.medication) on hand-written sentences."""

from __future__ import annotations

import time

import pytest

from clinical_ner.model import medication
from clinical_ner.model.medication import ATTRIBUTE_TYPES, MedicationAttribute, link_attributes


def _span(text: str, mention: str, nth: int = 0) -> tuple[int, int]:
    start = -1
    for _ in range(nth + 1):
        start = text.index(mention, start + 1)
    return start, start + len(mention)


def _attrs(text: str, drug: str, others: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(type, text) of the attributes of `drug` (its first occurrence)."""
    (found,) = link_attributes(text, [_span(text, drug)], [_span(text, o) for o in others])
    return [(a.type, a.text) for a in found]


def _assert_well_formed(text, meds, others, result) -> None:
    spans = [*meds, *others]
    seen: list[tuple[int, int]] = []
    assert len(result) == len(meds)
    for attributes in result:
        for a in attributes:
            assert a.type in ATTRIBUTE_TYPES
            assert text[a.start : a.end] == a.text
            assert a.text == a.text.strip() and a.text
            assert all(a.end <= s or a.start >= e for s, e in spans), "overlaps an entity"
            assert all(a.end <= s or a.start >= e for s, e in seen), "shared or overlapping"
            seen.append((a.start, a.end))


@pytest.mark.parametrize(
    ("sig", "expected"),
    [
        # STRENGTH
        ("10 mg daily", [("STRENGTH", "10 mg"), ("FREQUENCY", "daily")]),
        ("125 mcg daily", [("STRENGTH", "125 mcg"), ("FREQUENCY", "daily")]),
        ("0.5 g", [("STRENGTH", "0.5 g")]),
        ("1,000 mg b.i.d.", [("STRENGTH", "1,000 mg"), ("FREQUENCY", "b.i.d.")]),
        ("20 mEq daily", [("STRENGTH", "20 mEq"), ("FREQUENCY", "daily")]),
        ("2% cream", [("STRENGTH", "2%"), ("FORM", "cream")]),
        ("40 mg/mL solution", [("STRENGTH", "40 mg/mL"), ("FORM", "solution")]),
        ("250 mg/5 mL suspension", [("STRENGTH", "250 mg/5 mL"), ("FORM", "suspension")]),
        ("80/12.5 mg daily", [("STRENGTH", "80/12.5 mg"), ("FREQUENCY", "daily")]),
        ("5/325 one tab q.6h.", [("STRENGTH", "5/325"), ("DOSAGE", "one tab"),
                                 ("FREQUENCY", "q.6h.")]),
        # DOSAGE
        ("1 tablet p.o. daily", [("DOSAGE", "1 tablet"), ("ROUTE_OR_MODE", "p.o."),
                                 ("FREQUENCY", "daily")]),
        ("two puffs b.i.d.", [("DOSAGE", "two puffs"), ("FREQUENCY", "b.i.d.")]),
        ("1-2 tabs q.4h. p.r.n.", [("DOSAGE", "1-2 tabs"), ("FREQUENCY", "q.4h. p.r.n.")]),
        ("20 units subcutaneously at bedtime", [("DOSAGE", "20 units"),
                                                ("ROUTE_OR_MODE", "subcutaneously"),
                                                ("FREQUENCY", "at bedtime")]),
        ("5-10 mL q.4h.", [("DOSAGE", "5-10 mL"), ("FREQUENCY", "q.4h.")]),
        ("1 BID for 7 days", [("DOSAGE", "1"), ("FREQUENCY", "BID"),
                              ("DURATION", "for 7 days")]),
        ("15 mg/kg IV", [("DOSAGE", "15 mg/kg"), ("ROUTE_OR_MODE", "IV")]),
        # DURATION
        ("500 mg x7 days", [("STRENGTH", "500 mg"), ("DURATION", "x7 days")]),
        ("daily times 2 weeks", [("FREQUENCY", "daily"), ("DURATION", "times 2 weeks")]),
        ("daily for a week", [("FREQUENCY", "daily"), ("DURATION", "for a week")]),
        ("t.i.d. for two more weeks", [("FREQUENCY", "t.i.d."),
                                       ("DURATION", "for two more weeks")]),
        # RATE
        ("at 100 mL/hour", [("RATE", "at 100 mL/hour")]),
        ("125 cc/h", [("RATE", "125 cc/h")]),
        ("at 75 mL an hour", [("RATE", "at 75 mL an hour")]),
        ("2 mL/hr", [("RATE", "2 mL/hr")]),
    ],
)  # fmt: skip
def test_attribute_types_after_the_drug(sig: str, expected: list[tuple[str, str]]) -> None:
    text = f"Plan: Start Drugname {sig}. Follow up in 2 weeks."
    assert _attrs(text, "Drugname") == expected


@pytest.mark.parametrize(
    "route",
    ["p.o.", "PO", "po", "orally", "by mouth", "IV", "intravenously", "intravenous", "IM",
     "subcutaneously", "subcutaneous", "subQ", "SC", "sublingually", "sublingual", "SL",
     "topically", "topical", "inhaled", "via nebulizer", "per rectum", "PR", "transdermal",
     "intranasal", "local", "ophthalmic", "intrathecal", "epidural", "in each nostril"],
)  # fmt: skip
def test_routes(route: str) -> None:
    text = f"Drugname 5 mg {route} daily."
    assert _attrs(text, "Drugname")[1] == ("ROUTE_OR_MODE", route)


@pytest.mark.parametrize(
    "frequency",
    ["daily", "once a day", "twice a day", "three times daily", "b.i.d.", "bid", "BID",
     "t.i.d.", "q.i.d.", "q.d.", "q.h.s.", "qhs", "at bedtime", "every 4-6 hours",
     "every 4 to 6 hours", "q.4h.", "q6h", "q.6h. p.r.n.", "p.r.n.", "PRN", "as needed",
     "weekly", "monthly", "in the morning", "with meals", "every other day", "q.a.m.",
     "nightly", "a day"],
)  # fmt: skip
def test_frequencies(frequency: str) -> None:
    text = f"Drugname 5 mg {frequency}, then review."
    assert _attrs(text, "Drugname") == [("STRENGTH", "5 mg"), ("FREQUENCY", frequency)]


@pytest.mark.parametrize(
    "form",
    ["tablet", "tablets", "tabs", "capsule", "capsules", "caps", "inhaler", "ointment", "cream",
     "gel", "drops", "eye drops", "solution", "suspension", "patch", "injection", "spray",
     "lotion", "suppository", "elixir", "syrup"],
)  # fmt: skip
def test_forms(form: str) -> None:
    text = f"She uses Drugname {form} as directed."
    assert _attrs(text, "Drugname") == [("FORM", form), ("FREQUENCY", "as directed")]


def test_strength_or_dosage_follows_the_guideline() -> None:
    # One number+unit of a tablet drug is its STRENGTH; the amount given parenterally is DOSAGE.
    assert _attrs("Lisinopril 10 mg daily.", "Lisinopril")[0] == ("STRENGTH", "10 mg")
    assert _attrs("Dilaudid 2 mg IV q.4h.", "Dilaudid")[0] == ("DOSAGE", "2 mg")
    assert _attrs("Cefazolin 1 g intravenously.", "Cefazolin")[0] == ("DOSAGE", "1 g")
    # With a unit count, the mass is the strength again.
    assert _attrs("Motrin 600 mg 1 tablet IM.", "Motrin")[:2] == [
        ("STRENGTH", "600 mg"),
        ("DOSAGE", "1 tablet"),
    ]
    assert _attrs("She received 20 mg of Diastat at home.", "Diastat") == [("DOSAGE", "20 mg")]


@pytest.mark.parametrize(
    ("text", "drug", "expected"),
    [
        ("The skin was infiltrated with 1% lidocaine.", "lidocaine", [("STRENGTH", "1%")]),
        ("He was continued on IV antibiotics.", "antibiotics", [("ROUTE_OR_MODE", "IV")]),
        ("She took two tablets of Tylenol.", "Tylenol", [("DOSAGE", "two tablets")]),
        ("Then 1 mL of 1% lidocaine was injected.", "lidocaine",
         [("DOSAGE", "1 mL"), ("STRENGTH", "1%")]),
        ("Injected 1 mL of a 40 mg/mL solution of Kenalog.", "Kenalog",
         [("DOSAGE", "1 mL"), ("STRENGTH", "40 mg/mL"), ("FORM", "solution")]),
        ("Lidocaine with epinephrine 1:100,000 was used.", "epinephrine",
         [("STRENGTH", "1:100,000")]),
    ],
)  # fmt: skip
def test_attributes_before_the_drug(text: str, drug: str, expected) -> None:
    assert _attrs(text, drug) == expected


def test_prefix_and_suffix_of_two_drugs_in_one_phrase() -> None:
    text = "Local anesthesia with 0.5% Marcaine 20 mL with epinephrine 1:100,000."
    meds = [_span(text, "Marcaine"), _span(text, "epinephrine")]
    result = link_attributes(text, meds)
    _assert_well_formed(text, meds, [], result)
    assert [[(a.type, a.text) for a in attrs] for attrs in result] == [
        [("STRENGTH", "0.5%"), ("DOSAGE", "20 mL")],
        [("STRENGTH", "1:100,000")],
    ]


def test_list_items_do_not_mix_attributes() -> None:
    text = (
        "MEDICATIONS:,1.  Lisinopril 10 mg daily.,2.  Metformin 500 mg p.o. b.i.d. with meals."
        ",3.  Albuterol inhaler two puffs q.4h. p.r.n."
    )
    meds = [_span(text, "Lisinopril"), _span(text, "Metformin"), _span(text, "Albuterol")]
    result = link_attributes(text, meds)
    _assert_well_formed(text, meds, [], result)
    assert [[(a.type, a.text) for a in attrs] for attrs in result] == [
        [("STRENGTH", "10 mg"), ("FREQUENCY", "daily")],
        [("STRENGTH", "500 mg"), ("ROUTE_OR_MODE", "p.o."), ("FREQUENCY", "b.i.d. with meals")],
        [("FORM", "inhaler"), ("DOSAGE", "two puffs"), ("FREQUENCY", "q.4h. p.r.n.")],
    ]


def test_comma_separated_drugs_and_chained_routes() -> None:
    text = "ANESTHESIA: Midazolam 2 mg IV Fentanyl 50 mcg IV, Lasix 40 mg, IV heparin."
    meds = [_span(text, d) for d in ("Midazolam", "Fentanyl", "Lasix", "heparin")]
    result = link_attributes(text, meds)
    _assert_well_formed(text, meds, [], result)
    # "IV" before Fentanyl continues midazolam's own chain; "IV" after the comma is heparin's.
    assert [[(a.type, a.text) for a in attrs] for attrs in result] == [
        [("DOSAGE", "2 mg"), ("ROUTE_OR_MODE", "IV")],
        [("DOSAGE", "50 mcg"), ("ROUTE_OR_MODE", "IV")],
        [("STRENGTH", "40 mg")],
        [("ROUTE_OR_MODE", "IV")],
    ]


def test_window_stops_at_next_entity_and_clause() -> None:
    text = "Tylenol 650 mg q.6h. p.r.n. pain 2 tablets daily. Aspirin 81 mg."
    # "pain" is another entity: what follows it is not Tylenol's.
    assert _attrs(text, "Tylenol", others=("pain",)) == [
        ("STRENGTH", "650 mg"),
        ("FREQUENCY", "q.6h. p.r.n."),
    ]
    # A sentence break ends the window even without an entity.
    assert _attrs("Keppra 500 mg. Twice a day she walks 2 miles.", "Keppra") == [
        ("STRENGTH", "500 mg")
    ]
    assert _attrs("Metoprolol 50 mg b.i.d. His rate 2 mg today.", "Metoprolol") == [
        ("STRENGTH", "50 mg"),
        ("FREQUENCY", "b.i.d."),
    ]
    # A comma followed by a new item or clause ends it, one followed by an attribute does not.
    assert _attrs("Motrin 400 mg, which has not helped, 2 tabs.", "Motrin") == [
        ("STRENGTH", "400 mg")
    ]
    assert _attrs("Lotemax 0.5% eye drops, 1 drop in each eye daily.", "Lotemax") == [
        ("STRENGTH", "0.5%"),
        ("FORM", "eye drops"),
        ("DOSAGE", "1 drop"),
        ("ROUTE_OR_MODE", "in each eye"),
        ("FREQUENCY", "daily"),
    ]
    # Too many plain words in a row end it ("for the control of ..." is not a duration).
    assert _attrs("Diovan 80 mg for the control of her blood pressure 2 tabs.", "Diovan") == [
        ("STRENGTH", "80 mg")
    ]
    # A bare fraction is a strength only right after the drug ("Percocet 5/325"), not a date.
    assert ("STRENGTH", "02/05") not in _attrs("Percocet taken in 02/05 daily.", "Percocet")


def test_offsets_exact_with_unicode_before_the_span() -> None:
    text = "Naïve patient — “allergic” 😀 ✓.  Plan: Zyrtec 10 mg p.o. daily \u00d7 5 days."
    (found,) = link_attributes(text, [_span(text, "Zyrtec")])
    assert [(a.type, a.text) for a in found] == [
        ("STRENGTH", "10 mg"),
        ("ROUTE_OR_MODE", "p.o."),
        ("FREQUENCY", "daily"),
        ("DURATION", "\u00d7 5 days"),
    ]
    for a in found:
        assert text[a.start : a.end] == a.text
    start = text.index("10 mg")  # code points, not bytes: the emoji and accents count as one
    assert found[0] == MedicationAttribute("STRENGTH", "10 mg", start, start + 5)


def test_empty_inputs() -> None:
    assert link_attributes("", []) == []
    assert link_attributes("Lisinopril 10 mg daily.", []) == []
    assert link_attributes("", [(0, 0)]) == [()]
    text = "Lisinopril"
    assert link_attributes(text, [(0, len(text))]) == [()]
    assert link_attributes("Aspirin daily.", [(0, 7)], other_entities=()) == [
        (MedicationAttribute("FREQUENCY", "daily", 8, 13),)
    ]


def test_attributes_never_overlap_entities_and_belong_to_one_drug() -> None:
    text = (
        "Given IV Rocephin 1 g IV q.24h. and oral Zithromax 500 mg daily x3 days for pneumonia, "
        "Zithromax 500 mg tablets, 2 mg Ativan IV now, insulin 10 units/hour drip."
    )
    meds = [
        _span(text, "Rocephin"),
        _span(text, "Zithromax"),
        _span(text, "Zithromax", 1),
        _span(text, "Ativan"),
        _span(text, "insulin"),
        _span(text, "Zithromax"),  # a repeated span gets nothing: one owner per attribute
        (_span(text, "Ativan")[0], _span(text, "Ativan")[1] - 2),  # nested in another drug
    ]
    others = [_span(text, "pneumonia"), _span(text, "500 mg", 1)]  # an entity over a dose
    result = link_attributes(text, meds, others)
    _assert_well_formed(text, meds, others, result)
    by_drug = [[(a.type, a.text) for a in attrs] for attrs in result]
    assert by_drug[0] == [("ROUTE_OR_MODE", "IV"), ("DOSAGE", "1 g"), ("ROUTE_OR_MODE", "IV"),
                          ("FREQUENCY", "q.24h.")]  # fmt: skip
    assert by_drug[1] == [("ROUTE_OR_MODE", "oral"), ("STRENGTH", "500 mg"),
                          ("FREQUENCY", "daily"), ("DURATION", "x3 days")]  # fmt: skip
    assert by_drug[2] == []  # "500 mg tablets" is another entity; the window stops there
    assert by_drug[3] == [("DOSAGE", "2 mg"), ("ROUTE_OR_MODE", "IV")]
    assert by_drug[4] == [("RATE", "10 units/hour")]
    assert by_drug[5] == [] and by_drug[6] == []


def test_bad_spans_are_refused_without_text() -> None:
    secret = "Patient John Doe MRN 12345 takes Lisinopril 10 mg."
    with pytest.raises(ValueError) as excinfo:
        link_attributes(secret, [(0, len(secret) + 1)])
    assert "medication span 0" in str(excinfo.value) and "John" not in str(excinfo.value)
    with pytest.raises(ValueError, match="entity span 1"):
        link_attributes(secret, [(0, 4)], [(0, 4), (9, 3)])
    with pytest.raises(TypeError):
        link_attributes(secret, [(0.5, 4)])  # type: ignore[list-item]


def test_hostile_long_inputs_finish_fast() -> None:
    # 1 MB of digits and units, with a drug every 2000 characters, and one 1 MB digit run.
    unit_soup = "10 mg/5 mL 1:100,000 q.6h. 2% x 1-2-3-4 tabs 125 cc/h 0.5.5.5 " * 16000
    digits = "1" * 1_000_000
    started = time.perf_counter()
    for text in (unit_soup, digits, "(" * 1_000_000, "1, " * 330_000):
        meds = [(i, i + 3) for i in range(0, len(text) - 3, 2000)]
        result = link_attributes(text, meds)
        assert len(result) == len(meds)
        for attrs in result[:50]:
            for a in attrs:
                assert text[a.start : a.end] == a.text
    # Linear with a capped window: about a second here even on a loaded CI core.
    assert time.perf_counter() - started < 30


def test_every_starter_word_reaches_the_regex() -> None:
    """The first word of each vocabulary phrase is in _STARTERS (else it is never matched)."""
    phrases = [
        "orally", "by mouth", "via nebulizer", "per rectum", "intranasally", "buccal",
        "once a day", "every 6 hours", "as needed", "with meals", "in the morning", "at night",
        "for 10 days", "times 2 weeks", "extended-release tablet", "chewable tablet", "patch",
        "nebulized", "transdermally", "intramuscularly", "sub-q", "twice daily", "up to",
    ]  # fmt: skip
    for phrase in phrases:
        first = phrase.split()[0].lower()
        assert first in medication._STARTERS, first
        text = f"Drugname {phrase} stop."
        if phrase != "up to":
            assert _attrs(text, "Drugname"), phrase


def test_a_unitless_ratio_is_a_strength_only_after_a_known_drug():
    text = "Percocet 5/325 q.4h. and neck flexion 4/5 daily."
    flexion = (text.index("neck"), text.index("neck") + len("neck flexion"))
    spans = [(0, 8), flexion]
    percocet, exam = link_attributes(text, spans, known_drugs=[True, False])
    assert [(a.type, a.text) for a in percocet] == [("STRENGTH", "5/325"), ("FREQUENCY", "q.4h.")]
    assert [(a.type, a.text) for a in exam] == [("FREQUENCY", "daily")]
    # Without the flags every span is a drug, as before.
    assert ("STRENGTH", "4/5") in {(a.type, a.text) for a in link_attributes(text, spans)[1]}
    with pytest.raises(ValueError, match="one flag per medication"):
        link_attributes(text, spans, known_drugs=[True])
