"""Unit tests for data.notes: parsing, quarantine accounting, normalisation, PHI safety."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from clinical_ner.data.notes import (
    DEFAULT_MAX_CHARS,
    MAX_NOTE_ID_CHARS,
    Note,
    NoteBatch,
    QuarantinedRecord,
    QuarantineReason,
    discover_files,
    normalise_text,
    read_notes,
)

R = QuarantineReason
# A distinctive string standing in for PHI: it must never reach a detail, summary or error.
SECRET = "Zelda Quokkaberg MRN-99417 secret-phi"


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def jsonl(*objs: object) -> str:
    return "".join(json.dumps(o) + "\n" for o in objs)


def read(*paths: Path, max_chars: int = DEFAULT_MAX_CHARS, normalise: bool = True) -> NoteBatch:
    batch = read_notes(list(paths), max_chars=max_chars, normalise=normalise).collect()
    s = batch.summary
    assert s.records_in == s.accepted + s.quarantined == len(batch.notes) + len(batch.quarantined)
    return batch


def reasons(batch: NoteBatch) -> list[tuple[int | None, str]]:
    return [(q.locator, q.reason.value) for q in batch.quarantined]


# ----------------------------------------------------------------------------- good paths


def test_txt_note_id_is_file_stem_and_text_is_stored_as_delivered(tmp_path: Path) -> None:
    path = write(tmp_path / "note.123.txt", "DIAGNOSIS: , Diabetes.\r\n")
    batch = read(path)
    assert batch.quarantined == []
    (note,) = batch.notes
    assert note.note_id == "note.123"
    assert note.text == "DIAGNOSIS: , Diabetes.\r\n"
    assert note.source == str(path)
    assert note.locator is None
    assert note.content_sha256 == hashlib.sha256(note.text.encode()).hexdigest()
    assert (note.char_count, note.word_count) == (len(note.text), 3)


def test_jsonl_good_path_extra_keys_integer_ids_and_blank_lines(tmp_path: Path) -> None:
    content = (
        jsonl({"note_id": "a", "text": "Diabetes.", "specialty": "x"})
        + "\n   \n"
        + jsonl({"note_id": 7, "text": "Metformin."})
    )
    batch = read(write(tmp_path / "n.jsonl", content))
    assert [(n.note_id, n.text, n.locator) for n in batch.notes] == [
        ("a", "Diabetes.", 1),
        ("7", "Metformin.", 4),
    ]
    assert batch.summary.records_in == 2  # blank lines are not records


def test_csv_good_path_with_quoted_commas_and_newlines(tmp_path: Path) -> None:
    content = (
        "note_id,specialty,text\r\n"
        '1,Surgery,"Diabetes, hypertension, and ""CHF"".\nSecond line."\r\n'
        '2,"Cardio, Pulm","Metformin."\r\n'
    )
    batch = read(write(tmp_path / "n.csv", content))
    assert [(n.note_id, n.text, n.locator) for n in batch.notes] == [
        ("1", 'Diabetes, hypertension, and "CHF".\nSecond line.', 1),
        ("2", "Metformin.", 2),
    ]


def test_csv_transcription_column_is_used_only_without_text(tmp_path: Path) -> None:
    mts = write(tmp_path / "mts.csv", 'note_id,description,transcription\n1,d,"Asthma."\n')
    both = write(tmp_path / "both.csv", 'note_id,transcription,text\n2,"ignored","Gout."\n')
    batch = read(mts, both)
    assert [(n.note_id, n.text) for n in batch.notes] == [("1", "Asthma."), ("2", "Gout.")]


def test_bom_is_stripped_in_every_format(tmp_path: Path) -> None:
    bom = b"\xef\xbb\xbf"
    txt = write(tmp_path / "t.txt", bom + b"Asthma.")
    jl = write(tmp_path / "j.jsonl", bom + jsonl({"note_id": "j", "text": "Gout."}).encode())
    csv_ = write(tmp_path / "c.csv", bom + b"note_id,text\nc,Flu.\n")
    batch = read(txt, jl, csv_)
    assert batch.quarantined == []
    assert [(n.note_id, n.text) for n in batch.notes] == [
        ("t", "Asthma."),
        ("j", "Gout."),
        ("c", "Flu."),
    ]


def test_directories_are_walked_recursively_in_sorted_order(tmp_path: Path) -> None:
    write(tmp_path / "b" / "z.txt", "Zoster.")
    write(tmp_path / "b" / "a.txt", "Asthma.")
    write(tmp_path / "a.jsonl", jsonl({"note_id": "j", "text": "Gout."}))
    write(tmp_path / "c" / "readme.md", "# not a note")
    write(tmp_path / "d.txt", "Dengue.")
    batch = read(tmp_path)
    assert [n.note_id for n in batch.notes] == ["j", "a", "z", "d"]
    assert [(q.source, q.reason) for q in batch.quarantined] == [
        (str(tmp_path / "c" / "readme.md"), R.UNSUPPORTED_FILE_TYPE)
    ]
    assert batch.summary.files == 5


def test_explicit_unsupported_file_is_quarantined_and_missing_path_raises(tmp_path: Path) -> None:
    batch = read(write(tmp_path / "notes.xlsx", b"PK\x03\x04"))
    assert reasons(batch) == [(None, "unsupported_file_type")]
    with pytest.raises(FileNotFoundError):
        read_notes([tmp_path / "nope.txt"])


# ----------------------------------------------------------------------------- bad records


def test_jsonl_malformed_lines_are_quarantined_with_line_numbers(tmp_path: Path) -> None:
    lines = [
        '{"note_id": "ok", "text": "Asthma."}',  # 1
        '{"note_id": "broken", "text": ',  # 2 malformed
        '["note_id", "text"]',  # 3 not an object
        '{"text": "no id"}',  # 4 missing note_id
        '{"note_id": "no-text"}',  # 5 missing text
        '{"note_id": "null-text", "text": null}',  # 6 missing (null) text
        '{"note_id": "num-text", "text": 42}',  # 7 non-string text
        '{"note_id": 1.5, "text": "Gout."}',  # 8 note_id of the wrong type
        '"just a string"',  # 9 not an object
    ]
    batch = read(write(tmp_path / "n.jsonl", "\n".join(lines) + "\n"))
    assert [n.note_id for n in batch.notes] == ["ok"]
    assert reasons(batch) == [
        (2, "malformed_json"),
        (3, "not_an_object"),
        (4, "missing_field"),
        (5, "missing_field"),
        (6, "missing_field"),
        (7, "invalid_text_type"),
        (8, "invalid_note_id"),
        (9, "not_an_object"),
    ]
    by_locator = {q.locator: q for q in batch.quarantined}
    assert by_locator[5].note_id == "no-text"
    assert "text" in by_locator[5].detail
    assert by_locator[7].detail == "text must be a string, got number"


def test_csv_without_required_columns_is_one_schema_mismatch(tmp_path: Path) -> None:
    wrong = write(tmp_path / "wrong.csv", "id,body\n1,Asthma.\n2,Gout.\n")
    empty = write(tmp_path / "empty.csv", "")
    batch = read(wrong, empty)
    assert batch.notes == []
    assert [(q.source, q.locator, q.reason) for q in batch.quarantined] == [
        (str(wrong), None, R.SCHEMA_MISMATCH),
        (str(empty), None, R.SCHEMA_MISMATCH),
    ]


def test_csv_rows_with_missing_or_extra_fields(tmp_path: Path) -> None:
    content = "note_id,other,text\n1,x,Asthma.\n2,x\n3\n4,x,Gout.,extra\n\n5,x,Flu.\n"
    batch = read(write(tmp_path / "n.csv", content))
    assert [(n.note_id, n.locator) for n in batch.notes] == [("1", 1), ("5", 5)]
    assert reasons(batch) == [(2, "missing_field"), (3, "missing_field"), (4, "malformed_row")]


def test_bad_utf8_txt_and_csv_quarantine_whole_file_jsonl_only_the_line(tmp_path: Path) -> None:
    txt = write(tmp_path / "t.txt", b"Asthma \xff\xfe.")
    # The bad byte is in the last row: earlier rows must not have been accepted already.
    csv_ = write(tmp_path / "c.csv", b"note_id,text\n1,Asthma.\n2,Gout \xc3\x28.\n")
    jl = write(
        tmp_path / "j.jsonl",
        b'{"note_id": "a", "text": "Asthma."}\n'
        b'{"note_id": "b", "text": "Gout \xe9."}\n'
        b'{"note_id": "c", "text": "Flu."}\n',
    )
    batch = read(txt, csv_, jl)
    assert [n.note_id for n in batch.notes] == ["a", "c"]
    assert [(q.source, q.locator, q.reason) for q in batch.quarantined] == [
        (str(txt), None, R.BAD_ENCODING),
        (str(csv_), None, R.BAD_ENCODING),
        (str(jl), 2, R.BAD_ENCODING),
    ]
    assert batch.quarantined[0].note_id == "t"


def test_lone_surrogate_escape_in_json_is_bad_encoding(tmp_path: Path) -> None:
    batch = read(write(tmp_path / "j.jsonl", '{"note_id": "s", "text": "Gout \\ud800."}\n'))
    assert reasons(batch) == [(1, "bad_encoding")]


def test_empty_and_whitespace_text(tmp_path: Path) -> None:
    objs = [
        {"note_id": "empty", "text": ""},
        {"note_id": "blank", "text": " \n\t "},
        {"note_id": "controls", "text": "\x00\x07\x1b"},  # empty once control chars are gone
    ]
    txt = write(tmp_path / "blank.txt", "   \n")
    batch = read(write(tmp_path / "n.jsonl", jsonl(*objs)), txt)
    assert [(q.note_id, q.reason) for q in batch.quarantined] == [
        ("empty", R.EMPTY_TEXT),
        ("blank", R.EMPTY_TEXT),
        ("controls", R.EMPTY_TEXT),
        ("blank", R.EMPTY_TEXT),
    ]


def test_too_long_is_judged_on_the_stored_text(tmp_path: Path) -> None:
    objs = [
        {"note_id": "at-limit", "text": "x" * 20},
        {"note_id": "over", "text": "x" * 21},
        # 23 characters as delivered (and stored), 20 once the CR/LF pairs collapse: too long.
        {"note_id": "crlf", "text": "abcdefgh\r\n" * 2 + "a\r\n"},
    ]
    big_txt = write(tmp_path / "big.txt", "y" * 200)  # rejected from its size alone
    batch = read(write(tmp_path / "n.jsonl", jsonl(*objs)), big_txt, max_chars=20)
    assert [n.note_id for n in batch.notes] == ["at-limit"]
    assert [(q.note_id, q.reason) for q in batch.quarantined] == [
        ("over", R.TOO_LONG),
        ("crlf", R.TOO_LONG),
        ("big", R.TOO_LONG),
    ]
    assert batch.quarantined[0].detail == "text has 21 characters; limit is 20"


def test_duplicate_note_id_versus_duplicate_record(tmp_path: Path) -> None:
    first = write(
        tmp_path / "a.jsonl",
        jsonl(
            {"note_id": "n1", "text": "Asthma."},
            {"note_id": "n1", "text": "Gout."},  # same id, other text
            {"note_id": "n1", "text": "Asthma."},  # exact re-drop
            {"note_id": "n2", "text": ""},  # rejected: does not claim n2
            {"note_id": "n2", "text": "Flu."},
        ),
    )
    again = write(tmp_path / "b.csv", "note_id,text\nn1,Asthma.\nn2,Flu!\n")
    batch = read(first, again)
    assert [(n.note_id, n.text) for n in batch.notes] == [("n1", "Asthma."), ("n2", "Flu.")]
    assert [(Path(q.source).name, q.locator, q.reason) for q in batch.quarantined] == [
        ("a.jsonl", 2, R.DUPLICATE_NOTE_ID),
        ("a.jsonl", 3, R.DUPLICATE_RECORD),
        ("a.jsonl", 4, R.EMPTY_TEXT),
        ("b.csv", 1, R.DUPLICATE_RECORD),
        ("b.csv", 2, R.DUPLICATE_NOTE_ID),
    ]
    assert f"{first}:1" in batch.quarantined[0].detail
    assert batch.summary.by_reason == {
        "duplicate_note_id": 2,
        "duplicate_record": 2,
        "empty_text": 1,
    }


def test_duplicates_are_judged_on_the_text_as_delivered(tmp_path: Path) -> None:
    # Another line ending is another delivered text (another note_sha256), not a re-drop.
    path = write(
        tmp_path / "n.jsonl",
        jsonl(
            {"note_id": "n", "text": "Asthma.\r\n"},
            {"note_id": "n", "text": "Asthma.\n"},
            {"note_id": "n", "text": "Asthma.\r\n"},
        ),
    )
    assert reasons(read(path)) == [(2, "duplicate_note_id"), (3, "duplicate_record")]


@pytest.mark.parametrize(
    "note_id",
    ["", "   ", "a/b", "x" * (MAX_NOTE_ID_CHARS + 1), "a\tb", "a\nb", "a\x00b", " lead", "trail "],
)
def test_invalid_note_ids(tmp_path: Path, note_id: str) -> None:
    batch = read(write(tmp_path / "n.jsonl", jsonl({"note_id": note_id, "text": "Asthma."})))
    (q,) = batch.quarantined
    assert (q.reason, q.locator, q.note_id) == (R.INVALID_NOTE_ID, 1, None)


def test_longest_valid_note_id_and_unicode_ids_are_accepted(tmp_path: Path) -> None:
    ids = ["x" * MAX_NOTE_ID_CHARS, "MTS-001_a.b", "naïve-ü"]
    batch = read(write(tmp_path / "n.jsonl", jsonl(*({"note_id": i, "text": "Flu."} for i in ids))))
    assert [n.note_id for n in batch.notes] == ids


def test_mixed_file_exact_counts(tmp_path: Path) -> None:
    content = (
        jsonl({"note_id": "g1", "text": "Asthma."}, {"note_id": "g2", "text": "Gout."})
        + "not json\n"
        + jsonl(
            {"note_id": "g3", "text": "Flu."},
            {"note_id": "g1", "text": "Asthma."},
            {"note_id": "g2", "text": "Gout, again."},
            {"note_id": "e", "text": "  "},
            {"note_id": "a/b", "text": "Flu."},
            {"text": "orphan"},
            {"note_id": "long", "text": "z" * 101},
        )
        + "\n"
    )
    batch = read(write(tmp_path / "mixed.jsonl", content), max_chars=100)
    s = batch.summary
    assert (s.records_in, s.accepted, s.quarantined) == (10, 3, 7)
    assert s.by_reason == {
        "malformed_json": 1,
        "duplicate_record": 1,
        "duplicate_note_id": 1,
        "empty_text": 1,
        "invalid_note_id": 1,
        "missing_field": 1,
        "too_long": 1,
    }
    assert s.as_dict()["in"] == 10


def test_stream_is_single_pass_and_lazy(tmp_path: Path) -> None:
    path = write(tmp_path / "n.jsonl", jsonl({"note_id": "a", "text": "Flu."}))
    stream = read_notes(path)
    assert stream.summary.records_in == 0  # nothing read until iterated
    assert [type(r) for r in stream] == [Note]
    assert stream.summary.records_in == 1
    with pytest.raises(RuntimeError):
        list(stream)


def test_discover_files_accepts_a_single_path(tmp_path: Path) -> None:
    path = write(tmp_path / "A.TXT", "Flu.")
    (f,) = discover_files(path)
    assert (f.path, f.kind) == (path, "txt")


# ----------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "PREOPERATIVE DIAGNOSIS: , Morbid obesity.,POSTOPERATIVE DIAGNOSIS:  ,Morbid obesity."
            ",PROCEDURE: , Laparoscopic gastric bypass.",
            "PREOPERATIVE DIAGNOSIS:\nMorbid obesity.\nPOSTOPERATIVE DIAGNOSIS:\nMorbid obesity."
            "\nPROCEDURE:\nLaparoscopic gastric bypass.",
        ),
        ("SUBJECTIVE:,  This 23-year-old", "SUBJECTIVE:\nThis 23-year-old"),
        ("flaring up.,MEDICATIONS: , Her only", "flaring up.\nMEDICATIONS:\nHer only"),
        (
            "these symptoms., ,PAST MEDICAL HISTORY:, None. ,ALLERGIES:  ,  , NKDA.",
            "these symptoms.\n\nPAST MEDICAL HISTORY:\nNone.\nALLERGIES:\n\nNKDA.",
        ),
        ("Left main normal.,b.  LAD.", "Left main normal.\nb.  LAD."),
        ("no masses,ABDOMEN: Soft", "no masses\nABDOMEN: Soft"),
        (
            "PHYSICAL EXAMINATION,VITAL SIGNS:  BP 120/80",
            "PHYSICAL EXAMINATION\nVITAL SIGNS:  BP 120/80",
        ),
        # Real commas stay: list after an abbreviation, prose, a comma before a lower-case word.
        ("metformin 500 mg b.i.d., aspirin daily", "metformin 500 mg b.i.d., aspirin daily"),
        ("She tried Claritin, and Zyrtec.", "She tried Claritin, and Zyrtec."),
        ("BP: 120/80, HR: 72", "BP: 120/80, HR: 72"),
        ("pressures,Using a sheath", "pressures,Using a sheath"),
        # Line endings, control characters, NFC.
        ("a\r\nb\rc\n", "a\nb\nc\n"),
        ("x\x00y\x07z\x1b\x7f\x85\x9f\tend", "xyz\tend"),
        ("cafe\u0301 na\u0308ive", "caf\u00e9 n\u00e4ive"),
        ("e\x00\u0301", "\u00e9"),  # a control char between base and accent
        ("", ""),
    ],
)
def test_normalise_text(raw: str, expected: str) -> None:
    # The MTSamples repairs are opt-in (mtsamples_repair=True); the other steps always run.
    assert normalise_text(raw, mtsamples_repair=True) == expected
    assert normalise_text(expected, mtsamples_repair=True) == expected  # idempotent


def test_mtsamples_repair_is_off_by_default() -> None:
    raw = "DIAGNOSIS: , Morbid obesity.,PLAN: , Gastric bypass.\r\n"
    assert normalise_text(raw) == "DIAGNOSIS: , Morbid obesity.,PLAN: , Gastric bypass.\n"


def test_normalisation_can_be_turned_off(tmp_path: Path) -> None:
    raw = "DIAGNOSIS: , Gout.\r\nx\x07"
    path = write(tmp_path / "n.jsonl", jsonl({"note_id": "n", "text": raw}))
    (note,) = read(path, normalise=False).notes
    assert note.text == raw
    assert note.content_sha256 == hashlib.sha256(raw.encode()).hexdigest()


# ----------------------------------------------------------------------------- PHI safety


def test_note_text_never_appears_in_quarantine_details_or_summary(tmp_path: Path) -> None:
    s = SECRET
    write(tmp_path / "bad.txt", s.encode() + b"\xff")
    write(tmp_path / "long.txt", s * 10)
    write(tmp_path / "n.jsonl", jsonl({"note_id": "d", "text": s}))
    write(
        tmp_path / "o.jsonl",
        f'{{"note_id": "x", "text": "{s}"\n'  # malformed JSON quoting the secret
        + jsonl(
            {"note_id": "d", "text": s + " changed"},  # duplicate id
            {"note_id": "d", "text": s},  # duplicate record
            {"note_id": s, "text": "Flu."},  # swapped columns: text in the id slot
            {"note_id": s + "/" + s, "text": s},
            {"note_id": "t", "text": [s]},
            [s],
        )
        + f'{{"note_id": "unterminated", "text": "{s}\n',
    )
    write(tmp_path / "p.csv", f'note_id,text\nc1,"{s}",{s}\n' + f"{s}\n" + f'c2,"{s}\n')
    write(tmp_path / "q.csv", f"id,{s}\n1,{s}\n")
    batch = read(tmp_path, max_chars=len(s) * 5)
    assert batch.notes[0].text == s  # the secret really was read
    assert len(batch.quarantined) >= 12
    assert len({q.reason for q in batch.quarantined}) >= 9
    for q in batch.quarantined:
        assert isinstance(q, QuarantinedRecord)
        for fragment in (s, "Zelda", "Quokkaberg", "MRN-99417"):
            assert fragment not in repr(q)
    assert "Quokkaberg" not in json.dumps(batch.summary.as_dict())
