"""Reliability of batch extraction and data prep under bad input and odd files (issue F).

Hostile JSON (5,000-digit numbers, deep nesting, lone surrogate escapes), non-regular files
(FIFOs, /dev/zero links, symlink loops), oversized records, path-independent idempotency, and
the `extract` command's refusals and exit codes. Every case ends with each input record either
processed or quarantined with a reason code: in = processed + quarantined.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from test_extraction import DictionaryTestDouble

from clinical_ner.cli import EXIT_NOTHING_PROCESSED, main
from clinical_ner.data import data_prep as dp
from clinical_ner.data.extraction import (
    SUMMARY_FILE,
    InputChangedError,
    OutputDirError,
    prepare_output_dir,
    run_extraction,
)
from clinical_ner.model.inference import MODEL_CARD_FILE, PredictedEntity
from clinical_ner.model.readers import AnnotationFormatError, read_annotations

NOW = datetime(2024, 3, 5, 14, 30, tzinfo=UTC)
SECRET = "Zelda Quokkaberg MRN-99417 secret-phi"
GOOD = {"note_id": "g1", "text": "Diabetes treated with metformin."}
HUGE_INT = "9" * 5000
DEEP = "[" * 100_000 + "]" * 100_000
HOSTILE_LINES = (
    json.dumps(GOOD),
    '{"note_id": "big", "text": "' + SECRET + '", "n": ' + HUGE_INT + "}",
    '{"note_id": ' + HUGE_INT + ', "text": "' + SECRET + '"}',
    DEEP,
    '{"note_id": "deep", "text": "' + SECRET + '", "x": ' + DEEP + "}",
    '{"note_id": "sur", "text": "' + SECRET + ' \\ud800 tail"}',
    '{"note_id": "\\udc00", "text": "' + SECRET + '"}',
)
HOSTILE_REASONS = {"malformed_json": 4, "bad_encoding": 1, "invalid_note_id": 1}


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def lines(*items: str) -> str:
    return "".join(f"{item}\n" for item in items)


class Hung(BaseException):
    """Raised by `deadline`; not an OSError (TimeoutError is), so no reader can swallow it."""


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Turn a hang (an open() on a FIFO, an endless read) into a test failure."""

    def expire(signum: int, frame: object) -> None:
        signal.alarm(1)  # keep firing: a swallowed signal must not leave the test hanging
        raise Hung(f"still running after {seconds} s: the reader hangs")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def frame(out: Path, table: str) -> pd.DataFrame:
    return pd.read_parquet(out / table)


# ------------------------------------------------- defect 4: hostile JSON, batch + Glue core


def test_extract_quarantines_huge_numbers_deep_nesting_and_lone_surrogates(tmp_path: Path) -> None:
    write(tmp_path / "in" / "hostile.jsonl", lines(*HOSTILE_LINES))
    out = tmp_path / "out"
    summary = run_extraction(DictionaryTestDouble(), tmp_path / "in", out, now=NOW)
    assert (summary.records_in, summary.processed, summary.quarantined) == (7, 1, 6)
    assert summary.quarantined_by_reason == HOSTILE_REASONS
    quarantine = frame(out, "quarantine")  # written as Parquet: no surrogate reached a row
    assert sorted(quarantine.locator) == [2, 3, 4, 5, 6, 7]
    by_line = quarantine.set_index("locator")
    assert by_line.loc[2, "detail"] == "JSON number has more than 4300 digits"
    assert by_line.loc[4, "detail"] == "JSON nested too deeply for the parser"
    assert by_line.loc[6, "reason"] == "bad_encoding"
    assert not quarantine.astype(str).apply(lambda c: c.str.contains("Quokkaberg")).any().any()
    assert list(frame(out, "notes").note_id) == ["g1"]


def test_glue_core_quarantines_hostile_json_per_record() -> None:
    result = dp.process_note_object("raw/notes/hostile.jsonl", lines(*HOSTILE_LINES).encode())
    assert (result.summary.records_in, result.summary.accepted) == (7, 1)
    assert dict(result.summary.by_reason) == HOSTILE_REASONS
    for record in result.quarantined:
        assert record.source == "raw/notes/hostile.jsonl"
        assert SECRET not in record.detail
        dp.quarantine_row(record, quarantined_at=NOW)["detail"].encode("utf-8")


@pytest.mark.parametrize(
    "bad",
    [
        '{"text": "' + SECRET + '", "label": [[0, ' + HUGE_INT + ', "DISEASE"]]}',
        '{"text": "' + SECRET + '", "meta": ' + DEEP + "}",
        '{"text": "' + SECRET + ' \\ud800", "label": []}',
    ],
    ids=["huge-int", "deep-nesting", "lone-surrogate"],
)
def test_one_hostile_annotation_file_is_rejected_and_the_others_used(bad: str) -> None:
    good = json.dumps({"text": "Gout flares.", "label": [[0, 4, "DISEASE"]]}) + "\n"
    dataset = dp.build_training_dataset(
        {"a_good.jsonl": good.encode(), "b_bad.jsonl": lines(bad).encode()}
    )
    assert dataset.manifest["docs_total"] == 1
    (rejected,) = dataset.rejected
    assert rejected.source == "b_bad.jsonl"
    assert rejected.reason is dp.AnnotationFileReason.MALFORMED
    assert rejected.detail.startswith("b_bad.jsonl:1: ")
    assert SECRET not in rejected.detail
    for content in dataset.files.values():
        content.decode("utf-8")


def test_annotation_reader_names_file_and_line_for_parser_limits(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.jsonl",
        lines(json.dumps({"text": "ok"}), '{"text": "x", "n": ' + HUGE_INT + "}"),
    )
    with pytest.raises(AnnotationFormatError, match=r"a\.jsonl:2: JSON number has more than"):
        read_annotations([path])


def test_undecodable_file_name_is_stored_escaped_not_as_surrogates(tmp_path: Path) -> None:
    root = tmp_path / "in"
    write(root / "ok.txt", "History of diabetes.")
    undecodable = Path(os.fsdecode(os.fsencode(root) + b"/n\xff.jsonl"))  # not UTF-8
    write(undecodable, lines(json.dumps({"note_id": "q", "text": "Hypertension."})))
    out = tmp_path / "out"
    summary = run_extraction(DictionaryTestDouble(), root, out, now=NOW)
    assert (summary.records_in, summary.processed) == (2, 2)
    sources = set(frame(out, "notes").source)
    assert str(root / "n\\xff.jsonl") in sources


# ------------------------------------------------- defect 7: idempotency keyed on content


def test_same_notes_under_another_path_replace_rows_instead_of_adding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notes = tmp_path / "notes"
    records = [{"note_id": f"n{i}", "text": f"Note {i}: diabetes."} for i in range(30)]
    write(notes / "batch.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    write(notes / "scan.pdf", b"%PDF")  # a quarantined record too
    (tmp_path / "linked").symlink_to(notes, target_is_directory=True)
    copy = tmp_path / "copy"
    write(copy / "renamed.jsonl", (notes / "batch.jsonl").read_bytes())
    write(copy / "scan.pdf", b"%PDF")
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)
    run_ids = {
        run_extraction(DictionaryTestDouble(), path, out, now=NOW).run_id
        for path in ("notes", notes, tmp_path / "linked", "./notes/", copy)
    }
    assert len(run_ids) == 1
    assert len(frame(out, "notes")) == 30
    assert len(frame(out, "quarantine")) == 1
    assert len(frame(out, "entities")) == 30

    write(copy / "renamed.jsonl", json.dumps({"note_id": "n0", "text": "Changed."}) + "\n")
    assert run_extraction(DictionaryTestDouble(), copy, out, now=NOW).run_id not in run_ids


class RewritesInputDouble(DictionaryTestDouble):
    """TEST DOUBLE that edits a not-yet-read input file while the first batch is predicted."""

    def __init__(self, target: Path) -> None:
        super().__init__()
        self.target = target

    def predict(
        self, texts: Iterable[str], batch_size: int = 64
    ) -> Iterator[list[PredictedEntity]]:
        if not self.calls:
            write(self.target, json.dumps({"note_id": "b", "text": "Edited meanwhile."}) + "\n")
        return super().predict(texts, batch_size)


def test_input_changed_during_the_run_publishes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "in"
    write(root / "a.jsonl", json.dumps({"note_id": "a", "text": "Diabetes."}) + "\n")
    write(root / "b.jsonl", json.dumps({"note_id": "b", "text": "Hypertension."}) + "\n")
    out = tmp_path / "out"
    with pytest.raises(InputChangedError, match="changed while it was being extracted"):
        run_extraction(RewritesInputDouble(root / "b.jsonl"), root, out, batch_size=1, now=NOW)
    assert not list(out.rglob("*.parquet"))
    assert not (out / SUMMARY_FILE).exists()


# ------------------------------------------------- defect 8: non-regular files, size caps


def test_fifo_device_link_and_symlink_loops_are_quarantined_without_hanging(
    tmp_path: Path,
) -> None:
    root = tmp_path / "in"
    write(root / "a.jsonl", json.dumps(GOOD) + "\n")
    real = write(tmp_path / "elsewhere" / "real.txt", "History of hypertension.")
    os.mkfifo(root / "pipe.txt")
    os.mkfifo(root / "pipe.jsonl")
    (root / "zero.txt").symlink_to("/dev/zero")
    (root / "zero.csv").symlink_to("/dev/zero")
    (root / "loop.txt").symlink_to(root / "loop.txt")
    (root / "dangling.jsonl").symlink_to(tmp_path / "missing.jsonl")
    (root / "linked.txt").symlink_to(real)  # a symlink to a regular file is read
    out = tmp_path / "out"
    with deadline(20):
        summary = run_extraction(DictionaryTestDouble(), root, out, now=NOW)
    assert (summary.records_in, summary.processed, summary.quarantined) == (8, 2, 6)
    assert summary.quarantined_by_reason == {"not_a_regular_file": 4, "unreadable_file": 2}
    quarantine = frame(out, "quarantine").set_index("source")
    assert quarantine.loc[str(root / "pipe.txt"), "detail"].startswith("a FIFO")
    assert quarantine.loc[str(root / "zero.txt"), "detail"].startswith("a character device")
    assert set(frame(out, "notes").note_id) == {"g1", "linked"}


def test_fifo_given_directly_as_input_is_quarantined(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "direct.jsonl")
    with deadline(20):
        summary = run_extraction(
            DictionaryTestDouble(), tmp_path / "direct.jsonl", tmp_path / "out", now=NOW
        )
    assert summary.quarantined_by_reason == {"not_a_regular_file": 1}


def test_overlong_jsonl_line_is_quarantined_and_the_next_line_still_read(tmp_path: Path) -> None:
    blob = "x" * (3 << 20)  # an ignored field far over the per-line cap for max_chars=50
    write(
        tmp_path / "in" / "a.jsonl",
        lines(
            json.dumps({"note_id": "big", "text": "Diabetes.", "blob": blob}),
            json.dumps({"note_id": "after", "text": "Hypertension."}),
        ),
    )
    summary = run_extraction(
        DictionaryTestDouble(), tmp_path / "in", tmp_path / "out", max_chars=50, now=NOW
    )
    assert (summary.processed, summary.quarantined_by_reason) == (1, {"too_long": 1})
    row = frame(tmp_path / "out", "quarantine").iloc[0]
    assert (row.locator, row.note_id) == (1, None)
    assert list(frame(tmp_path / "out", "notes").note_id) == ["after"]


def test_overlong_csv_row_is_quarantined_with_the_rest_of_the_file(tmp_path: Path) -> None:
    blob = "y" * (3 << 20)
    write(
        tmp_path / "in" / "a.csv",
        f'note_id,text,extra\nc1,Diabetes.,\nc2,Asthma.,"{blob}"\nc3,Gout.,\n',
    )
    summary = run_extraction(
        DictionaryTestDouble(), tmp_path / "in", tmp_path / "out", max_chars=50, now=NOW
    )
    assert (summary.records_in, summary.processed) == (2, 1)
    assert summary.quarantined_by_reason == {"too_long": 1}
    assert frame(tmp_path / "out", "quarantine").iloc[0].locator == 2


# ------------------------------------------------- defect 10: the extract command


@pytest.fixture
def model_dir(tiny_model_dir: Path) -> Path:
    return tiny_model_dir


def extract(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["extract", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_all_quarantined_or_no_records_exit_non_zero_with_a_summary(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad"
    write(bad / "a.jsonl", lines("{not json", json.dumps({"note_id": "e", "text": " "})))
    write(bad / "scan.pdf", b"%PDF")
    out = tmp_path / "out"
    code, _, err = extract(capsys, "--model", str(model_dir), "--output", str(out), str(bad))
    assert code == EXIT_NOTHING_PROCESSED != 0
    assert "nothing processed: all 3 input records quarantined" in err
    assert "in 3  processed 0  quarantined 3" in err
    assert len(frame(out, "quarantine")) == 3  # the reasons are still written
    assert json.loads((out / SUMMARY_FILE).read_text())["quarantined"] == 3

    empty = write(tmp_path / "empty" / "blank.jsonl", "\n\n")
    code, _, err = extract(
        capsys, "--model", str(model_dir), "--output", str(tmp_path / "o2"), str(empty)
    )
    assert code == EXIT_NOTHING_PROCESSED
    assert "no input record found" in err


def test_some_quarantined_exits_zero_with_the_quarantine_summary(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "in"
    write(root / "a.jsonl", lines(json.dumps(GOOD), "{not json"))
    code, out, err = extract(
        capsys, "--model", str(model_dir), "--output", str(tmp_path / "o"), str(root)
    )
    assert code == 0
    assert "in 2  processed 1  quarantined 1" in out
    assert "1 of 2 records quarantined (malformed_json 1)" in err


def test_raw_spacy_model_is_refused_unless_explicitly_allowed(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = tmp_path / "model-best"
    shutil.copytree(model_dir, raw)
    (raw / MODEL_CARD_FILE).unlink()
    (raw / "metrics.json").unlink()
    write(tmp_path / "in" / "a.jsonl", json.dumps(GOOD) + "\n")
    args = ["--model", str(raw), "--output", str(tmp_path / "o"), str(tmp_path / "in")]
    code, _, err = extract(capsys, *args)
    assert code == 2
    assert f"no {MODEL_CARD_FILE}" in err and "--allow-uncalibrated" in err
    assert not (tmp_path / "o" / SUMMARY_FILE).exists()

    code, _, err = extract(capsys, *args, "--allow-uncalibrated")
    assert code == 0
    assert "warning" in err and "uncalibrated" in err

    card = json.loads((model_dir / MODEL_CARD_FILE).read_text())
    del card["calibration"]
    write(raw / MODEL_CARD_FILE, json.dumps(card))
    write(raw / "metrics.json", "{}")
    code, _, err = extract(capsys, *args)
    assert code == 2 and "no confidence calibration" in err


@pytest.mark.parametrize("kind", ["existing-file", "under-a-file", "empty"])
def test_bad_output_is_refused_before_the_model_loads(
    kind: str,
    tmp_path: Path,
    model_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from clinical_ner.model import inference

    def must_not_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(inference.NerModel, "load", must_not_load)
    monkeypatch.chdir(tmp_path)
    blocker = write(tmp_path / "taken", "a file")
    output = {"existing-file": str(blocker), "under-a-file": str(blocker / "sub"), "empty": ""}
    write(tmp_path / "in" / "a.jsonl", json.dumps(GOOD) + "\n")
    code, _, err = extract(capsys, "--model", str(model_dir), "--output", output[kind], "in")
    assert code == 2
    assert err.startswith("clinical-ner extract: error: ")
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "taken"]  # nothing written


def test_prepare_output_dir_creates_and_probes(tmp_path: Path) -> None:
    out = prepare_output_dir(tmp_path / "a" / "b")
    assert out.is_dir() and list(out.iterdir()) == []
    with pytest.raises(OutputDirError, match="empty"):
        prepare_output_dir("  ")
    with pytest.raises(OutputDirError, match="not writable"):
        prepare_output_dir("/proc/self/clinical-ner-out")


def test_annotation_fifo_and_fifo_label_partner_are_refused_without_hanging(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "direct.tsv")
    write(tmp_path / "x_sent", "Gout\n")
    os.mkfifo(tmp_path / "x_label")
    with deadline(20):
        with pytest.raises(AnnotationFormatError, match=r"direct\.tsv: not a regular file"):
            read_annotations([tmp_path / "direct.tsv"])
        with pytest.raises(AnnotationFormatError, match="x_label: not a regular file"):
            read_annotations([tmp_path / "x_sent"])
