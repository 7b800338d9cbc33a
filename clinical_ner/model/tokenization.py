"""The tokenizer shared by training and inference: every punctuation mark is its own token.

The annotated corpora (BC5CDR, NCBI-disease) split every non-alphanumeric character off
("short - term", "Parkinson ' s"), so raw notes must be tokenized the same way or entity
boundaries inside hyphenated words can never be predicted. The rule is a plain regex so that
runtimes without spaCy (Glue, Lambda) tokenize identically.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # spaCy is imported lazily: Glue and Lambda use only the regex
    from spacy.language import Language
    from spacy.tokenizer import Tokenizer

TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")
_PUNCT = r"[^\w\s]"


def tokenize_offsets(text: str) -> list[tuple[int, int]]:
    """Character offsets of the tokens the model sees in `text`."""
    return [(m.start(), m.end()) for m in TOKEN_PATTERN.finditer(text)]


def punctuation_splitting_tokenizer(nlp: Language) -> Tokenizer:
    """A spaCy tokenizer equivalent to `TOKEN_PATTERN`; it serializes with the model."""
    from spacy.tokenizer import Tokenizer

    return Tokenizer(
        nlp.vocab,
        rules={},
        prefix_search=re.compile(rf"^{_PUNCT}").search,
        suffix_search=re.compile(rf"{_PUNCT}$").search,
        infix_finditer=re.compile(_PUNCT).finditer,
        token_match=None,
        url_match=None,
    )


def blank_pipeline() -> Language:
    """A blank English pipeline that tokenizes like the training corpora."""
    import spacy

    nlp = spacy.blank("en")
    nlp.tokenizer = punctuation_splitting_tokenizer(nlp)
    return nlp
