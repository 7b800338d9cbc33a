"""The regex tokenizer (used without spaCy) and the spaCy tokenizer must cut text identically."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import spacy
from spacy.language import Language

from clinical_ner.model.spacy_tokenizer import blank_pipeline
from clinical_ner.model.tokenization import tokenize_offsets

CASES = [
    "short-term",
    "Selegiline-induced postural hypotension.",
    "3.5 mg b.i.d. x 10 days, then 0.25mg",
    "Parkinson's disease; patient's son's car",
    "don't",
    "Henoch\u2013Sch\u00f6nlein purpura \u2014 resolved",
    "na\u00efve caf\u00e9 \u00c5ngstr\u00f6m M\u00e9ni\u00e8re",
    "e\u0301te\u0301 (combining accents)",
    "\u0394\u03b1 \u03b1-synuclein IL-2R\u03b1",
    "\u0661\u0662 \u4e2d\u6587 \u0434\u0438\u0430\u0431\u0435\u0442",
    "a  b   c    d",
    "line1\nline2\n\nline3\r\nline4",
    "tab\tseparated\t\tvalues",
    "non\u00a0breaking\u2009thin",
    "x-ray/CT (2x) 100% 10\u00b0C \u00bd dose \u2154",
    "e.g. U.S.A. i.e.",
    "--> ... ?! [a](b) {c} <d>",
    "snake_case and B12-deficiency",
    "emoji \U0001f600 ok",
    "PREOPERATIVE DIAGNOSIS: , Morbid obesity.,POSTOPERATIVE",
    "  leading and trailing  ",
    "",
    "   ",
    "\n",
]


@pytest.fixture(scope="module")
def nlp() -> Language:
    return blank_pipeline()


def regex_tokens(text: str) -> list[tuple[str, int]]:
    return [(text[s:e], s) for s, e in tokenize_offsets(text)]


def spacy_tokens(nlp: Language, text: str) -> list[tuple[str, int]]:
    return [(t.text, t.idx) for t in nlp(text) if not t.is_space]


@pytest.mark.parametrize("text", CASES)
def test_regex_and_spacy_agree(nlp: Language, text: str) -> None:
    assert spacy_tokens(nlp, text) == regex_tokens(text)


def test_spacy_keeps_only_whitespace_apart(nlp: Language) -> None:
    # Non-space spaCy tokens never contain whitespace; dropped tokens are all whitespace.
    text = "a \u00a0b\n\n c\t\td"
    doc = nlp(text)
    assert all(t.text.isspace() for t in doc if t.is_space)
    assert all(not any(ch.isspace() for ch in t.text) for t in doc if not t.is_space)
    assert [t.text for t in doc if not t.is_space] == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("short-term", ["short", "-", "term"]),
        ("Parkinson's", ["Parkinson", "'", "s"]),
        ("3.5mg", ["3", ".", "5mg"]),
        ("b.i.d.", ["b", ".", "i", ".", "d", "."]),
        ("(CHF)", ["(", "CHF", ")"]),
        ("Sch\u00f6nlein", ["Sch\u00f6nlein"]),
    ],
)
def test_every_punctuation_mark_is_a_token(nlp: Language, text: str, expected: list[str]) -> None:
    assert [text[s:e] for s, e in tokenize_offsets(text)] == expected
    assert [t.text for t in nlp(text)] == expected


def test_offsets_slice_the_text() -> None:
    text = "Pt c/o SOB x3d; hx of COPD-related exacerbations."
    for start, end in tokenize_offsets(text):
        assert 0 <= start < end <= len(text)
        assert not text[start:end].isspace()
    assert "".join(text[s:e] for s, e in tokenize_offsets(text)) == "".join(text.split())


def test_random_strings_agree(nlp: Language) -> None:
    alphabet = "ab Z9_-.,'()/%\u00e9\u00f6\u03b1\u2013\u00b0\u00bd\n\t\u00a0 "
    rng = random.Random(20240305)
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 25)))
        assert spacy_tokens(nlp, text) == regex_tokens(text), repr(text)


def test_tokenizer_survives_to_disk_and_load(nlp: Language, tmp_path: Path) -> None:
    nlp.to_disk(tmp_path / "model")
    loaded = spacy.load(tmp_path / "model")
    assert [t.text for t in loaded("short-term")] == ["short", "-", "term"]
    for text in CASES:
        assert spacy_tokens(loaded, text) == regex_tokens(text)


def test_tokenizer_survives_bytes_round_trip(nlp: Language) -> None:
    restored = spacy.blank("en")  # the stock English tokenizer keeps "3.5", splits "do n't"
    assert [t.text for t in restored("3.5 don't")] == ["3.5", "do", "n't"]
    restored.from_bytes(nlp.to_bytes())
    assert [t.text for t in restored("3.5 don't")] == ["3", ".", "5", "don", "'", "t"]
    assert [t.text for t in restored("short-term")] == ["short", "-", "term"]


def test_the_bundled_config_names_the_registered_tokenizer() -> None:
    """init from ner.cfg alone (no swap after init) gives the punctuation-splitting tokenizer."""
    from spacy.util import load_config, load_model_from_config

    from clinical_ner.model.spacy_tokenizer import TOKENIZER_NAME
    from clinical_ner.model.training import default_config_path

    config = load_config(default_config_path())
    assert config["nlp"]["tokenizer"] == {"@tokenizers": TOKENIZER_NAME}
    built = load_model_from_config(config, auto_fill=True)  # not initialized: tokenizer only
    for text in CASES:
        tokens = [(t.text, t.idx) for t in built.make_doc(text) if not t.is_space]
        assert tokens == regex_tokens(text)


def test_a_trained_model_loads_its_tokenizer_by_name_in_a_fresh_process(tiny_model_dir) -> None:
    """`spacy.load` in a process that never imported clinical_ner resolves the tokenizer's
    registered name through the package's entry point, and splits like the regex."""
    import json
    import subprocess
    import sys

    config = (Path(tiny_model_dir) / "config.cfg").read_text(encoding="utf-8")
    assert "clinical_ner.PunctuationSplittingTokenizer.v1" in config
    code = (
        "import json, sys, spacy\n"
        "nlp = spacy.load(sys.argv[1])\n"
        "print(json.dumps([t.text for t in nlp.make_doc('3.5mg b.i.d. short-term')]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tiny_model_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    text = "3.5mg b.i.d. short-term"
    expected = [text[s:e] for s, e in tokenize_offsets(text)]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == expected
