"""The tokenizer shared by training and inference: every punctuation mark is its own token.

The annotated corpora (BC5CDR, NCBI-disease) split every non-alphanumeric character off
("short - term", "Parkinson ' s"), so raw notes must be tokenized the same way or entity
boundaries inside hyphenated words can never be predicted. The rule is a plain regex so that
runtimes without spaCy (Glue, Lambda) tokenize identically; the spaCy tokenizer every model
uses (`clinical_ner.model.spacy_tokenizer`, named in ner.cfg) splits the same way.
"""

from __future__ import annotations

import re

TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")
PUNCTUATION = r"[^\w\s]"  # one token each (the spaCy tokenizer: model/spacy_tokenizer.py)


def tokenize_offsets(text: str) -> list[tuple[int, int]]:
    """Character offsets of the tokens the model sees in `text`."""
    return [(m.start(), m.end()) for m in TOKEN_PATTERN.finditer(text)]
