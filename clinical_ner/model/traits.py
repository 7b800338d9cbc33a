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
from bisect import bisect_left, bisect_right
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


# Every trigger word is one [A-Za-z]+ run, so these bound how far from an entity a trigger that
# can still negate it may start, in runs (see NegationScanner).
_MAX_PRE_WORDS = max(len(p.split()) for p in (*_PRE_TRIGGERS, *_PSEUDO))
_MAX_POST_WORDS = max(len(p.split()) for p in _POST_TRIGGERS)


def _words_between(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


class NegationScanner:
    """Negation of many entities of one text, in time linear in the text plus the entities.

    `is_negated(text, start, end)` re-scans the text from its start to find the clause of one
    entity; calling it per entity makes a note's cost quadratic in its length (78.5 s for a
    100k-character note on the server). The scanner finds the clause breaks and letter runs once,
    then answers each entity from a window of a few words around it. The answer is the same as
    the reference rules': a trigger only negates within SCOPE_WORDS words (pre) or
    SCOPE_WORDS // 2 words (post), every trigger word is one [A-Za-z]+ run, and no trigger
    starts at a non-first word of another trigger (tests check this and compare both forms on
    random texts), so triggers further away can neither negate nor hide a nearer one.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        breaks = list(_CLAUSE_BREAK.finditer(text))
        self._break_starts = [m.start() for m in breaks]
        self._break_ends = [m.end() for m in breaks]
        runs = list(_WORD.finditer(text))
        self._run_starts = [m.start() for m in runs]
        self._run_ends = [m.end() for m in runs]

    def _last_break_end(self, before: int) -> int:
        """End of the last clause break that starts before `before` (0 if none)."""
        i = bisect_left(self._break_starts, before) - 1
        return self._break_ends[i] if i >= 0 else 0

    def _left(self, start: int) -> int:
        text = self.text
        i = start
        while i > 0 and text[i - 1].isspace():
            i -= 1
        if i > 0 and text[i - 1] == ",":
            # ", " + capital ends a clause only when the capital is before `start`; here the
            # whitespace after the comma runs up to `start`, so only newlines in it break.
            newline = text.rfind("\n", i, start)
            return newline + 1 if newline >= 0 else self._last_break_end(i - 1)
        return self._last_break_end(start)

    def _right(self, end: int) -> int:
        j = bisect_left(self._break_starts, end)
        if j > 0 and self._break_ends[j - 1] > end:
            # A ", " + capital break straddles `end`: a search from `end` sees its whitespace.
            newline = self.text.find("\n", end, self._break_ends[j - 1])
            if newline >= 0:
                return newline
        return self._break_starts[j] if j < len(self._break_starts) else len(self.text)

    def is_negated(self, start: int, end: int) -> bool:
        """Whether the entity `text[start:end]` is negated in its clause."""
        text = self.text
        left, right = self._left(start), self._right(end)
        # Pre-triggers: only the last SCOPE_WORDS + trigger-length runs before the entity count.
        last = bisect_left(self._run_starts, start)  # runs [.., last) start before `start`
        first = last - SCOPE_WORDS - _MAX_PRE_WORDS
        window = self._run_starts[first] if first >= 0 else 0
        window = max(window, left)
        pseudo_spans = [(m.start(), m.end()) for m in _PSEUDO_RE.finditer(text, window, start)]
        for match in _PRE.finditer(text, window, start):
            if any(s <= match.start() < e for s, e in pseudo_spans):
                continue
            gap = _words_between(text[match.end() : start])
            if len(gap) <= SCOPE_WORDS and not _TERMINATORS.intersection(gap):
                return True
        # Post-triggers: the first word must be within SCOPE_WORDS // 2 runs after the entity.
        after_first = bisect_right(self._run_ends, end)  # runs [after_first, ..) end after `end`
        stop = after_first + SCOPE_WORDS // 2 + _MAX_POST_WORDS
        window_end = self._run_starts[stop] if stop < len(self._run_starts) else len(text)
        after = text[end : min(right, window_end)]
        for match in _POST.finditer(after):
            gap = _words_between(after[: match.start()])
            if len(gap) <= SCOPE_WORDS // 2 and not _TERMINATORS.intersection(gap):
                return True
        return False


def is_negated(text: str, start: int, end: int) -> bool:
    """Whether the entity `text[start:end]` is negated in its clause.

    One entity: O(len(text)). For many entities of one text use `NegationScanner(text)`.
    """
    return NegationScanner(text).is_negated(start, end)


def entity_traits(text: str, start: int, end: int) -> tuple[str, ...]:
    """The traits of one entity, Comprehend Medical style (currently NEGATION only)."""
    return (NEGATION,) if is_negated(text, start, end) else ()
