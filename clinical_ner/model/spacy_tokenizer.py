"""The spaCy tokenizer of every model, registered so configs name it and `spacy.load` builds it.

`ner.cfg` names it in ``[nlp] tokenizer`` (``clinical_ner.PunctuationSplittingTokenizer.v1``), so
training, pretraining and `spacy.load` all get it from the config instead of swapping it in
after initialization. It splits exactly like `clinical_ner.model.tokenization.TOKEN_PATTERN`
(the regex that runtimes without spaCy use); tests/unit/test_tokenization.py checks they agree.
The name resolves through this module's decorator once it is imported and, in any other process
that loads a model, through the ``spacy_tokenizers`` entry point in pyproject.toml.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import spacy
from spacy.language import Language
from spacy.tokenizer import Tokenizer
from spacy.util import registry

from clinical_ner.model.tokenization import PUNCTUATION

TOKENIZER_NAME = "clinical_ner.PunctuationSplittingTokenizer.v1"


def punctuation_splitting_tokenizer(nlp: Language) -> Tokenizer:
    """A spaCy tokenizer equivalent to `TOKEN_PATTERN`; it serializes with the model."""
    return Tokenizer(
        nlp.vocab,
        rules={},
        prefix_search=re.compile(rf"^{PUNCTUATION}").search,
        suffix_search=re.compile(rf"{PUNCTUATION}$").search,
        infix_finditer=re.compile(PUNCTUATION).finditer,
        token_match=None,
        url_match=None,
    )


@registry.tokenizers(TOKENIZER_NAME)
def create_punctuation_splitting_tokenizer() -> Callable[[Language], Tokenizer]:
    """The registered factory: spaCy calls it with the config, then with the pipeline."""
    return punctuation_splitting_tokenizer


def blank_pipeline() -> Language:
    """A blank English pipeline that tokenizes like the training corpora (and every model)."""
    return spacy.blank("en", config={"nlp": {"tokenizer": {"@tokenizers": TOKENIZER_NAME}}})
