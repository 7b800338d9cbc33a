"""Context traits of entities (negated, historical, hypothetical, family, uncertain) with triggers.

ConText (Harkema et al. 2009, medspaCy's `ConText`) in own rules, because medspaCy 1.3.1 needs
spacy<3.8 and the project pins spacy 3.8.7. A trigger phrase has a trait and a scope: FORWARD
triggers reach entities after them, BACKWARD triggers entities before them, each up to a number
of words, never across a sentence end, a section header or a terminator of that trait ("but",
"presents"); pseudo-triggers ("history of present illness", "risk factors") block the triggers
they contain. Negation is traits.NegationScanner (tuned NegEx rules) reporting its trigger.
Sections feed traits: every mention in a family history section is `family`, in a past medical
or surgical history section `historical`, with the header as trigger. Trait definitions:
benchmarks/annotations/GUIDELINE.md section 2. Per text the triggers are found once (one token
pass); each entity is answered from a few binary searches and a window of nearby triggers.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass

from clinical_ner.model.sections import SectionIndex
from clinical_ner.model.traits import PRE_TRIGGER_FIRST_WORDS, NegationScanner

TRAITS = ("negated", "historical", "hypothetical", "family", "uncertain")


@dataclass(frozen=True)
class TraitEvidence:
    """One true trait of an entity and what made it true: `text[start:end] == trigger`."""

    trait: str
    trigger: str
    start: int
    end: int
    source: str  # "rule" | "section"


# (phrases, forward scope in words, backward scope in words); None: that direction is off.
_Rule = tuple[tuple[str, ...], int | None, int | None]

_YEAR = "<year>"  # a year 1900-2099 right after the words before it ("in 2004")

_RULES: dict[str, tuple[_Rule, ...]] = {
    "historical": (
        (
            (
                "history of",
                "histories of",
                "hx of",
                "h/o",
                "history significant for",
                "history is significant for",
                "history remarkable for",
                "history positive for",
                "past history of",
                "medical history of",
                "past medical history of",
                "past medical history significant for",
                "past surgical history of",
                "remote history of",
                "in the past",
            ),
            8,
            None,
        ),
        (
            (
                "status post",
                "s/p",
                "previous",
                "previously",
                "prior",
                "formerly",
                "former",
                # "5 days post abdominal surgery": a time after an event is status post.
                "days post",
                "weeks post",
                "months post",
                "years post",
            ),
            3,
            None,
        ),
        (("old", "remote", "childhood"), 1, None),
        # A past course of treatment ("was recently treated for sinusitis", "had been prescribed
        # Wellbutrin"); the present "is treated with" is not historical.
        (
            (
                "was recently treated for",
                "had been treated for",
                "recently treated for",
                "recently finished",
                "recently completed",
                "finished a course of",
                "completed a course of",
                "was taking",
                "were taking",
                "had been taking",
                "had been on",
                "had been prescribed",
                "used to take",
                "used to have",
                "recently had",
                "had undergone",
                "has undergone",
                "previously underwent",
                "recently underwent",
                # A stopped drug is no longer taken (GUIDELINE: "Medications the patient takes
                # now are not historical").
                "discontinued",
            ),
            4,
            None,
        ),
        # "one year ago for suspected nasal obstruction": the visit and its reason are past.
        (("years ago", "year ago", "yrs ago", "decades ago", "at that time"), 6, None),
        # "cancer history", "STD history": the word right before "history".
        (("history", "hx"), None, 0),
        (
            (
                "was discontinued",
                "were discontinued",
                "has been discontinued",
                "have been discontinued",
                "had been discontinued",
                "was stopped",
                "were stopped",
            ),
            None,
            4,
        ),
        # "in 2004", "in December of 2003" (the year pattern takes an optional month).
        (("in " + _YEAR, "in the past", "as a child"), 4, 4),
        (
            (
                "prior to admission",
                "prior to this admission",
                "prior to hospitalization",
                "prior to arrival",
                "prior to presentation",
            ),
            None,
            3,
        ),
        (
            (
                "years ago",
                "year ago",
                "yrs ago",
                "decades ago",
                "previously",
                "in the past",
                "as a child",
                "in childhood",
            ),
            None,
            4,
        ),
    ),
    "hypothetical": (
        # A condition reaches to the end of its sentence ("If she is not obtaining relief from
        # medication alone, we will then suggest hormone replacement therapy").
        (("if", "only if", "even if"), 20, None),
        # A condition after its subject: "Surgery to remove adenoids if they are enlarged".
        (("if", "when indicated", "if indicated", "if needed", "if necessary"), None, 3),
        (
            (
                "should he",
                "should she",
                "should they",
                "should the patient",
                "should there be",
                "should this",
                "should any",
                "should symptoms",
                "in case of",
                "in the event of",
                "to prevent",
                "prevent",
                "prevention of",
                "risk of",
                "risks of",
                "risk for",
                "risks",
                "risks include",
                "risks including",
                "watch for",
                "watch out for",
                "look out for",
                "monitor for",
                "call for",
                "return for",
                "unless",
                "chance of",
                "may develop",
                "could develop",
                "can develop",
                "potential for",
                "potential complications",
                # Possible effects and options, not events ("Toxicities would include fatigue").
                "would include",
                "could include",
                "may include",
                "might include",
                "can include",
                "complications include",
                "complications including",
                "side effects include",
                "side effects including",
                "toxicities include",
                "may cause",
                "might cause",
                "could cause",
                "can cause",
                "may lead to",
                "might lead to",
                "could lead to",
                "can lead to",
                "would benefit from",
                "could benefit from",
                "may benefit from",
                "might benefit from",
                "consider",
                "considering",
                "discussed using",
                "discussed starting",
                "option of",
                "options include",
                "options including",
                "in the event",
                # ConText's "come back for"; a hoped-for or possible future.
                "come back for",
                "when indicated",
                "if indicated",
                "hopefully",
                "hoping",
                "sometimes necessary",
                "may be necessary",
                "may require",
                "might require",
                "may need",
                "might need",
            ),
            10,
            None,
        ),
        (("prophylaxis", "precautions", "prevention"), None, 1),
    ),
    "family": (
        # "family history" names the relatives' conditions after it: "..., and family history
        # positive." says nothing of the disease before it.
        (
            (
                "family history of",
                "family history significant for",
                "family history positive for",
                "family history is positive for",
                "family history is significant for",
                "family history",
                "family hx",
                "fhx",
                "fh",
            ),
            8,
            None,
        ),
        # Other people than the patient (GUIDELINE: "a relative or another person").
        (
            (
                "patients",
                "other patients",
                "many patients",
                "most patients",
                "some patients",
                "people",
                "individuals",
            ),
            6,
            None,
        ),
        (
            (
                "mother",
                "mom",
                "father",
                "dad",
                "brother",
                "brothers",
                "sister",
                "sisters",
                "sibling",
                "siblings",
                "aunt",
                "aunts",
                "uncle",
                "uncles",
                "grandmother",
                "grandmothers",
                "grandfather",
                "grandfathers",
                "grandparent",
                "grandparents",
                "cousin",
                "cousins",
                "son",
                "sons",
                "daughter",
                "daughters",
                "parent",
                "parents",
                "niece",
                "nephew",
                "twin",
                "husband",
                "wife",
                "spouse",
                "relatives",
                "family member",
                "family members",
                "maternal",
                "paternal",
            ),
            8,
            3,
        ),
    ),
    "uncertain": (
        (
            (
                "possible",
                "possibly",
                "probable",
                "probably",
                "likely",
                "most likely",
                "suspected",
                "suspect",
                "suspicious for",
                "suspicious of",
                "suspicion of",
                "suspicion for",
                "questionable",
                "questionably",
                "question of",
                "rule out",
                "to rule out",
                "r/o",
                "concern for",
                "concerning for",
                "worrisome for",
                "worried about",
                "cannot exclude",
                "can not exclude",
                "cannot rule out",
                "can not rule out",
                "could not rule out",
                "may be",
                "might be",
                "could be",
                "may have",
                "might have",
                "may represent",
                "might represent",
                "presumed",
                "presumptive",
                "suggestive of",
                "suggesting",
                "suggests",
                "differential diagnosis",
                "differential includes",
                "differential diagnosis includes",
                "equivocal",
                "not clear whether",
                "not clear if",
                "unclear whether",
                "unclear if",
                "not sure whether",
                "not sure if",
                "uncertain whether",
                "uncertain if",
                "may have been",
                "might have been",
                "could have been",
                "may have had",
                "might have had",
                "could have had",
                "presumably",
                "presume",
                # ConText / pyConText possible-existence cues.
                "doubt",
                "doubtful",
                "concerned about",
                "concerned for",
                "concern about",
                "suggestion of",
                "indefinite for",
                "sounds like",
                "thinks she",
                "thinks he",
                "believes she",
                "believes he",
            ),
            5,
            None,
        ),
        (
            (
                "is likely",
                "is probable",
                "is possible",
                "is suspected",
                "was suspected",
                "suspected",
                "is questionable",
                "cannot be excluded",
                "can not be excluded",
                "cannot be ruled out",
                "not excluded",
                "not ruled out",
                "to be ruled out",
                "suggested",
                "is suggested",
                "not know for sure",
                "not sure",
                "unsure",
            ),
            None,
            3,
        ),
        (("versus", "vs"), 3, 3),
    ),
}

_PSEUDO: dict[str, tuple[str, ...]] = {
    "historical": (
        "history of present illness",
        "history of the present illness",
        "present history",
        "no history of",
        "no history",
        "no prior",
        "no previous",
        "no known history of",
        # Medication lists resumed "as prior to admission"; findings "as previously described".
        "as prior to",
        "as before",
        "as previously",
        "previously described",
        "previously noted",
        "previously mentioned",
        "previously discussed",
        "as described previously",
        "as noted previously",
        "negative history of",
        "denies history of",
        "denies any history of",
        "family history",
        "social history",
        "history and physical",
        "prior to",
        "previous to",
        "hour history",
        "hours history",
        "day history",
        "days history",
        "week history",
        "weeks history",
        "month history",
        "months history",
        "year old",
        "years old",
        "month old",
        "months old",
        "week old",
        "weeks old",
        "day old",
        "days old",
        "history was obtained",
        "history obtained",
        "history from",
        "history is obtained",
        "history provided",
        "history given",
    ),
    "hypothetical": (
        "risk factor",
        "risk factors",
        "risks and benefits of",
        "risks, benefits",
        "as if",
    ),
    "family": (
        "family practice",
        "family physician",
        "family doctor",
        "family medicine",
        "family planning",
        "family support",
        "family is",
        "family was",
        "family at bedside",
    ),
    "uncertain": (
        # The cause of a finding is named, only the link is uncertain: "Parkinson's, likely
        # secondary to radiation therapy" (the therapy was given).
        "likely due to",
        "likely secondary to",
        "likely related to",
        "most likely due to",
        "most likely secondary to",
        "most likely related to",
        "possibly due to",
        "possibly secondary to",
        "possibly related to",
        "probably due to",
        "probably secondary to",
        "probably related to",
        "as soon as possible",
        "if possible",
        "whenever possible",
        "possible risks",
        "possible complications",
        "may be discharged",
        "may be released",
        "likely to",
    ),
}

_COMMON_TERMINATORS = (
    "but",
    "however",
    "although",
    "though",
    "except",
    "aside from",
    "apart from",
    "yet",
    "nevertheless",
    "whereas",
)
_TERMINATORS: dict[str, tuple[str, ...]] = {
    "historical": (
        *_COMMON_TERMINATORS,
        "presents",
        "presented",
        "presenting",
        "now",
        "currently",
        "today",
        "comes",
        "came",
        "admitted",
        "here",
        "complains",
        "complaining",
        "who",
        "recently",
        # "History of hypertension, no history of diabetes": the negated item is no history.
        "no",
        "denies",
        "negative",
    ),
    "hypothetical": (*_COMMON_TERMINATORS, "because", "since", "given", "due to"),
    "family": (
        *_COMMON_TERMINATORS,
        "patient",
        "pt",
        "he",
        "she",
        "reports",
        "reported",
        "states",
        "stated",
        "says",
        "said",
        "notes",
        "noted",
        "noticed",
        "brought",
        "brings",
        "thinks",
        "feels",
        "felt",
        "denies",
        "denied",
        "believes",
        "gave",
        "gives",
        "concerned",
        "called",
        "describes",
        "lives",
        "accompanied",
        "and has",
        "and had",
        "and is",
        "and was",
    ),
    "uncertain": (*_COMMON_TERMINATORS, "which", "and"),
}

# Subjects that make a sentence in a family history section the patient's own ("she" / "he" may
# be a relative there: "Her brother died of infection. He was ...").
_PATIENT_WORDS = frozenset({"patient", "pt"})
# Words right before a drug that say the patient takes it now ("on anticoagulation").
_CURRENT_WORDS = frozenset({"on", "takes", "taking", "currently"})
_PAST_WORDS = frozenset({"was", "were", "been", "previously"})

_SECTION_TRAITS = {
    "past_medical_history": "historical",
    "past_surgical_history": "historical",
    "family_history": "family",
}

_WORD = re.compile(r"[A-Za-z]+")
_JOINERS = frozenset({"/", "'", "-"})  # "h/o", "s/p", "r/o", "mother's"
_MONTHS = (
    "jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    "sep(?:t|tember)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
)
# "in 2004", "in December of 2003", "in Dec. 2003", "in 12/2003".
_MONTH_OR_NUMBER = r"(?:(?:" + _MONTHS + r")\.?\s+(?:of\s+)?|(?:0?[1-9]|1[0-2])/)?"
_YEAR_AFTER = re.compile(r"\s+" + _MONTH_OR_NUMBER + r"(?:19|20)[0-9]{2}(?![0-9])", re.IGNORECASE)
# A trailing question mark ("pneumonia?") makes the words just before it uncertain.
_QUESTION_SCOPE = 2
# A sentence end (punctuation followed by space, MTSamples' comma or the end) or a newline.
_BREAK = re.compile(r"[.;!?](?=[\s,]|$)|\n")

# Rule categories (the non-negation traits) and the kinds of dictionary entries.
_CATEGORIES = ("historical", "hypothetical", "family", "uncertain")
_UNCERTAIN = _CATEGORIES.index("uncertain")
_PSEUDO_KIND, _TRIGGER_KIND, _TERMINATOR_KIND = 0, 1, 2


def _tokens(phrase: str) -> tuple[str, ...]:
    """The letter runs of a phrase, lower case, as the scanner's words ("h/o" -> "h", "o")."""
    out: list[str] = []
    for part in phrase.split():
        if part == _YEAR:
            out.append(_YEAR)
        else:
            out.extend(w.lower() for w in _WORD.findall(part))
    return tuple(out)


# One entry per phrase: (words, kind, category index, forward scope, backward scope, needs year).
_Entry = tuple[tuple[str, ...], int, int, int, int, bool]


def _build_index() -> tuple[dict[str, list[_Entry]], dict[tuple[str, str], list[_Entry]], int, int]:
    """Entries by first word (one-word phrases) and by first two words (those plus longer ones)."""
    index: dict[str, list[_Entry]] = {}
    max_fwd = max_bwd = _QUESTION_SCOPE
    # A phrase listed in two rules of one trait ("suspected" forward and backward) is one entry
    # with both scopes: two entries at one position would block each other.
    merged: dict[tuple[tuple[str, ...], int, int, bool], tuple[int, int]] = {}

    def add(phrases: Iterable[str], kind: int, category: int, fwd: int, bwd: int) -> None:
        for phrase in phrases:
            tokens = _tokens(phrase)
            year = tokens[-1] == _YEAR
            words = tokens[:-1] if year else tokens
            key = (words, kind, category, year)
            old_fwd, old_bwd = merged.get(key, (-1, -1))
            merged[key] = (max(fwd, old_fwd), max(bwd, old_bwd))

    for c, category in enumerate(_CATEGORIES):
        add(_PSEUDO[category], _PSEUDO_KIND, c, -1, -1)
        for phrases, fwd, bwd in _RULES[category]:
            f = -1 if fwd is None else fwd
            b = -1 if bwd is None else bwd
            max_fwd, max_bwd = max(max_fwd, f), max(max_bwd, b)
            add(phrases, _TRIGGER_KIND, c, f, b)
        add(_TERMINATORS[category], _TERMINATOR_KIND, c, -1, -1)
    for (words, kind, category, year), (fwd, bwd) in merged.items():
        index.setdefault(words[0], []).append((words, kind, category, fwd, bwd, year))
    single: dict[str, list[_Entry]] = {}
    pairs: dict[tuple[str, str], list[_Entry]] = {}
    for first, entries in index.items():
        single[first] = [e for e in entries if len(e[0]) == 1]
        for e in entries:
            if len(e[0]) > 1:
                pairs.setdefault((first, e[0][1]), list(single[first])).append(e)
    for group in (*single.values(), *pairs.values()):
        # The longest phrase first ("prior to admission" over the pseudo "prior to"), then
        # pseudo-triggers, so a pseudo blocks a trigger of its length or shorter at its start.
        group.sort(key=lambda e: (-len(e[0]) - e[5], e[1]))
    return single, pairs, max_fwd, max_bwd


_SINGLE, _PAIRS, _MAX_FORWARD, _MAX_BACKWARD = _build_index()
# One pass over the words finds the rule phrases and the negation list rule's cue words.
_SCAN_WORDS = frozenset(_SINGLE) | PRE_TRIGGER_FIRST_WORDS


class ContextScanner:
    """Context traits of many entities of one text: triggers found once, entities from a window."""

    def __init__(self, text: str, sections: SectionIndex | None = None) -> None:
        self.text = text
        self.sections = sections
        self._negation = negation = NegationScanner(text)
        # Words are the letter runs the negation scanner found; scopes are counted in them.
        starts, ends = negation.run_starts, negation.run_ends
        self._starts, self._ends = starts, ends
        words = negation.lower_words
        breaks = [m.start() for m in _BREAK.finditer(text)]
        if sections is not None and sections.sections:
            # A header is a clause of its own: its words ("FAMILY HISTORY:") reach no entity.
            bounds = (b for s in sections.sections for b in (s.header_start, s.header_end))
            breaks = sorted({*breaks, *bounds})
        self._breaks = breaks
        self._words = words
        self._markers = "(-)" in text  # the negation marker rule has work only then
        # (first word, last word, start, end, category, forward scope, backward scope)
        triggers: list[tuple[int, int, int, int, int, int, int]] = []
        terminators: list[list[int]] = [[] for _ in _CATEGORIES]
        blocked_until = [0] * len(_CATEGORIES)
        n = len(words)
        single, pairs = _SINGLE, _PAIRS
        hits = [i for i, w in enumerate(words) if w in _SCAN_WORDS]
        negation.use_cue_candidates(hits)
        for i in hits:
            word = words[i]
            if word not in single:
                continue  # a negation cue only
            entries = pairs.get((word, words[i + 1])) if i + 1 < n else None
            for tokens, kind, c, fwd, bwd, year in entries or single[word]:
                size = len(tokens)
                if size > 2 and (i + size > n or not _matches(words, i, tokens)):
                    continue
                if size > 1 and not _joined(text, starts, ends, i, size):
                    continue
                end = ends[i + size - 1]
                if year:
                    match = _YEAR_AFTER.match(text, end)
                    if match is None:
                        continue
                    end = match.end()
                if kind == _TERMINATOR_KIND:
                    terminators[c].append(i)
                    continue
                if i < blocked_until[c]:
                    continue
                blocked_until[c] = i + size
                if kind == _TRIGGER_KIND:
                    triggers.append((i, i + size - 1, starts[i], end, c, fwd, bwd))
        question = text.find("?")
        while question >= 0:
            after = bisect_left(starts, question)
            if question == 0 or text[question - 1].isspace() or text[question - 1] in ",(":
                # A leading "?" ("? hypovolemia") questions the words after it; it counts as
                # the word before them.
                triggers.append(
                    (after - 1, after - 1, question, question + 1, _UNCERTAIN, _QUESTION_SCOPE, -1)
                )
            else:
                triggers.append(
                    (after, after - 1, question, question + 1, _UNCERTAIN, -1, _QUESTION_SCOPE)
                )
            question = text.find("?", question + 1)
        triggers.sort()
        for t in terminators:
            t.sort()
        self._t_first = [t[0] for t in triggers]
        self._triggers = triggers
        self._terminators = terminators

    def _terminated(self, category: int, after: int, before: int) -> bool:
        """Whether a terminator of `category` starts at a word in [after, before)."""
        terms = self._terminators[category]
        return bisect_left(terms, after) < bisect_left(terms, before)

    def traits(self, start: int, end: int) -> tuple[TraitEvidence, ...]:
        """The true traits of the entity `text[start:end]`, one evidence each, in TRAITS order."""
        text = self.text
        found: dict[str, TraitEvidence] = {}
        negation = self._negation.negation_trigger(start, end)
        if negation is None:
            negation = self._negation.list_negation_trigger(start, end)
        if negation is None and self._markers:
            negation = self._negation.marker_negation_trigger(start, end)
        if negation is not None:
            n_start, n_end = negation
            found["negated"] = TraitEvidence("negated", text[n_start:n_end], n_start, n_end, "rule")
        breaks, triggers, t_first = self._breaks, self._triggers, self._t_first
        first_in = bisect_left(self._starts, start)  # words [first_in, after) start in the entity
        after = bisect_left(self._starts, end)
        pending = set(range(len(_CATEGORIES)))
        # Forward triggers, nearest first: those ending before the entity, in its clause.
        clause = bisect_left(breaks, start)
        i = bisect_left(t_first, first_in) - 1
        while i >= 0 and pending:
            _, last, t_start, t_end, c, fwd, _ = triggers[i]
            gap = first_in - last - 1
            if gap > _MAX_FORWARD:
                break
            if (
                c in pending
                and t_end <= start
                and gap <= fwd
                and bisect_left(breaks, t_end) == clause
                and not self._terminated(c, last + 1, first_in)
            ):
                pending.discard(c)
                name = _CATEGORIES[c]
                found[name] = TraitEvidence(name, text[t_start:t_end], t_start, t_end, "rule")
            i -= 1
        # Backward triggers, nearest first: those starting after the entity, in its clause.
        clause = bisect_left(breaks, end)
        i = bisect_left(t_first, after)
        while i < len(triggers) and pending:
            first, _, t_start, t_end, c, _, bwd = triggers[i]
            gap = first - after
            if gap > _MAX_BACKWARD:
                break
            if (
                c in pending
                and t_start >= end
                and gap <= bwd
                and bisect_left(breaks, t_start) == clause
                and not self._terminated(c, after, first)
            ):
                pending.discard(c)
                name = _CATEGORIES[c]
                found[name] = TraitEvidence(name, text[t_start:t_end], t_start, t_end, "rule")
            i += 1
        if self.sections is not None:
            section = self.sections.at(start)
            trait = _SECTION_TRAITS.get(section.name) if section is not None else None
            if (
                section is not None
                and trait is not None
                and trait not in found
                and not self._section_exception(trait, first_in, bisect_left(breaks, start))
            ):
                found[trait] = TraitEvidence(
                    trait, section.header, section.header_start, section.header_end, "section"
                )
        if "family" in found:
            # Historical is the patient's own past (GUIDELINE): "history of psoriasis in his dad".
            found.pop("historical", None)
        return tuple(found[t] for t in TRAITS if t in found)

    def _section_exception(self, trait: str, first_in: int, clause: int) -> bool:
        """Whether the sentence of the entity (starting at word `first_in`) overrides its section.

        In a family history section a sentence about the patient ("The patient denies
        palpitations.") is not family; in a past history section a drug the patient is on now
        ("atrial fibrillation, on anticoagulation") is not historical (GUIDELINE section 2).
        """
        words = self._words
        if trait == "family":
            sentence_start = self._breaks[clause - 1] if clause > 0 else 0
            k = first_in - 1
            while k >= 0 and self._starts[k] >= sentence_start:
                if words[k] in _PATIENT_WORDS:
                    return True
                k -= 1
            return False
        before = words[max(0, first_in - 2) : first_in]  # "was on potassium" stays historical
        return bool(before) and before[-1] in _CURRENT_WORDS and before[0] not in _PAST_WORDS


def _joined(text: str, starts: list[int], ends: list[int], i: int, size: int) -> bool:
    """Whether words i .. i + size - 1 are one phrase: only spaces, "/" or "'" between them."""
    for k in range(i, i + size - 1):
        gap = text[ends[k] : starts[k + 1]]
        if not (gap.isspace() or gap in _JOINERS):
            return False
    return True


def _matches(words: list[str], i: int, tokens: tuple[str, ...]) -> bool:
    """Whether words[i + 2 :] starts with tokens[2:] (the first two are matched by the index)."""
    return all(words[i + k] == tokens[k] for k in range(2, len(tokens)))
