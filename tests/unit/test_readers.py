"""Unit tests for clinical_ner.model.readers: formats, detection, label mapping, errors, dirt.

Every fixture is a small synthetic file written into tmp_path. Error tests check that the
message names the file and line and never quotes the distinctive SECRET token placed in the
data (annotation sets built from clinical notes are PHI).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clinical_ner.model.corpus import AnnotatedDoc, Entity, Token
from clinical_ner.model.readers import (
    DEFAULT_LABEL_MAP,
    AnnotationFormat,
    AnnotationFormatError,
    detect_format,
    label_path_for,
    parse_label_map,
    read_annotations,
)
from clinical_ner.model.tokenization import tokenize_offsets

SECRET = "Quokkaberg"  # a token that must never show up in an error message


# ---------------------------------------------------------------------------- helpers


def write(directory: Path, name: str, content: str | bytes) -> Path:
    """Write exactly `content` (no newline translation) and return the path."""
    path = directory / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def iob(*sentences: list[tuple[str, str]]) -> str:
    """token<TAB>tag lines, a blank line between sentences."""
    return "\n\n".join("\n".join(f"{tok}\t{tag}" for tok, tag in s) for s in sentences) + "\n"


def sent_label(directory: Path, stem: str, *sentences: list[tuple[str, str]]) -> Path:
    """Write the X_sent / X_label pair for `sentences`; return the X_sent path."""
    sent = "\n\n".join("\n".join(tok for tok, _ in s) for s in sentences) + "\n"
    label = "\n\n".join("\n".join(tag for _, tag in s) for s in sentences) + "\n"
    write(directory, f"{stem}_label", label)
    return write(directory, f"{stem}_sent", sent)


def jsonl(*records: object) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def spans(doc: AnnotatedDoc) -> list[tuple[str, str]]:
    """(entity text, label) pairs, sliced from the doc text by offset."""
    return [(doc.text[e.start : e.end], e.label) for e in doc.entities]


def assert_clean_error(
    exc: pytest.ExceptionInfo[AnnotationFormatError], path: Path, line: int | None
) -> str:
    """The message names `path` (and `line`), the attributes agree, and SECRET is absent."""
    message = str(exc.value)
    where = f"{path}:{line}:" if line is not None else f"{path}:"
    assert message.startswith(where), message
    assert exc.value.path == str(path)
    assert exc.value.line == line
    assert SECRET not in message
    assert SECRET.lower() not in message.lower()
    return message


def assert_tokens_consistent(doc: AnnotatedDoc) -> None:
    """Token offsets slice the text, and entity boundaries fall on token boundaries."""
    for token in doc.tokens:
        assert doc.text[token.start : token.end] == token.text
    starts = {t.start for t in doc.tokens}
    ends = {t.end for t in doc.tokens}
    for entity in doc.entities:
        assert entity.start in starts and entity.end in ends
        assert entity.start < entity.end


# ------------------------------------------------------------------------- IOB format

BC5_LIKE = iob(
    [
        ("Selegiline", "B-Chemical"),
        ("-", "O"),
        ("induced", "O"),
        ("postural", "B-Disease"),
        ("hypotension", "I-Disease"),
        (".", "O"),
    ],
    [("Aspirin", "B-Chemical"), ("helps", "O")],
)


def test_iob_good_path_texts_offsets_labels(tmp_path: Path) -> None:
    path = write(tmp_path, "train.tsv", BC5_LIKE)
    docs, report = read_annotations([path], "iob")

    assert len(docs) == 2
    first, second = docs
    assert first.text == "Selegiline - induced postural hypotension ."
    assert first.words == ["Selegiline", "-", "induced", "postural", "hypotension", "."]
    assert first.tokens[0] == Token("Selegiline", 0, 10)
    assert first.tokens[3] == Token("postural", 21, 29)
    assert first.entities == (Entity(0, 10, "CHEMICAL"), Entity(21, 41, "DISEASE"))
    assert spans(first) == [("Selegiline", "CHEMICAL"), ("postural hypotension", "DISEASE")]
    assert first.entity_texts() == spans(first)
    assert first.source == f"{path}:1"

    assert second.text == "Aspirin helps"
    assert spans(second) == [("Aspirin", "CHEMICAL")]
    assert second.source == f"{path}:8"
    for doc in docs:
        assert_tokens_consistent(doc)

    assert report.files == [f"{path} (iob)"]
    assert report.docs_read == 2
    assert report.docs_kept == 2
    assert report.entities == {"CHEMICAL": 2, "DISEASE": 1}
    assert report.orphan_inside_tags == 0
    assert report.duplicates_found == 0


def test_iob_extra_columns_use_first_and_last(tmp_path: Path) -> None:
    path = write(tmp_path, "x.conll", "Aspirin\tNN\tB-Chemical\nworks\tVBZ\tO\n")
    docs, _ = read_annotations([path], "iob")
    assert spans(docs[0]) == [("Aspirin", "CHEMICAL")]
    assert docs[0].text == "Aspirin works"


TAGGINGS = {
    "iob2": ["B-D", "I-D", "O", "B-T", "B-T", "I-T", "O", "B-D"],
    "bioes": ["B-D", "E-D", "O", "S-T", "B-T", "E-T", "O", "S-D"],
    "bilou": ["B-D", "L-D", "O", "U-T", "B-T", "L-T", "O", "U-D"],
}
WORDS = ["breast", "cancer", "and", "tamoxifen", "radiation", "therapy", "for", "glioma"]
EXPECTED = [
    ("breast cancer", "DISEASE"),
    ("tamoxifen", "TREATMENT"),
    ("radiation therapy", "TREATMENT"),
    ("glioma", "DISEASE"),
]


@pytest.mark.parametrize("scheme", sorted(TAGGINGS))
def test_prefixed_schemes_agree(tmp_path: Path, scheme: str) -> None:
    path = write(tmp_path, f"{scheme}.tsv", iob(list(zip(WORDS, TAGGINGS[scheme], strict=True))))
    docs, report = read_annotations([path])
    assert docs[0].text == " ".join(WORDS)
    assert spans(docs[0]) == EXPECTED
    assert report.orphan_inside_tags == 0
    assert report.entities == {"DISEASE": 2, "TREATMENT": 2}


def test_io_tags_runs_of_one_label_are_entities(tmp_path: Path) -> None:
    # IO cannot separate adjacent entities of the same type: "tamoxifen radiation therapy"
    # (T T T) is one entity, while a change of label (D -> T) starts a new one.
    words = ["breast", "cancer", "tamoxifen", "radiation", "therapy", "for", "glioma"]
    tags = ["D", "D", "T", "T", "T", "O", "Disease"]
    path = write(tmp_path, "io.tsv", iob(list(zip(words, tags, strict=True))))
    docs, report = read_annotations([path])
    assert spans(docs[0]) == [
        ("breast cancer", "DISEASE"),
        ("tamoxifen radiation therapy", "TREATMENT"),
        ("glioma", "DISEASE"),
    ]
    assert report.orphan_inside_tags == 0


def test_io_same_label_split_by_o_gives_two_entities(tmp_path: Path) -> None:
    path = write(tmp_path, "io.tsv", iob([("flu", "D"), ("or", "O"), ("cold", "D")]))
    docs, _ = read_annotations([path])
    assert docs[0].entities == (Entity(0, 3, "DISEASE"), Entity(7, 11, "DISEASE"))


def test_entity_at_sentence_end_is_closed(tmp_path: Path) -> None:
    path = write(
        tmp_path, "a.tsv", iob([("has", "O"), ("lung", "B-Disease"), ("cancer", "I-Disease")])
    )
    docs, _ = read_annotations([path])
    assert spans(docs[0]) == [("lung cancer", "DISEASE")]
    assert docs[0].entities[0].end == len(docs[0].text)


def test_docstart_lines_are_document_breaks(tmp_path: Path) -> None:
    content = (
        "-DOCSTART- -X- O O\n"
        "\n"
        "Aspirin\tB-Chemical\n"
        "-DOCSTART-\tO\n"  # no blank line before it: still ends the sentence
        "flu\tB-Disease\n"
        "\n"
        "-DOCSTART-\n"
    )
    path = write(tmp_path, "docs.tsv", content)
    docs, report = read_annotations([path])
    assert [d.text for d in docs] == ["Aspirin", "flu"]
    assert [d.source for d in docs] == [f"{path}:3", f"{path}:5"]
    assert report.docs_read == 2
    assert report.entities == {"CHEMICAL": 1, "DISEASE": 1}


def test_crlf_line_endings(tmp_path: Path) -> None:
    path = write(tmp_path, "crlf.tsv", BC5_LIKE.replace("\n", "\r\n"))
    docs, _ = read_annotations([path])
    assert [d.text for d in docs] == [
        "Selegiline - induced postural hypotension .",
        "Aspirin helps",
    ]
    assert spans(docs[0]) == [("Selegiline", "CHEMICAL"), ("postural hypotension", "DISEASE")]
    assert all("\r" not in t.text for d in docs for t in d.tokens)
    assert docs[1].source == f"{path}:8"


def test_old_mac_cr_line_endings(tmp_path: Path) -> None:
    path = write(tmp_path, "cr.tsv", BC5_LIKE.replace("\n", "\r"))
    docs, _ = read_annotations([path], "iob")
    assert [d.text for d in docs] == [
        "Selegiline - induced postural hypotension .",
        "Aspirin helps",
    ]


def test_bom_is_removed(tmp_path: Path) -> None:
    path = write(tmp_path, "bom.tsv", "\ufeff" + BC5_LIKE)
    assert detect_format(path) is AnnotationFormat.IOB
    docs, _ = read_annotations([path])
    assert docs[0].tokens[0] == Token("Selegiline", 0, 10)
    assert spans(docs[0])[0] == ("Selegiline", "CHEMICAL")


def test_non_ascii_line_separators_stay_inside_tokens(tmp_path: Path) -> None:
    # Regression: str.splitlines() broke lines at \x85 (which occurs in mojibake: "Ã\x85"
    # is "Å" read as Latin-1) and at U+2028, so such tokens broke the file apart.
    path = write(tmp_path, "nel.tsv", "\u00c3\u0085ngstr\u00f6m\tB-Disease\nrule\tO\n")
    docs, report = read_annotations([path])
    assert docs[0].text == "Ångström rule"
    assert spans(docs[0]) == [("Ångström", "DISEASE")]
    assert report.mojibake_tokens_repaired == 1


# -------------------------------------------------------------------- sent/label pairs


def test_sent_label_good_path(tmp_path: Path) -> None:
    path = sent_label(
        tmp_path,
        "train",
        [("Tamoxifen", "T"), ("for", "O"), ("breast", "D"), ("cancer", "D")],
        [("No", "O"), ("entity", "O")],
        [("Radiation", "T"), ("therapy", "T"), ("of", "O"), ("glioma", "D")],
    )
    docs, report = read_annotations([path], "sent-label")
    assert [d.text for d in docs] == [
        "Tamoxifen for breast cancer",
        "No entity",
        "Radiation therapy of glioma",
    ]
    assert docs[0].entities == (Entity(0, 9, "TREATMENT"), Entity(14, 27, "DISEASE"))
    assert spans(docs[0]) == [("Tamoxifen", "TREATMENT"), ("breast cancer", "DISEASE")]
    assert docs[1].entities == ()
    assert spans(docs[2]) == [("Radiation therapy", "TREATMENT"), ("glioma", "DISEASE")]
    assert [d.source for d in docs] == [f"{path}:1", f"{path}:6", f"{path}:9"]
    assert report.files == [f"{path} (sent-label)"]
    assert report.entities == {"DISEASE": 2, "TREATMENT": 2}
    for doc in docs:
        assert_tokens_consistent(doc)


def test_sent_label_with_txt_suffix_crlf_and_bom(tmp_path: Path) -> None:
    write(tmp_path, "dev_label.txt", "\ufeffD\r\nO\r\n\r\nT\r\n")
    path = write(tmp_path, "dev_sent.txt", "\ufeffasthma\r\nwheeze\r\n\r\nsalbutamol\r\n")
    assert label_path_for(path) == tmp_path / "dev_label.txt"
    docs, _ = read_annotations([path])
    assert [spans(d) for d in docs] == [[("asthma", "DISEASE")], [("salbutamol", "TREATMENT")]]
    assert docs[0].text == "asthma wheeze"


def test_sent_label_trailing_newline_may_differ(tmp_path: Path) -> None:
    write(tmp_path, "a_label", "D\nO")
    path = write(tmp_path, "a_sent", "flu\nshot\n")
    docs, _ = read_annotations([path])
    assert spans(docs[0]) == [("flu", "DISEASE")]


def test_sent_label_without_trailing_blank_line_keeps_last_sentence(tmp_path: Path) -> None:
    write(tmp_path, "a_label", "D\n\nT")
    path = write(tmp_path, "a_sent", "flu\n\naspirin")
    docs, report = read_annotations([path])
    assert [d.text for d in docs] == ["flu", "aspirin"]
    assert report.docs_read == 2


# ------------------------------------------------------------------------------ JSONL


def test_jsonl_doccano_label_lists(tmp_path: Path) -> None:
    text = "Metformin controls type 2 diabetes."
    path = write(
        tmp_path,
        "notes.jsonl",
        jsonl(
            {"id": 1, "text": text, "label": [[19, 34, "DISEASE"], [0, 9, "TREATMENT"]]},
            {"text": "No findings.", "label": []},
        ),
    )
    docs, report = read_annotations([path])
    first = docs[0]
    assert first.text == text
    # spans come back sorted by offset
    assert first.entities == (Entity(0, 9, "TREATMENT"), Entity(19, 34, "DISEASE"))
    assert spans(first) == [("Metformin", "TREATMENT"), ("type 2 diabetes", "DISEASE")]
    assert first.tokens == tuple(Token(text[s:e], s, e) for s, e in tokenize_offsets(text))
    assert first.words == ["Metformin", "controls", "type", "2", "diabetes", "."]
    assert first.source == f"{path}:1"
    assert docs[1].entities == ()
    assert report.files == [f"{path} (jsonl)"]
    assert report.entities == {"DISEASE": 1, "TREATMENT": 1}


def test_jsonl_entities_key_dict_spans_and_blank_lines(tmp_path: Path) -> None:
    content = (
        "\n"
        + json.dumps(
            {
                "text": "Ménière's disease treated with betahistine",
                "entities": [
                    {"start_offset": 0, "end_offset": 17, "label": "Disease"},
                    {"start": 31, "end": 42, "label": "T"},
                ],
            },
            ensure_ascii=False,
        )
        + "\n\n"
        + json.dumps({"text": "Hay fever", "label": [[0, 9, "D"]]})
        + "\n"
    )
    path = write(tmp_path, "export.json", content)
    docs, _ = read_annotations([path])
    assert spans(docs[0]) == [("Ménière's disease", "DISEASE"), ("betahistine", "TREATMENT")]
    assert docs[0].source == f"{path}:2"  # blank lines still count
    assert spans(docs[1]) == [("Hay fever", "DISEASE")]
    assert docs[1].source == f"{path}:4"


def test_jsonl_without_labels_and_empty_text(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "a.jsonl",
        jsonl({"text": "Plain note."}, {"text": "   ", "label": []}, {"text": "", "label": []}),
    )
    docs, report = read_annotations([path])
    assert [d.text for d in docs] == ["Plain note."]
    assert docs[0].entities == ()
    assert report.docs_read == 3
    assert report.empty_dropped == 2
    assert report.docs_kept == 1


def test_jsonl_adjacent_spans_are_fine(tmp_path: Path) -> None:
    path = write(
        tmp_path, "a.jsonl", jsonl({"text": "fluaspirin", "label": [[0, 3, "D"], [3, 10, "T"]]})
    )
    docs, _ = read_annotations([path])
    assert spans(docs[0]) == [("flu", "DISEASE"), ("aspirin", "TREATMENT")]


def test_jsonl_unicode_line_separator_inside_text(tmp_path: Path) -> None:
    # Regression: json.dumps(ensure_ascii=False) leaves U+2028 unescaped; it is not a line break.
    text = "flu\u2028cough"
    path = write(tmp_path, "a.jsonl", jsonl({"text": text, "label": [[0, 3, "D"], [4, 9, "D"]]}))
    docs, _ = read_annotations([path])
    assert docs[0].text == text
    assert spans(docs[0]) == [("flu", "DISEASE"), ("cough", "DISEASE")]


def test_jsonl_with_bom_and_crlf(tmp_path: Path) -> None:
    body = jsonl({"text": "flu", "label": [[0, 3, "D"]]}, {"text": "cold", "label": [[0, 4, "D"]]})
    path = write(tmp_path, "a.jsonl", "\ufeff" + body.replace("\n", "\r\n"))
    docs, _ = read_annotations([path])
    assert [spans(d) for d in docs] == [[("flu", "DISEASE")], [("cold", "DISEASE")]]


# ---------------------------------------------------------------------- multiple files


def test_multiple_files_of_different_formats(tmp_path: Path) -> None:
    first = write(tmp_path, "a.tsv", iob([("flu", "B-Disease"), ("shot", "O")]))
    second = sent_label(tmp_path, "b", [("aspirin", "T")])
    third = write(tmp_path, "c.jsonl", jsonl({"text": "cold", "label": [[0, 4, "D"]]}))
    docs, report = read_annotations([first, str(second), third])
    assert [d.text for d in docs] == ["flu shot", "aspirin", "cold"]
    assert [d.source for d in docs] == [f"{first}:1", f"{second}:1", f"{third}:1"]
    assert report.files == [f"{first} (iob)", f"{second} (sent-label)", f"{third} (jsonl)"]
    assert report.docs_read == 3
    assert report.entities == {"DISEASE": 2, "TREATMENT": 1}


def test_duplicates_across_files_are_dropped_once(tmp_path: Path) -> None:
    first = write(tmp_path, "a.tsv", iob([("flu", "B-Disease")], [("cold", "B-Disease")]))
    second = write(tmp_path, "b.tsv", iob([("flu", "B-Disease")]))
    docs, report = read_annotations([first, second])
    assert [d.source for d in docs] == [f"{first}:1", f"{first}:3"]
    assert report.duplicates_found == 1
    assert report.duplicates_dropped == 1


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.tsv"
    with pytest.raises(AnnotationFormatError) as exc:
        read_annotations([path])
    assert "no such file" in assert_clean_error(exc, path, None)


# ------------------------------------------------------------------------ detection


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("a.jsonl", "flu\tO\n", AnnotationFormat.JSONL),  # the name wins over the content
        ("A.JSON", '{"text": "x"}\n', AnnotationFormat.JSONL),
        ("train_sent", "flu\n", AnnotationFormat.SENT_LABEL),
        ("train_sent.txt", "flu\n", AnnotationFormat.SENT_LABEL),
        ("train_sents", "flu\n", AnnotationFormat.SENT_LABEL),
        ("data.txt", '\n  {"text": "x"}\n', AnnotationFormat.JSONL),
        ("data.txt", "\n\nflu\tB-Disease\n", AnnotationFormat.IOB),
        ("train.tsv", "flu\tB-Disease\n", AnnotationFormat.IOB),
        # regression: a leading -DOCSTART- line (skipped by the IOB reader) is skipped here too
        ("conll.txt", "-DOCSTART- -X- O O\n\nflu\tB-Disease\n", AnnotationFormat.IOB),
        # regression: "_sent"/"_label" inside a longer word are not pair names
        ("train_sentences.tsv", "flu\tB-Disease\n", AnnotationFormat.IOB),
        ("ncbi_labeled.tsv", "flu\tB-Disease\n", AnnotationFormat.IOB),
    ],
)
def test_detect_format(tmp_path: Path, name: str, content: str, expected: AnnotationFormat) -> None:
    assert detect_format(write(tmp_path, name, content)) is expected


@pytest.mark.parametrize("content", ["", "\n\n", f"{SECRET} has flu\n", f"{SECRET}\n"])
def test_undetectable_format(tmp_path: Path, content: str) -> None:
    path = write(tmp_path, "notes.txt", content)
    with pytest.raises(AnnotationFormatError) as exc:
        read_annotations([path])
    assert "cannot detect the format" in assert_clean_error(exc, path, None)


def test_explicit_format_overrides_detection(tmp_path: Path) -> None:
    path = write(tmp_path, "notes_sent.tsv", "flu\tD\n")  # the name alone says sent-label
    docs, report = read_annotations([path], AnnotationFormat.IOB)
    assert spans(docs[0]) == [("flu", "DISEASE")]
    assert report.files == [f"{path} (iob)"]
    with pytest.raises(ValueError):
        read_annotations([path], "conll-u")


# ---------------------------------------------------------------------- label mapping


def test_parse_label_map_defaults_and_overrides() -> None:
    assert parse_label_map(None) == DEFAULT_LABEL_MAP
    assert parse_label_map("") == DEFAULT_LABEL_MAP
    assert DEFAULT_LABEL_MAP["D"] == "DISEASE"
    assert DEFAULT_LABEL_MAP["T"] == "TREATMENT"
    assert DEFAULT_LABEL_MAP["Disease"] == "DISEASE"
    assert DEFAULT_LABEL_MAP["Chemical"] == "CHEMICAL"
    mapping = parse_label_map(" Chemical = TREATMENT ,, Gene=GENE,")
    assert mapping["Chemical"] == "TREATMENT"
    assert mapping["Gene"] == "GENE"
    assert mapping["D"] == "DISEASE"  # defaults stay underneath
    assert parse_label_map("D=DISEASE") is not DEFAULT_LABEL_MAP


@pytest.mark.parametrize("spec", ["Chemical", "=DISEASE", "Chemical=", " = "])
def test_parse_label_map_rejects_bad_items(spec: str) -> None:
    with pytest.raises(ValueError, match="SOURCE=TARGET"):
        parse_label_map(spec)


def test_label_override_and_drop(tmp_path: Path) -> None:
    path = write(tmp_path, "a.tsv", BC5_LIKE)
    docs, report = read_annotations([path], labels=parse_label_map("Chemical=TREATMENT"))
    assert spans(docs[0]) == [("Selegiline", "TREATMENT"), ("postural hypotension", "DISEASE")]
    assert report.entities == {"DISEASE": 1, "TREATMENT": 2}

    docs, report = read_annotations([path], labels=parse_label_map("Chemical=O"))
    assert spans(docs[0]) == [("postural hypotension", "DISEASE")]
    assert docs[1].entities == ()
    assert report.entities == {"DISEASE": 1}
    assert report.docs_kept == 2  # dropping a type keeps the sentence


def test_drop_in_jsonl_allows_overlap_with_dropped_type(tmp_path: Path) -> None:
    record = {"text": "cisplatin nephrotoxicity", "label": [[0, 24, "D"], [0, 9, "Chemical"]]}
    path = write(tmp_path, "a.jsonl", jsonl(record))
    docs, _ = read_annotations([path], labels=parse_label_map("Chemical=O"))
    assert spans(docs[0]) == [("cisplatin nephrotoxicity", "DISEASE")]


def test_canonical_labels_pass_through(tmp_path: Path) -> None:
    path = write(tmp_path, "a.tsv", iob([("flu", "B-DISEASE"), ("aspirin", "TREATMENT")]))
    docs, _ = read_annotations([path])
    assert spans(docs[0]) == [("flu", "DISEASE"), ("aspirin", "TREATMENT")]


def test_an_explicit_mapping_replaces_the_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "a.tsv", iob([("BRCA1", "B-Gene"), ("flu", "B-Disease")]))
    with pytest.raises(AnnotationFormatError) as exc:
        read_annotations([path], labels={"Gene": "GENE"})
    assert_clean_error(exc, path, 2)
    docs, _ = read_annotations([path], labels={**DEFAULT_LABEL_MAP, "Gene": "GENE"})
    assert spans(docs[0]) == [("BRCA1", "GENE"), ("flu", "DISEASE")]


def test_unknown_type_raises_without_quoting_it(tmp_path: Path) -> None:
    # In a mis-columned file the "type" is corpus text, so it is not quoted.
    path = write(tmp_path, "a.tsv", iob([("flu", "O"), ("Zelda", f"B-{SECRET}")]))
    with pytest.raises(AnnotationFormatError) as exc:
        read_annotations([path])
    message = assert_clean_error(exc, path, 2)
    assert "unknown entity type" in message
    assert "--labels" in message
    assert "DISEASE" in message  # the known labels are listed


def test_unknown_type_in_jsonl(tmp_path: Path) -> None:
    path = write(
        tmp_path, "a.jsonl", jsonl({"text": "ok"}, {"text": SECRET, "label": [[0, 3, SECRET]]})
    )
    with pytest.raises(AnnotationFormatError) as exc:
        read_annotations([path])
    assert "unknown entity type" in assert_clean_error(exc, path, 2)


def test_unknown_type_of_multi_token_entity_names_its_first_line(tmp_path: Path) -> None:
    path = write(
        tmp_path, "a.tsv", iob([("a", "O")], [("x", "O"), ("BRCA1", "B-Gene"), ("gene", "I-Gene")])
    )
    with pytest.raises(AnnotationFormatError) as exc:
        read_annotations([path])
    assert_clean_error(exc, path, 4)


# ------------------------------------------------------------------ malformed inputs


def test_missing_tab(tmp_path: Path) -> None:
    path = write(tmp_path, "a.tsv", f"flu\tB-Disease\nZelda {SECRET} O\n")
    with pytest.raises(AnnotationFormatError) as exc:
        read_annotations([path], "iob")
    assert "token<TAB>tag" in assert_clean_error(exc, path, 2)


@pytest.mark.parametrize("line", ["\tO", "   \tB-Disease"])
def test_empty_token(tmp_path: Path, line: str) -> None:
    path = write(tmp_path, "a.tsv", f"{SECRET}\tO\n\nflu\tO\n{line}\n")
    with pytest.raises(AnnotationFormatError) as exc:
        read_annotations([path])
    assert "empty token" in assert_clean_error(exc, path, 4)


@pytest.mark.parametrize("tag", ["B-", "I-", "-", "X-", "", "Zelda Quokkaberg", "b-disease"])
def test_malformed_tag(tmp_path: Path, tag: str) -> None:
    path = write(tmp_path, "a.tsv", f"flu\tO\n{SECRET}\t{tag}\n")
    with pytest.raises(AnnotationFormatError) as exc:
        read_annotations([path], "iob")
    assert "malformed tag" in assert_clean_error(exc, path, 2)


def test_malformed_tag_in_label_file_names_the_label_file(tmp_path: Path) -> None:
    write(tmp_path, "a_label", "O\nB-\n")
    path = write(tmp_path, "a_sent", f"flu\n{SECRET}\n")
    with pytest.raises(AnnotationFormatError) as exc:
        read_annotations([path])
    assert "malformed tag" in assert_clean_error(exc, tmp_path / "a_label", 2)


def test_sent_label_different_sentence_breaks(tmp_path: Path) -> None:
    label = write(tmp_path, "a_label", "O\n\nO\nD\n")
    path = write(tmp_path, "a_sent", f"flu\n{SECRET}\n\ncold\n")
    with pytest.raises(AnnotationFormatError) as exc:
        read_annotations([path])
    message = assert_clean_error(exc, path, 2)
    assert f"{label.name}:2" in message
    assert "misaligned" in message


@pytest.mark.parametrize("short", ["sent", "label"])
def test_sent_label_one_file_shorter(tmp_path: Path, short: str) -> None:
    tokens = ["flu", SECRET, "", "cold", "shot"]
    tags = ["D", "O", "", "D", "O"]
    if short == "sent":
        tokens = tokens[:-1]
    else:
        tags = tags[:-1]
    write(tmp_path, "a_label", "\n".join(tags) + "\n")
    path = write(tmp_path, "a_sent", "\n".join(tokens) + "\n")
    with pytest.raises(AnnotationFormatError) as exc:
        read_annotations([path])
    shorter = path if short == "sent" else tmp_path / "a_label"
    message = assert_clean_error(exc, shorter, 5)
    assert "ends early" in message
    assert "a_sent" in message and "a_label" in message


def test_sent_label_missing_label_file(tmp_path: Path) -> None:
    path = write(tmp_path, "a_sent", f"{SECRET}\n")
    with pytest.raises(AnnotationFormatError) as exc:
        read_annotations([path])
    message = assert_clean_error(exc, path, None)
    assert str(tmp_path / "a_label") in message
    assert "not found" in message


def test_passing_the_label_file(tmp_path: Path) -> None:
    label = write(tmp_path, "a_label", "D\n")
    write(tmp_path, "a_sent", f"{SECRET}\n")
    with pytest.raises(AnnotationFormatError) as exc:
        read_annotations([label])
    assert "'_sent' file" in assert_clean_error(exc, label, None)
    with pytest.raises(AnnotationFormatError) as exc:
        read_annotations([label], "sent-label")
    assert "'_sent' file" in assert_clean_error(exc, label, None)


def test_invalid_json_line(tmp_path: Path) -> None:
    path = write(tmp_path, "a.jsonl", jsonl({"text": "ok"}) + '{"text": "Zelda Quokkaberg",\n')
    with pytest.raises(AnnotationFormatError) as exc:
        read_annotations([path])
    assert "invalid JSON" in assert_clean_error(exc, path, 2)


@pytest.mark.parametrize(
    "record",
    [[SECRET], SECRET, 42, None, {"label": [[0, 3, "D"]]}, {"text": [SECRET]}, {"txt": SECRET}],
)
def test_jsonl_record_not_an_object_with_text(tmp_path: Path, record: object) -> None:
    path = write(tmp_path, "a.jsonl", "\n" + jsonl({"text": "ok"}, record))
    with pytest.raises(AnnotationFormatError) as exc:
        read_annotations([path])
    assert "string 'text'" in assert_clean_error(exc, path, 3)


@pytest.mark.parametrize(
    "bad",
    [
        ["0", 3, "D"],
        [0, "3", "D"],
        [0.0, 3, "D"],
        [True, 3, "D"],
        [0, True, "D"],
        [0, 3],
        [0, 3, "D", SECRET],
        [0, 3, 7],
        [0, 3, None],
        [SECRET, "D"],
        SECRET,
        7,
        None,
        {"start": 0, "label": "D", "text": SECRET},
        {"start_offset": 0, "end_offset": 3},
    ],
)
def test_jsonl_bad_span_shapes(tmp_path: Path, bad: object) -> None:
    record = {"text": f"flu {SECRET}", "label": [[0, 3, "D"], bad]}
    path = write(tmp_path, "a.jsonl", jsonl({"text": "ok"}, record))
    with pytest.raises(AnnotationFormatError) as exc:
        read_annotations([path])
    message = assert_clean_error(exc, path, 2)
    assert "span 2 of 'label'" in message
    assert "integer offsets" in message


@pytest.mark.parametrize("value", [SECRET, {"a": SECRET}, 3, None])
def test_jsonl_span_list_not_a_list(tmp_path: Path, value: object) -> None:
    path = write(tmp_path, "a.jsonl", jsonl({"text": SECRET, "entities": value}))
    with pytest.raises(AnnotationFormatError) as exc:
        read_annotations([path])
    assert "'entities' must be a list" in assert_clean_error(exc, path, 1)


@pytest.mark.parametrize(
    "span", [[0, 99, "D"], [-1, 3, "D"], [3, 3, "D"], [5, 2, "D"], [0, 15, "D"]]
)
def test_jsonl_span_out_of_range(tmp_path: Path, span: list[object]) -> None:
    text = f"flu {SECRET}"  # 14 characters
    path = write(tmp_path, "a.jsonl", jsonl({"text": "ok"}, {"text": text, "label": [span]}))
    with pytest.raises(AnnotationFormatError) as exc:
        read_annotations([path])
    message = assert_clean_error(exc, path, 2)
    assert "out of range for text of length 14" in message


@pytest.mark.parametrize(
    "labels",
    [
        [[0, 8, "D"], [4, 14, "D"]],  # crossing
        [[0, 14, "D"], [4, 14, "T"]],  # nested
        [[4, 14, "T"], [4, 14, "D"]],  # same span twice
    ],
)
def test_jsonl_overlapping_spans(tmp_path: Path, labels: list[list[object]]) -> None:
    path = write(tmp_path, "a.jsonl", jsonl({"text": f"flu {SECRET}", "label": labels}))
    with pytest.raises(AnnotationFormatError) as exc:
        read_annotations([path])
    assert "overlapping spans" in assert_clean_error(exc, path, 1)


@pytest.mark.parametrize(
    ("name", "fmt"), [("a.tsv", "iob"), ("a.jsonl", "jsonl"), ("a_sent", "sent-label")]
)
def test_bad_utf8_names_the_line(tmp_path: Path, name: str, fmt: str) -> None:
    if fmt == "jsonl":
        content = b'{"text": "ok"}\r\n{"text": "ok"}\n{"text": "' + SECRET.encode() + b'\xff"}\n'
    else:
        content = b"flu\tO\r\nshot\tO\n" + SECRET.encode() + b"\xff\tO\n"
    if fmt == "sent-label":
        write(tmp_path, "a_label", "O\nO\nO\n")
    path = write(tmp_path, name, content)
    with pytest.raises(AnnotationFormatError) as exc:
        read_annotations([path], fmt)
    message = assert_clean_error(exc, path, 3)
    assert "not valid UTF-8" in message
    assert "0xff" in message


def test_bad_utf8_in_label_file_names_the_label_file(tmp_path: Path) -> None:
    label = write(tmp_path, "a_label", b"O\n\xc3\n")
    path = write(tmp_path, "a_sent", f"flu\n{SECRET}\n")
    with pytest.raises(AnnotationFormatError) as exc:
        read_annotations([path])
    assert_clean_error(exc, label, 2)


def test_bad_utf8_during_detection(tmp_path: Path) -> None:
    path = write(tmp_path, "a.txt", b"flu\tO\n\x80\tO\n")
    with pytest.raises(AnnotationFormatError) as exc:
        read_annotations([path])
    assert_clean_error(exc, path, 2)


def test_error_is_a_value_error(tmp_path: Path) -> None:
    path = write(tmp_path, "a.tsv", "no tab here\n")
    with pytest.raises(ValueError):
        read_annotations([path], "iob")


# ---------------------------------------------------------------------- known dirt


def test_review_markers_are_stripped_and_counted(tmp_path: Path) -> None:
    marker = [("<", "O"), ("TO_SEE", "O"), (">", "O")]
    path = sent_label(
        tmp_path,
        "train",
        [*marker, ("Tamoxifen", "T"), ("for", "O"), ("cancer", "D")],
        [("plain", "O"), ("sentence", "O")],
        [*marker, ("asthma", "D")],
        marker,  # nothing left after the marker
        [("a", "O"), ("<", "O"), ("TO_SEE", "O"), (">", "O")],  # not at the start: kept
    )
    docs, report = read_annotations([path])
    assert [d.text for d in docs] == [
        "Tamoxifen for cancer",
        "plain sentence",
        "asthma",
        "a < TO_SEE >",
    ]
    assert docs[0].tokens[0] == Token("Tamoxifen", 0, 9)
    assert spans(docs[0]) == [("Tamoxifen", "TREATMENT"), ("cancer", "DISEASE")]
    assert spans(docs[2]) == [("asthma", "DISEASE")]
    assert docs[0].source == f"{path}:4"  # the first kept token's line
    assert report.review_markers_stripped == 3
    assert report.empty_dropped == 1
    assert report.docs_read == 5
    assert report.docs_kept == 4


def test_review_marker_in_iob(tmp_path: Path) -> None:
    path = write(
        tmp_path, "a.tsv", iob([("<", "O"), ("TO_SEE", "O"), (">", "O"), ("flu", "B-Disease")])
    )
    docs, report = read_annotations([path])
    assert docs[0].text == "flu"
    assert docs[0].entities == (Entity(0, 3, "DISEASE"),)
    assert report.review_markers_stripped == 1


def test_mojibake_is_repaired_and_counted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "a.tsv",
        iob(
            [
                ("Henoch-SchÃ¶nlein", "B-Disease"),
                ("purpura", "I-Disease"),
                ("and", "O"),
                ("antimÃ1/4llerian", "O"),
                ("hormone", "O"),
            ],
            [("SociÃ", "O"), ("FranÃ§aise", "O"), ("plain", "O")],
        ),
    )
    docs, report = read_annotations([path])
    assert docs[0].text == "Henoch-Schönlein purpura and antimüllerian hormone"
    assert spans(docs[0]) == [("Henoch-Schönlein purpura", "DISEASE")]
    assert_tokens_consistent(docs[0])
    # a lone "Ã" whose second byte was lost cannot be repaired and is left alone
    assert docs[1].words == ["SociÃ", "Française", "plain"]
    assert report.mojibake_tokens_repaired == 3


def test_mojibake_in_sent_label(tmp_path: Path) -> None:
    path = sent_label(tmp_path, "a", [("MÃ1/4llerian", "D"), ("duct", "D")])
    docs, report = read_annotations([path])
    assert spans(docs[0]) == [("Müllerian duct", "DISEASE")]
    assert report.mojibake_tokens_repaired == 1


def duplicates_file(tmp_path: Path) -> Path:
    return write(
        tmp_path,
        "dups.tsv",
        iob(
            [("flu", "B-Disease"), ("shot", "O")],
            [("cold", "B-Disease")],
            [("flu", "B-Disease"), ("shot", "O")],  # identical duplicate
            [("cold", "O")],  # conflicting duplicate
            [("flu", "B-Disease"), ("shot", "O")],  # identical again
        ),
    )


def test_duplicates_dropped_and_counted(tmp_path: Path) -> None:
    path = duplicates_file(tmp_path)
    docs, report = read_annotations([path])
    assert [d.text for d in docs] == ["flu shot", "cold"]
    assert [d.source for d in docs] == [f"{path}:1", f"{path}:4"]
    assert spans(docs[1]) == [("cold", "DISEASE")]  # the first occurrence wins
    assert report.docs_read == 5
    assert report.docs_kept == 2
    assert report.duplicates_found == 3
    assert report.duplicates_dropped == 3
    assert report.conflicting_duplicates == 1
    assert report.entities == {"DISEASE": 2}


def test_deduplicate_false_keeps_duplicates_but_counts_them(tmp_path: Path) -> None:
    docs, report = read_annotations([duplicates_file(tmp_path)], deduplicate=False)
    assert [d.text for d in docs] == ["flu shot", "cold", "flu shot", "cold", "flu shot"]
    assert report.docs_kept == 5
    assert report.duplicates_found == 3
    assert report.duplicates_dropped == 0
    assert report.conflicting_duplicates == 1
    assert report.entities == {"DISEASE": 4}


@pytest.mark.parametrize(
    ("tags", "expected", "orphans"),
    [
        # orphan I- at the start: a new entity
        (["O", "I-Disease", "I-Disease", "O"], [("b c", "DISEASE")], 1),
        # I- of another type right after B-: ends the open entity, starts a new one
        (["B-Chemical", "I-Disease", "O", "O"], [("a", "CHEMICAL"), ("b", "DISEASE")], 1),
        # I- after O after an entity: orphan
        (["B-Disease", "O", "I-Disease", "O"], [("a", "DISEASE"), ("c", "DISEASE")], 1),
        # I- continuing an IO run is an orphan too (mixed schemes)
        (["D", "I-D", "O", "O"], [("a", "DISEASE"), ("b", "DISEASE")], 1),
        # E- without B-: a one-token entity
        (["O", "E-Disease", "O", "S-Chemical"], [("b", "DISEASE"), ("d", "CHEMICAL")], 1),
        # two orphans in one sentence
        (
            ["I-Disease", "I-Chemical", "I-Chemical", "O"],
            [("a", "DISEASE"), ("b c", "CHEMICAL")],
            2,
        ),
        # well-formed: no orphan
        (
            ["B-Disease", "I-Disease", "B-Disease", "I-Disease"],
            [("a b", "DISEASE"), ("c d", "DISEASE")],
            0,
        ),
    ],
)
def test_orphan_inside_tags(
    tmp_path: Path, tags: list[str], expected: list[tuple[str, str]], orphans: int
) -> None:
    path = write(tmp_path, "a.tsv", iob(list(zip(["a", "b", "c", "d"], tags, strict=True))))
    docs, report = read_annotations([path])
    assert spans(docs[0]) == expected
    assert report.orphan_inside_tags == orphans


def test_report_as_dict(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "a.tsv",
        iob(
            [("aspirin", "B-Chemical"), ("flu", "B-Disease"), ("tamoxifen", "T")],
            [("x", "I-Disease")],
        ),
    )
    _, report = read_annotations([path])
    data = report.as_dict()
    assert data == {
        "files": [f"{path} (iob)"],
        "docs_read": 2,
        "docs_kept": 2,
        "duplicates_found": 0,
        "duplicates_dropped": 0,
        "conflicting_duplicates": 0,
        "empty_dropped": 0,
        "review_markers_stripped": 0,
        "mojibake_tokens_repaired": 0,
        "orphan_inside_tags": 1,
        "entities": {"CHEMICAL": 1, "DISEASE": 2, "TREATMENT": 1},
    }
    assert list(data["entities"]) == ["CHEMICAL", "DISEASE", "TREATMENT"]
    json.dumps(data)  # serializable as is


def test_sent_label_extra_blank_line_at_end_of_one_file_is_an_error(tmp_path: Path) -> None:
    label = write(tmp_path, "a_label", "D\n")
    path = write(tmp_path, "a_sent", f"{SECRET}\n\n")
    with pytest.raises(AnnotationFormatError) as exc:
        read_annotations([path])
    assert "ends early" in assert_clean_error(exc, label, 2)
