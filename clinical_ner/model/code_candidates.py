"""The values a code linker returns and its format error (plain data, no numpy/scipy).

Kept apart from `coding` (which needs numpy and scipy to rank) because the tables' writers
(the publish Lambda runs with the AWS SDK for pandas layer, which has no scipy) read and write
codes without linking anything.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CodeCandidate:
    """One ranked ICD-10-CM code for a mention; score is a similarity in [0, 1]."""

    code: str
    description: str
    score: float


class VocabularyFormatError(ValueError):
    """A saved linker or normaliser was written in a format this release does not read."""
