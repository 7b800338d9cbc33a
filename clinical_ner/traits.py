"""Entity traits from the surrounding text: NEGATION with NegEx-style trigger rules.

Clinical notes negate often ("No evidence of pneumonia", "denies chest pain"), and a negated
disease must not be read as a diagnosis. This follows NegEx (Chapman et al. 2001): a trigger
phrase negates entities within a few words after it (pre-triggers) or before it
(post-triggers), and the scope stops at a clause boundary or a contrast word ("but").
Validated on hand-written cases in tests; on real notes it is a flag for the validation team,
not a guarantee.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

NEGATION = "NEGATION"
SCOPE_WORDS = 6

_PRE_TRIGGERS = (
    "no",
    "not",
    "without",
    "denies",
    "denied",
    "denying",
    "negative for",
    "no evidence of",
    "no sign of",
    "no signs of",
    "no history of",
    "no complaints of",
    "free of",
    "absence of",
    "absent",
    "never had",
    "ruled out",
    "rules out",
    "resolution of",
    "neither",
    "nor",
)
_POST_TRIGGERS = (
    "was ruled out",
    "were ruled out",
    "is ruled out",
    "has been ruled out",
    "have been ruled out",
    "is negative",
    "was negative",
    "were negative",
    "is absent",
    "was absent",
    "unlikely",
    "not seen",
    "not present",
    "resolved",
)
# Pseudo-triggers look like negations but are not ("no increase", "not only", "gram negative").
_PSEUDO = ("no increase", "no change", "not only", "not necessarily", "no further", "not certain")
_TERMINATORS = frozenset(
    {
        "but",
        "however",
        "although",
        "though",
        "except",
        "aside",
        "apart",
        "which",
        "whose",
        "yet",
        "still",
        "nevertheless",
        "presents",
        "presented",
        "reports",
        "reported",
    }
)
_CLAUSE_BREAK = re.compile(r"[.;:!?\n]|,\s*(?=[A-Z])")
_WORD = re.compile(r"[A-Za-z]+")


def _phrase_pattern(phrases: Sequence[str]) -> re.Pattern[str]:
    alternatives = sorted((re.escape(p).replace(r"\ ", r"\s+") for p in phrases), key=len)
    return re.compile(r"\b(?:" + "|".join(reversed(alternatives)) + r")\b", re.IGNORECASE)


_PRE = _phrase_pattern(_PRE_TRIGGERS)
_POST = _phrase_pattern(_POST_TRIGGERS)
_PSEUDO_RE = _phrase_pattern(_PSEUDO)


def _clause_bounds(text: str, start: int, end: int) -> tuple[int, int]:
    left = 0
    for match in _CLAUSE_BREAK.finditer(text, 0, start):
        left = match.end()
    right_match = _CLAUSE_BREAK.search(text, end)
    return left, right_match.start() if right_match else len(text)


def _words_between(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def is_negated(text: str, start: int, end: int) -> bool:
    """Whether the entity `text[start:end]` is negated in its clause."""
    left, right = _clause_bounds(text, start, end)
    before = text[left:start]
    pseudo_spans = [(m.start(), m.end()) for m in _PSEUDO_RE.finditer(before)]
    for match in _PRE.finditer(before):
        if any(s <= match.start() < e for s, e in pseudo_spans):
            continue
        gap = _words_between(before[match.end() :])
        if len(gap) <= SCOPE_WORDS and not _TERMINATORS.intersection(gap):
            return True
    after = text[end:right]
    for match in _POST.finditer(after):
        gap = _words_between(after[: match.start()])
        if len(gap) <= SCOPE_WORDS // 2 and not _TERMINATORS.intersection(gap):
            return True
    return False


def entity_traits(text: str, start: int, end: int) -> tuple[str, ...]:
    """The traits of one entity, Comprehend Medical style (currently NEGATION only)."""
    return (NEGATION,) if is_negated(text, start, end) else ()
