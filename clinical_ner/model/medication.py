"""Medication attributes (Comprehend Medical types) found by rules and linked to their drug.

`link_attributes(text, medications, other_entities)` returns, for each medication span, the
DOSAGE, STRENGTH, ROUTE_OR_MODE, FREQUENCY, DURATION, FORM and RATE mentions that describe it
(benchmarks/annotations/GUIDELINE.md section 3 is the contract; docs/model.md "Medication
attributes" summarises the rules). A medication's attributes are read from

* the window after it, token by token, up to the next entity, a clause or list-item break
  (`.`, `;`, `:`, MTSamples' `.,` line breaks, a comma not followed by an attribute), a clause
  word (`which`, `but`, ...) or more than `MAX_GAP_WORDS` words that are not attributes; and
* the few attributes written just before a drug (`1% lidocaine`, `IV antibiotics`,
  `1 mL of a 40 mg/mL solution of Kenalog`, `two tablets of Tylenol`), unless they continue
  the previous medication's own chain (`Midazolam 2 mg IV Fentanyl`: `IV` is midazolam's).

Every window is capped (`MAX_WINDOW_CHARS` after, `MAX_PREFIX_CHARS` before a drug) and every
regex is compiled once, so the cost is linear in the number of entities and never depends on
how long a run of digits or units is. Errors name the offending span's index, never text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

ATTRIBUTE_TYPES = ("DOSAGE", "STRENGTH", "ROUTE_OR_MODE", "FREQUENCY", "DURATION", "FORM", "RATE")

MAX_WINDOW_CHARS = 200  # a sig ("600 mg tablets 1 tablet p.o. q.8h. p.r.n.") is far shorter
MAX_PREFIX_CHARS = 64  # "1 mL of a 40 mg/mL solution of " is the longest prefix seen
MAX_GAP_WORDS = 3  # "two sprays in each nostril given for three weeks": one word between


@dataclass(frozen=True)
class MedicationAttribute:
    """One attribute mention: its Comprehend Medical type and its offsets into the note."""

    type: str
    text: str
    start: int
    end: int


# --- vocabulary --------------------------------------------------------------------------------
_NUM_WORDS = (
    r"one-half|one\s+half|a\s+half|half|one|two|three|four|five|six|seven|eight|nine|ten"
    r"|eleven|twelve|fifteen|twenty|thirty"
)
# "1,000", "0.5", ".5", "1/2", "two", "one-half"; thousands need exactly three digits per group.
_NUM = rf"(?:[0-9]+(?:,[0-9]{{3}})*(?:\.[0-9]+)?(?:/[0-9]+)?|\.[0-9]+|(?:{_NUM_WORDS})(?![a-z]))"
_RANGE = rf"{_NUM}(?:\s*(?:-|\u2013|to|or)\s*{_NUM})?"
_END = r"(?![a-z0-9])"  # a unit or word ends here ("mg" but not "mgs..." / "mg2")
_MASS = (
    r"(?:milligrams?|micrograms?|milliequivalents?|grams?|mgs?|mcgs?|µg|μg|ug|gms?|g|ng"
    r"|meq|mmol)"
)
_IU = r"(?:international\s+units?|units?|iu|u)"
_VOLUME = (
    r"(?:milliliters?|millilitres?|mls?|ccs?|liters?|litres?|l|teaspoons?(?:ful)?|tsp"
    r"|tablespoons?(?:ful)?|tbsp|ounces?|oz)"
)
_COUNT_NOUN = (
    r"(?:tablets?|tabs?|capsules?|caps?|caplets?|pills?|puffs?|sprays?|drops?|gtts?"
    r"|patch(?:es)?|suppositor(?:y|ies)|cans?|scoops?|capfuls?|packets?|vials?|ampou?les?"
    r"|applications?|inhalations?|doses?|injections?|shots?|bottles?|lozenges?|troches?)"
)
_PER_TIME = r"(?:\s*/\s*|\s+per\s+|\s+an?\s+|\s+each\s+)(?:hours?|hrs?|h|minutes?|min)"
_FORM = (
    r"(?:(?:chewable|extended[- ]release|sustained[- ]release|delayed[- ]release"
    r"|enteric[- ]coated|eye|ear)\s+)?"
    r"(?:tablets?|tabs?|capsules?|caps?|caplets?|pills?|inhalers?|mdi|ointment|creams?|gels?"
    r"|drops|solution|suspension|patch(?:es)?|injections?|sprays?|lotion|suppositor(?:y|ies)"
    r"|elixir|syrup|powder|lozenges?|troches?|emulsion|foam|liquid)"
)
_ROUTE = (
    r"(?:p\.\s?o\.?|per\s+os|(?-i:PO|po|Po)|orally|oral|by\s+mouth"
    r"|(?:i\.v\.|iv)(?:\s+(?:push|piggyback|drip|bolus|infusion))?|ivpb|ivp"
    r"|intravenous(?:ly)?|i\.m\.|(?-i:IM)|intramuscular(?:ly)?"
    r"|sub-?cutaneous(?:ly)?|sub\s?-?q|sq|s\.c\.|(?-i:SC)"
    r"|sublingual(?:ly)?|(?-i:SL)|topical(?:ly)?|inhaled|via\s+inhalation"
    r"|(?:via|by|per)\s+(?:a\s+)?nebuli[sz]er|nebuli[sz]ed|per\s+rectum|rectal(?:ly)?"
    r"|(?-i:PR)|p\.r\.(?!\s?n)|transdermal(?:ly)?|intranasal(?:ly)?|nasal(?:ly)?"
    r"|(?:in|into|to)\s+(?:the\s+)?(?:each|both|left|right|affected)\s+(?:nostrils?|nares|eyes?"
    r"|ears?)"
    r"|ophthalmic|otic|local(?:ly)?|intrathecal(?:ly)?|epidural(?:ly)?|intradermal(?:ly)?"
    r"|intra-?articular(?:ly)?|vaginal(?:ly)?|per\s+vagina|buccal"
    r"|(?:via|per|by)\s+(?:the\s+)?(?:g-?tube|peg(?:\s+tube)?|ng\s+tube|j-?tube"
    r"|nasogastric\s+tube|feeding\s+tube|tube|nasal\s+cannula|face\s*mask|mask))"
)
_FREQUENCY = (
    r"(?:(?:up\s+to\s+)?(?:(?:" + _RANGE + r")\s*(?:times|x)|once|twice|thrice)"
    r"(?:\s*-\s*|\s+)?(?:(?:a|an|per|each|every|/|in\s+the)\s*)?"
    r"(?:day|daily|d|week|weekly|wk|month|monthly|hour|night|nightly|morning|evening)"
    r"|every\s+(?:other\s+)?(?:(?:" + _RANGE + r")\s*)?"
    r"(?:hours?|hrs?|h|days?|weeks?|months?|minutes?|mins?|morning|night|evening|shift)"
    r"|q\.?\s?[0-9]+(?:\s?(?:-|to)\s?[0-9]+)?\s?\.?\s?(?:hours?|hrs?|h|days?|d|weeks?|wks?|min)?\.?"
    r"|q\.?\s?(?:a\.?\s?m|p\.?\s?m|h\.?\s?s|o\.?\s?d|i\.?\s?d|day|night|week|month|morning"
    r"|evening|d|h|wk)\.?"
    r"|[bt]\.?\s?i\.?\s?d\.?|t\.?\s?i\.?\s?w\.?|p\.?\s?r\.?\s?n\.?"
    r"|as\s+(?:needed|directed|necessary|tolerated)|(?:when|if)\s+needed|on\s+demand"
    r"|(?:once\s+)?(?:daily|nightly|weekly|biweekly|monthly|hourly|yearly|annually)"
    r"|at\s+(?:bed\s*time|night|noon|h\.\s?s\.|hs)|h\.\s?s\.|(?-i:QHS|HS)"
    r"|(?:every|each|in\s+the|at)\s+(?:morning|evening|afternoon|night)"
    r"|in\s+(?:the\s+)?(?:a\.\s?m\.?|p\.\s?m\.?|am|pm)"
    r"|(?:with|before|after)\s+(?:meals|each\s+meal|breakfast|lunch|dinner|supper|food)"
    r"|a\.\s?c\.|p\.\s?c\.|(?:a|per)\s+(?:day|week|month)|/\s?day|stat)"
)
_DURATION = (
    r"(?:(?:for|x|\u00d7|times)\s*(?:the\s+next\s+|another\s+|an?\s+)?(?:(?:" + _RANGE + r")\s*)?"
    r"(?:more\s+|additional\s+|further\s+)?(?:days?|d|weeks?|wks?|months?|mos?|years?)"
    r"|(?:" + _RANGE + r")\s*-?\s*(?:days?|weeks?|months?)(?:\s+course)?)"
)

# One alternation, tried at each token start; order matters (longest reading first).
_ATTRIBUTE = re.compile(
    r"(?:"
    rf"(?P<RATE>(?:at\s+(?:a\s+rate\s+of\s+)?)?(?:{_RANGE})\s*(?:{_MASS}|{_IU}|{_VOLUME})"
    rf"(?:\s*/\s*kg)?{_PER_TIME}{_END})"
    r"|(?P<RATIO>1\s?:\s?[0-9]{1,3}(?:,?[0-9]{3})*(?![0-9]))"
    rf"|(?P<PERCENT>(?:{_RANGE})\s*(?:%|percent{_END}))"
    rf"|(?P<CONC>(?:{_RANGE})\s*(?:{_MASS}|{_IU})\s*(?:/|per)\s*(?:[0-9.]+\s*)?{_VOLUME}{_END})"
    rf"|(?P<COMBO>[0-9.]+(?:\s*/\s*[0-9.]+)+\s*{_MASS}{_END}"
    rf"|[0-9.]+\s*{_MASS}\s*-\s*[0-9.]+\s*{_MASS}{_END})"
    rf"|(?P<PERDOSE>(?:{_RANGE})\s*(?:{_MASS}|{_IU})\s*/\s*(?:kg|day|d|dose|m2)"
    r"(?:\s*(?:/|per)\s*(?:day|dose))?(?![a-z0-9]))"
    rf"|(?P<FREQUENCY>{_FREQUENCY}{_END})"
    rf"|(?P<DURATION>{_DURATION}{_END})"
    rf"|(?P<MASS>(?:{_RANGE})\s*{_MASS}{_END})"
    rf"|(?P<UNITS>(?:{_RANGE})\s*(?:{_IU}|{_VOLUME}){_END})"
    rf"|(?P<COUNT>(?:{_RANGE})\s*(?:more\s+)?{_COUNT_NOUN}{_END})"
    r"|(?P<FRACTION>[0-9]+(?:\.[0-9]+)?/[0-9]+(?:\.[0-9]+)?(?:th)?(?![0-9/]))"
    rf"|(?P<ROUTE>{_ROUTE}(?![a-z0-9]))"
    rf"|(?P<FORM>{_FORM}{_END})"
    rf"|(?P<BARE>{_RANGE}(?![0-9a-z%/]))"
    r")",
    re.IGNORECASE,
)
# Attribute group -> its type; MASS is decided per medication (STRENGTH or DOSAGE, see below).
_GROUP_TYPE = {
    "RATE": "RATE",
    "RATIO": "STRENGTH",
    "PERCENT": "STRENGTH",
    "CONC": "STRENGTH",
    "COMBO": "STRENGTH",
    "FRACTION": "FRACTION",  # "5/325", "1/150": STRENGTH only right after the drug (not dates)
    "PERDOSE": "DOSAGE",
    "FREQUENCY": "FREQUENCY",
    "DURATION": "DURATION",
    "MASS": "MASS",
    "UNITS": "DOSAGE",
    "COUNT": "DOSAGE",
    "ROUTE": "ROUTE_OR_MODE",
    "FORM": "FORM",
    "BARE": "DOSAGE",
}
_ATTRIBUTE_KINDS = frozenset(_GROUP_TYPE.values()) - {"FRACTION"}
# The first word (a _WORD run, lower case) of every attribute that does not start with a digit,
# "." or "/": other words skip the big regex, which is most of the cost (tests pin the list).
_STARTER_WORDS = """
    one two three four five six seven eight nine ten eleven twelve fifteen twenty thirty half
    one-half a at up once twice thrice every each in into to on as when if with before after per
    by via stat daily nightly weekly biweekly monthly hourly yearly annually hs qhs b bid t tid
    tiw p prn po h for times x i iv ivp ivpb intravenous intravenously im intramuscular
    intramuscularly sub subcutaneous subcutaneously sub-cutaneous sub-cutaneously subq sub-q sq
    s sc sublingual sublingually sl topical topically inhaled nebulized nebulised rectal
    rectally pr transdermal transdermally intranasal intranasally nasal nasally ophthalmic otic
    local locally intrathecal intrathecally epidural epidurally intradermal intradermally
    intra-articular intra-articularly intraarticular intraarticularly vaginal vaginally buccal
    oral orally chewable extended extended-release sustained sustained-release delayed
    delayed-release enteric enteric-coated eye ear tablet tablets tab tabs capsule capsules cap
    caps caplet caplets pill pills inhaler inhalers mdi ointment cream creams gel gels drops
    solution suspension patch patches injection injections spray sprays lotion suppository
    suppositories elixir syrup powder lozenge lozenges troche troches emulsion foam liquid
    """
_STARTERS = frozenset(_STARTER_WORDS.split())
# The last word of an attribute that does not end in a digit, "%", "." or contain "/": a drug
# whose preceding word (glue aside) is none of these has no prefix attributes, and the prefix
# scan, most of the cost otherwise, is skipped.
_ENDER_WORDS = """
    mg mgs milligram milligrams mcg mcgs microgram micrograms µg μg ug g gm gms gram grams ng
    meq mmol milliequivalent milliequivalents unit units iu u ml mls milliliter milliliters
    millilitre millilitres cc ccs l liter liters litre litres teaspoon teaspoons teaspoonful
    teaspoonfuls tsp tablespoon tablespoons tablespoonful tablespoonfuls tbsp ounce ounces oz
    percent puff puffs drop gtt gtts can cans scoop scoops capful capfuls packet packets vial
    vials ampule ampules ampoule ampoules application applications inhalation inhalations dose
    doses shot shots bottle bottles release coated mouth nebulizer nebuliser rectum nostril
    nostrils nares eye eyes ear ears tube cannula mask facemask vagina push piggyback drip bolus
    infusion day days d week weeks wk wks month months mo mos year years hour hours hr hrs h min
    minute minutes mins night morning evening afternoon noon bedtime meals meal breakfast lunch
    dinner supper food needed directed necessary tolerated demand shift course am pm
    """
_NOT_ENDERS = """
    one two three four five six seven eight nine ten eleven twelve fifteen twenty thirty half
    one-half a at up once twice thrice every each in into to on as when if with before after per
    by via for times x sub extended sustained delayed enteric chewable i b t p s h
    """
_ENDERS = (_STARTERS - frozenset(_NOT_ENDERS.split())) | frozenset(_ENDER_WORDS.split())
_WS = re.compile(r"\s*")
_WORD = re.compile(r"[^\s,.;:!?()\[\]]+")
# Words that may sit between attributes written before a drug ("1 mL of a 1% solution of").
_PREFIX_GLUE = frozenset({"of", "a", "an", "the"})
# Words that open a new clause: what follows no longer describes the medication.
_CLAUSE_WORDS = frozenset(
    {"but", "which", "who", "whom", "because", "if", "when", "while", "although", "though",
     "since", "unless", "however", "whereas", "except"}
)  # fmt: skip
_HARD_BREAKS = frozenset(".;:!?\n\r|•*")
_PARENTERAL = re.compile(
    r"i\.?v|intravenous|i\.?m\b|intramuscular|sub(?!ling)|s\.?c\b|sq|intrathecal|epidural"
    r"|intradermal"
    r"|intra-?articular",
    re.IGNORECASE,
)
_ORAL_UNIT = re.compile(r"tab|cap|pill|caplet", re.IGNORECASE)
# A mass is the amount given when the note says so: before the drug ("received 20 mg of X",
# "a total of"), or right after it ("X 80 mg was injected"; "given" is too loose there:
# "given a sample of Diovan 80 mg daily").
_GIVEN_BEFORE = re.compile(
    r"\b(?:given|received|receiving|administered|injected|infused|total\s+of|bolus)\b",
    re.IGNORECASE,
)
_GIVEN_AROUND = re.compile(
    r"\b(?:administered|injected|infused|infusion|bolus|drip)\b", re.IGNORECASE
)


@dataclass
class _Token:
    kind: str  # a _GROUP_TYPE value, or one of the non-attribute kinds below
    start: int
    end: int


_FILLER, _GLUE, _COMMA, _BREAK, _PAREN = "filler", "glue", "comma", "break", "paren"


def _token(text: str, pos: int, end: int) -> _Token:
    """The token of `text[pos:end]` starting at `pos` (whitespace already skipped)."""
    char = text[pos]
    word = None
    if char.isalpha():
        word = _WORD.match(text, pos, end)
        lower = word.group().lower() if word is not None else ""
        maybe = (
            lower in _STARTERS or lower[:1] == "q" or (lower[:1] == "x" and lower[1:2].isdigit())
        )
    else:
        maybe = True
    match = _ATTRIBUTE.match(text, pos, end) if maybe else None
    if match is not None and match.end() > pos:
        group = match.lastgroup or ""
        stop = match.end()
        if text[stop - 1] == "." and text.count(".", pos, stop - 1) == 0:
            stop -= 1  # "QDay." / "BID." end a sentence; "q.6h." / "b.i.d." keep their dots
        if stop > pos and (group != "BARE" or _bare_count_is_dosage(text, stop, end)):
            return _Token(_GROUP_TYPE[group], pos, stop)
    if char == ",":
        return _Token(_COMMA, pos, pos + 1)
    if char in _HARD_BREAKS:
        return _Token(_BREAK, pos, pos + 1)
    if char in "([":
        close = text.find(")" if char == "(" else "]", pos + 1, min(end, pos + 80))
        return _Token(_PAREN, pos, close + 1) if close >= 0 else _Token(_BREAK, pos, pos + 1)
    if word is None:
        word = _WORD.match(text, pos, end)
    if word is None:  # a lone closing bracket
        return _Token(_FILLER, pos, pos + 1)
    lower = word.group().lower()
    if lower in _CLAUSE_WORDS:
        return _Token(_BREAK, pos, word.end())
    return _Token(_GLUE if lower in _PREFIX_GLUE else _FILLER, pos, word.end())


def _bare_count_is_dosage(text: str, pos: int, end: int) -> bool:
    """A bare number is a DOSAGE count when a route or frequency follows ("1 BID", "one p.o.")."""
    nxt = _WS.match(text, pos, end).end()
    if nxt == pos or nxt >= end:
        return False
    match = _ATTRIBUTE.match(text, nxt, end)
    return match is not None and match.lastgroup in ("ROUTE", "FREQUENCY")


def _skip_ws(text: str, pos: int, end: int) -> int:
    return _WS.match(text, pos, end).end()


def _may_end_attribute(text: str, lo: int, start: int) -> bool:
    """Whether the last word before `start` (glue words aside) could end an attribute."""
    stop = start
    for _ in range(3):  # "... 40 mg/mL solution of a" at most two glue words in a row
        while stop > lo and text[stop - 1].isspace():
            stop -= 1
        first = stop
        while first > lo and not text[first - 1].isspace():
            first -= 1
        if first == stop:
            return False
        word = text[first:stop].lower()
        if word not in _PREFIX_GLUE:
            return word[-1] in "0123456789%." or "/" in word or word in _ENDERS
        stop = first
    return False


def _prefix(text: str, lo: int, start: int) -> list[_Token]:
    """Attributes written just before a drug: the longest run of attribute/glue tokens that
    ends where the drug starts (only whitespace between). `lo` is where the prefix may start."""
    if not _may_end_attribute(text, lo, start):
        return []
    if lo > 0 and not text[lo - 1].isspace():
        # Do not start inside a word or number ("00 mg" of "100 mg").
        while lo < start and not text[lo].isspace():
            lo += 1
    run: list[_Token] = []
    pos = _skip_ws(text, lo, start)
    while pos < start:
        token = _token(text, pos, start)
        if token.kind in _ATTRIBUTE_KINDS or token.kind == _GLUE:
            run.append(token)
        else:
            run = []
        pos = _skip_ws(text, token.end, start)
    while run and run[0].kind == _GLUE:
        run.pop(0)
    return [t for t in run if t.kind != _GLUE]


def _suffix(
    text: str, start: int, end: int, claim_from: int | None, *, fraction_is_strength: bool = True
) -> list[_Token]:
    """Attributes in the window `text[start:end]` after a medication.

    `claim_from` is where the next entity's prefix attributes begin: the scan stops there unless
    it is still inside this medication's unbroken chain of attributes ("2 mg IV Fentanyl").
    `fraction_is_strength`: a unitless ratio right after the medication is its STRENGTH
    ("Percocet 5/325"); not after a treatment that is no known drug ("neck flexion 4/5").
    """
    found: list[_Token] = []
    chained = True  # nothing but attributes since the medication itself
    gap = 0
    after_period = False  # the last attribute ended with "." ("b.i.d.")
    pos = _skip_ws(text, start, end)
    while pos < end:
        if claim_from is not None and pos >= claim_from and not chained:
            break
        token = _token(text, pos, end)
        kind = token.kind
        if kind == "FRACTION" and fraction_is_strength and not found and gap == 0:
            kind = token.kind = "STRENGTH"  # "Percocet 5/325", but not "surgery in 02/05"
        if kind in _ATTRIBUTE_KINDS:
            found.append(token)
            chained, gap = True, 0
            after_period = text[token.end - 1] == "."
        elif kind == _COMMA:
            # MTSamples writes line breaks as commas: ".," ends an item, and a comma continues
            # the medication only when an attribute follows that is not itself the modifier of
            # a new item ("0.5% eye drops, 1 drop in each eye" but not "Iodine, IV contrast").
            if after_period or not _attribute_follows(text, token.end, end):
                break
            chained = False
        elif kind == _BREAK:
            break
        else:
            if after_period and text[pos].isupper():
                break  # "50 mg b.i.d. His rate ...": the period of "b.i.d." ended the sentence
            gap += 1
            chained = False
            if gap > MAX_GAP_WORDS:
                break
        if kind not in _ATTRIBUTE_KINDS:
            after_period = False
        pos = _skip_ws(text, token.end, end)
    return found


def _attribute_follows(text: str, pos: int, end: int) -> bool:
    """Whether an attribute starts at `pos` (after whitespace) and no plain word follows it."""
    pos = _skip_ws(text, pos, end)
    if pos >= end:
        return False
    token = _token(text, pos, end)
    if token.kind not in _ATTRIBUTE_KINDS:
        return False
    nxt = _skip_ws(text, token.end, end)
    return nxt >= end or _token(text, nxt, end).kind not in (_FILLER, _GLUE)


def _classify(text: str, tokens: list[_Token], prefix_ids: set[int], med: tuple[int, int]) -> None:
    """Decide STRENGTH or DOSAGE for bare masses ("10 mg") of one medication, in place.

    Per the guideline a mass is the per-unit STRENGTH of a tablet drug and the DOSAGE when it is
    the amount given: a parenteral route (`Dilaudid 2 mg IV`) or words saying it was given
    (`received 20 mg of X`, `X 80 mg was injected`) make it DOSAGE, unless a unit count
    (`1 tablet`) is there.
    """
    if not any(t.kind == "MASS" for t in tokens):
        return
    unit_dose = any(t.kind == "DOSAGE" and _ORAL_UNIT.search(text, t.start, t.end) for t in tokens)
    parenteral = any(
        (t.kind == "ROUTE_OR_MODE" and _PARENTERAL.match(text, t.start, t.end))
        or (t.kind == "FORM" and "inject" in text[t.start : t.end].lower())
        for t in tokens
    )
    lo, hi = max(0, med[0] - MAX_PREFIX_CHARS), min(len(text), med[1] + 40)
    given_around = (
        _GIVEN_AROUND.search(text, lo, med[0]) is not None
        or _GIVEN_AROUND.search(text, med[1], hi) is not None
    )
    given_before = given_around or _GIVEN_BEFORE.search(text, lo, med[0]) is not None
    for token in tokens:
        if token.kind != "MASS":
            continue
        given = given_before if id(token) in prefix_ids else given_around
        dosage = not unit_dose and (parenteral or given)
        token.kind = "DOSAGE" if dosage else "STRENGTH"


def _merge_frequencies(text: str, tokens: list[_Token]) -> list[_Token]:
    """Adjacent frequency words are one FREQUENCY ("q.6h. p.r.n.", "t.i.d. with meals")."""
    merged: list[_Token] = []
    for token in tokens:
        last = merged[-1] if merged else None
        if (
            last is not None
            and last.kind == token.kind == "FREQUENCY"
            and not text[last.end : token.start].strip()
        ):
            merged[-1] = _Token("FREQUENCY", last.start, token.end)
        else:
            merged.append(token)
    return merged


def _check_spans(name: str, spans: Sequence[tuple[int, int]], size: int) -> None:
    for index, span in enumerate(spans):
        if len(span) != 2:
            raise ValueError(f"{name} span {index} is not a (start, end) pair")
        start, end = span
        if not (isinstance(start, int) and isinstance(end, int)):
            raise TypeError(f"{name} span {index} has non-integer offsets")
        if not 0 <= start <= end <= size:
            raise ValueError(f"{name} span {index} ({start}, {end}) is outside the text")


def link_attributes(
    text: str,
    medications: Sequence[tuple[int, int]],
    other_entities: Sequence[tuple[int, int]] = (),
    known_drugs: Sequence[bool] | None = None,
) -> list[tuple[MedicationAttribute, ...]]:
    """The attributes of each medication span, one tuple per span in input order.

    `medications` are the character spans of TREATMENT entities that are drugs;
    `other_entities` every other entity span of the note (attributes never overlap any span,
    and a window stops at the next one). Each attribute belongs to one medication only: when
    spans overlap, the one that ends last owns the attributes around them (the others, and
    repeated spans, get an empty tuple). `known_drugs` (one flag per medication, default all
    true) says which spans name a drug the dictionary knows: after any other treatment a
    unitless ratio is no strength.
    """
    if not isinstance(text, str):
        raise TypeError("text must be a str")
    _check_spans("medication", medications, len(text))
    _check_spans("entity", other_entities, len(text))
    if known_drugs is not None and len(known_drugs) != len(medications):
        raise ValueError("known_drugs needs one flag per medication span")
    result: list[tuple[MedicationAttribute, ...]] = [() for _ in medications]
    if not medications:
        return result

    # Disjoint blocks of overlapping spans, in text order; a block's owner is a medication.
    spans = sorted(
        [(s, e, i) for i, (s, e) in enumerate(medications)]
        + [(s, e, -1) for s, e in other_entities]
    )
    blocks: list[list[int]] = []  # [start, end, owner medication index or -1]
    for start, end, index in spans:
        if blocks and start < blocks[-1][1]:
            block = blocks[-1]
            block[1] = max(block[1], end)
        else:
            block = [start, end, -1]
            blocks.append(block)
        if index >= 0:
            owner = block[2]
            if owner < 0 or medications[index][1] > medications[owner][1]:
                block[2] = index
    if not any(block[2] >= 0 for block in blocks):
        return result

    # Attributes written before an entity: a medication's own, or, before any entity that
    # follows a medication, a barrier ("insulin and oral hypoglycemics": "oral" is not insulin's).
    prefixes: list[list[_Token]] = []
    for b, (start, _end, owner) in enumerate(blocks):
        if owner < 0 and (b == 0 or blocks[b - 1][2] < 0):
            prefixes.append([])
            continue
        floor = blocks[b - 1][1] if b else 0
        prefixes.append(_prefix(text, max(floor, start - MAX_PREFIX_CHARS), start))

    for b, (start, end, owner) in enumerate(blocks):
        if owner < 0:
            continue
        window_end = blocks[b + 1][0] if b + 1 < len(blocks) else len(text)
        window_end = min(window_end, end + MAX_WINDOW_CHARS)
        following = prefixes[b + 1] if b + 1 < len(blocks) else []
        claim_from = following[0].start if following else None
        suffix = _suffix(
            text,
            end,
            window_end,
            claim_from,
            fraction_is_strength=known_drugs is None or known_drugs[owner],
        )
        if suffix and following:
            # This medication's chain ran into the next one's prefix ("2 mg IV Fentanyl").
            last = suffix[-1].end
            prefixes[b + 1] = [t for t in following if t.start >= last]
        prefix = prefixes[b]
        tokens = prefix + suffix
        _classify(text, tokens, {id(t) for t in prefix}, (start, end))
        result[owner] = tuple(
            MedicationAttribute(t.kind, text[t.start : t.end], t.start, t.end)
            for t in _merge_frequencies(text, tokens)
        )
    return result
