"""Section headers of a clinical note ("PAST MEDICAL HISTORY:") mapped to canonical section names.

A header is a short run of words ending in a colon at the start of a line. MTSamples turned
line breaks into commas ("HISTORY OF PRESENT ILLNESS:,  The patient ...", "...pain.,ALLERGIES:"),
so a comma counts as a line start too, and an ALL CAPS header may also follow a sentence end.
Known headers (any case) map to SECTION_NAMES through an exact table and then keyword rules; any
other ALL CAPS header is `other`. Body-system sub-headers of an exam ("HEENT:", "Neck:", "BP:")
do not open a section of their own: they stay in the exam, review of systems, hospital course or
plan they appear in, and open `physical_exam` anywhere else. Definitions: benchmarks/annotations/
GUIDELINE.md section 2 "section". The scan is one regex pass, linear in the text.
"""

from __future__ import annotations

import itertools
import re
from bisect import bisect_right
from dataclasses import dataclass

SECTION_NAMES = (
    "chief_complaint",
    "history_of_present_illness",
    "past_medical_history",
    "past_surgical_history",
    "family_history",
    "social_history",
    "medications",
    "allergies",
    "review_of_systems",
    "physical_exam",
    "studies",
    "diagnoses",
    "assessment_plan",
    "procedure",
    "hospital_course",
    "other",
)


@dataclass(frozen=True)
class Section:
    """One section: its canonical name, its header as written (with the colon) and its extent."""

    name: str
    header: str
    header_start: int
    header_end: int
    end: int


# Exact headers (upper case, single spaces, no colon) whose keyword rule below would be wrong or
# ambiguous. MTSamples writes "HISTORY:" for the history of the present illness.
_EXACT: dict[str, str] = {
    "CC": "chief_complaint",
    "HPI": "history_of_present_illness",
    "HISTORY": "history_of_present_illness",
    "BRIEF HISTORY": "history_of_present_illness",
    "HX": "history_of_present_illness",
    "SUBJECTIVE": "history_of_present_illness",
    "INTERVAL HISTORY": "history_of_present_illness",
    "PMH": "past_medical_history",
    "PMHX": "past_medical_history",
    "PAST HISTORY": "past_medical_history",
    "MEDICAL HISTORY": "past_medical_history",
    "PERSONAL HISTORY": "past_medical_history",
    "PROBLEM LIST": "past_medical_history",
    "PSH": "past_surgical_history",
    "SURGERIES": "past_surgical_history",
    "FH": "family_history",
    "FHX": "family_history",
    "SH": "social_history",
    "SHX": "social_history",
    "MEDS": "medications",
    "ROS": "review_of_systems",
    "SYSTEMS REVIEW": "review_of_systems",
    "PE": "physical_exam",
    "EXAM": "physical_exam",
    "EXAMINATION": "physical_exam",
    "OBJECTIVE": "physical_exam",
    "DATA": "studies",
    "A/P": "assessment_plan",
    "TREATMENT": "assessment_plan",
    "TREATMENTS": "assessment_plan",
    "MEDICAL DECISION MAKING": "assessment_plan",
    "A&P": "assessment_plan",
    "DIAGNOSTIC STUDIES": "studies",
    "DIAGNOSTIC DATA": "studies",
    "DIAGNOSTIC TESTS": "studies",
    "COURSE": "hospital_course",
    "CT": "studies",
    "CXR": "studies",
    "ECG": "studies",
    "EKG": "studies",
    "ECHO": "studies",
    "MRI": "studies",
    "ULTRASOUND": "studies",
}

# Keyword rules, first match wins (so "FAMILY HISTORY" beats "HISTORY", "DIAGNOSTIC" beats
# "DIAGNOS", "PAST SURGICAL" beats "PAST MEDICAL AND SURGICAL" only when no MEDICAL comes first).
_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("FAMILY", "family_history"),
    ("SOCIAL", "social_history"),
    ("PRESENT ILLNESS", "history_of_present_illness"),
    # "HISTORY OF PRESENT COMPLAINT", "HISTORY OF PRESENTING ILLNESS", "PRESENTATION HISTORY".
    ("HISTORY OF PRESENT", "history_of_present_illness"),
    ("PRESENTING ILLNESS", "history_of_present_illness"),
    ("PRESENTATION", "history_of_present_illness"),
    ("HISTORY OF ILLNESS", "history_of_present_illness"),
    ("CHIEF COMPLAINT", "chief_complaint"),
    ("REASON FOR", "chief_complaint"),
    ("REVIEW OF SYSTEM", "review_of_systems"),
    ("PAST MEDICAL", "past_medical_history"),
    ("SURGICAL HISTORY", "past_surgical_history"),
    ("PAST SURGICAL", "past_surgical_history"),
    ("OPERATIVE HISTORY", "past_surgical_history"),
    ("MEDICAL HISTORY", "past_medical_history"),
    ("ALLERG", "allergies"),
    ("MEDICATION", "medications"),
    ("PRESCRIPTION", "medications"),
    ("PHYSICAL EXAM", "physical_exam"),
    ("HOSPITAL COURSE", "hospital_course"),
    ("DEPARTMENT COURSE", "hospital_course"),
    ("CLINICAL COURSE", "hospital_course"),
    ("DIAGNOSTIC", "studies"),
    ("DIAGNOS", "diagnoses"),
    ("LAB", "studies"),
    ("STUDIES", "studies"),
    ("IMAGING", "studies"),
    ("RADIOLOG", "studies"),
    ("X-RAY", "studies"),
    ("PATHOLOGY", "studies"),
    ("RESULTS", "studies"),
    ("IMPRESSION", "assessment_plan"),
    ("ASSESSMENT", "assessment_plan"),
    ("PLAN", "assessment_plan"),
    ("RECOMMENDATION", "assessment_plan"),
    ("DISPOSITION", "assessment_plan"),
    ("PROCEDURE", "procedure"),
    ("OPERATION", "procedure"),
    ("ANESTHESIA", "procedure"),
    ("FINDINGS", "procedure"),
    ("INDICATION", "procedure"),
    ("COMPLICATION", "procedure"),
    ("BLOOD LOSS", "procedure"),
    ("SPECIMEN", "procedure"),
    ("TECHNIQUE", "procedure"),
    # "NECK EXAM", "ADMIT EXAM", "EYE EXAM" (after the procedure rules: "EXAM UNDER ANESTHESIA").
    ("EXAM", "physical_exam"),
)

# Exam / review-of-systems sub-headers (upper case); they continue the current section.
_SUBHEADERS = frozenset(
    {
        "ABD",
        "ABDOMEN",
        "BACK",
        "BP",
        "BREAST",
        "BREASTS",
        "CARDIAC",
        "CARDIOVASCULAR",
        "CHEST",
        "CN",
        "CNS",
        "CONSTITUTIONAL",
        "CONSTITUTIONAL SYMPTOMS",
        "CENTRAL NERVOUS SYSTEM",
        "HEMATOLOGY",
        "HEAD AND NECK",
        "ORAL CAVITY",
        "ALLERGIC",
        "LYMPH",
        "CV",
        "CVS",
        "EARS",
        "ENDOCRINE",
        "ENT",
        "EXT",
        "EXTERNAL GENITALIA",
        "EXTREMITIES",
        "EYES",
        "GASTROINTESTINAL",
        "GENERAL",
        "GENERAL APPEARANCE",
        "GENITALIA",
        "GENITOURINARY",
        "GI",
        "GU",
        "GYN",
        "HEAD",
        "HEART",
        "HEENT",
        "HEMATOLOGIC",
        "HEMATOLOGICAL",
        "HEME",
        "HR",
        "IMMUNOLOGIC",
        "INTEGUMENTARY",
        "LUNGS",
        "LYMPH NODES",
        "LYMPHATIC",
        "LYMPHATICS",
        "MENTAL STATUS",
        "MOUTH",
        "MSK",
        "MUSCULOSKELETAL",
        "NECK",
        "NEURO",
        "NEUROLOGIC",
        "NEUROLOGICAL",
        "NOSE",
        "NOSE AND THROAT",
        "PELVIC",
        "PSYCH",
        "PSYCHIATRIC",
        "PSYCHOLOGICAL",
        "PULMONARY",
        "PULSE",
        "PULSES",
        "RANGE OF MOTION",
        "RECTAL",
        "RESP",
        "RESPIRATORY",
        "RR",
        "SKIN",
        "SPINE",
        "TEMP",
        "THROAT",
        "UROLOGIC",
        "UROLOGICAL",
        "VITAL SIGNS",
        "VITALS",
    }
)
# A sub-header word may take a suffix ("CARDIOVASCULAR SYSTEM", "NECK EXAM"); several may be
# joined by "/" or "AND" ("HEMATOLOGIC/LYMPHATIC", "SKIN AND BREASTS").
_SUBHEADER_SUFFIXES = (" SYSTEM", " SYSTEMS", " SYMPTOMS", " EXAM", " EXAMINATION")
_SUBHEADER_FORMS = _SUBHEADERS | {s + suffix for s in _SUBHEADERS for suffix in _SUBHEADER_SUFFIXES}
_SUBHEADER_JOINERS = re.compile(r"\s*/\s*|\s+AND\s+")


def _is_subheader(key: str) -> bool:
    """Whether `key` (upper case, single spaces) is a body-system sub-header."""
    if key in _SUBHEADER_FORMS:
        return True
    if "/" not in key and " AND " not in key:
        return False
    return all(part in _SUBHEADER_FORMS for part in _SUBHEADER_JOINERS.split(key))


# Sections a sub-header stays in; anywhere else it opens a physical exam.
_SUBHEADER_PARENTS = frozenset(
    {
        "physical_exam",
        "review_of_systems",
        "hospital_course",
        "assessment_plan",
        "studies",
        "procedure",
    }
)

# A candidate: after a newline, a comma (MTSamples' line break) or a sentence end (checked in
# code: the period must follow a letter), or at the text start; then up to 60 characters of header
# words and a colon. The pattern starts with its delimiter so the regex engine skips to the next
# delimiter character quickly, and each attempt reads at most ~60 characters: linear.
_HEADER = r"[ \t]*(?P<h>[A-Za-z][A-Za-z0-9 /&'()\-]{0,59}?)[ \t]*:"
_CANDIDATE = re.compile(r"(?P<d>[\n\r,]|\.[ \t]{1,2})" + _HEADER)
_FIRST = re.compile(_HEADER)
_MAX_HEADER_WORDS = 8


def _canonical(header: str) -> str | None:
    """Canonical name of a known header (upper case, single spaces), else None."""
    name = _EXACT.get(header)
    if name is not None:
        return name
    for keyword, name in _KEYWORDS:
        if keyword in header:
            return name
    return None


class SectionIndex:
    """The sections of one text, found once; `at(offset)` answers by binary search."""

    def __init__(self, text: str) -> None:
        self.text = text
        found: list[tuple[str, int, int]] = []  # (name, header_start, header_end)
        current: str | None = None
        first = _FIRST.match(text)
        candidates = itertools.chain((first,) if first else (), _CANDIDATE.finditer(text))
        for match in candidates:
            after_sentence = match.re is _CANDIDATE and match.group("d")[0] == "."
            if after_sentence and not text[max(0, match.start() - 1) : match.start()].isalpha():
                continue  # "1.  HYPERTENSION: ..." is a list item, not a sentence end
            raw = match.group("h")
            words = raw.split()
            if not words or len(words) > _MAX_HEADER_WORDS:
                continue
            key = " ".join(words).upper()
            all_caps = raw.upper() == raw and sum(c.isalpha() for c in raw) >= 2
            start = match.start("h")
            if not all_caps and not raw[0].isupper():
                continue
            if not all_caps and after_sentence:
                continue  # mid-paragraph "Note: ..." is prose, not a header
            if _is_subheader(key):
                if current in _SUBHEADER_PARENTS:
                    continue
                name: str | None = "physical_exam"
            else:
                name = _canonical(key)
                if name is None:
                    if not all_caps:
                        continue
                    name = "other"
            found.append((name, start, match.end()))
            current = name
        sections = []
        for i, (name, header_start, header_end) in enumerate(found):
            end = found[i + 1][1] if i + 1 < len(found) else len(text)
            sections.append(
                Section(name, text[header_start:header_end], header_start, header_end, end)
            )
        self.sections: tuple[Section, ...] = tuple(sections)
        self._starts = [s.header_start for s in sections]

    def at(self, offset: int) -> Section | None:
        """The section containing `offset` (its header included); None before the first header."""
        i = bisect_right(self._starts, offset) - 1
        return self.sections[i] if i >= 0 else None
