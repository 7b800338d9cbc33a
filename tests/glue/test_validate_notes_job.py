"""The validate_notes Glue script on local Spark: good, bad and mixed inputs, exact counts,
idempotent re-runs, crash recovery and cross-run duplicates."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from clinical_ner.pipeline.stage_config import LAKE

DT = "2024-03-01"
MAX_CHARS = 200
SECRETS = ("SECRET-PHI-1", "SECRET-PHI-2", "SECRET-PHI-3", "SECRET-PHI-4")


def _write(root: Path, key: str, data: bytes | str) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def _jsonl(*records: object) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def make_inputs(root: Path) -> None:
    n = LAKE.raw_notes
    _write(
        root,
        f"{n}good/n1.txt",
        "Patient presents with type 2 diabetes mellitus.\r\nStarted on metformin.",
    )
    _write(
        root,
        f"{n}good/batch.jsonl",
        _jsonl(
            {"note_id": "a1", "text": "Asthma, treated with albuterol."},
            {"note_id": 2, "text": "Hypertension.  Lisinopril 10 mg."},
            "",
            {
                "note_id": "a3",
                "text": "PREOPERATIVE DIAGNOSIS: , Morbid obesity.,PLAN: , Gastric bypass.",
            },
        ),
    )
    long_text = "word " * 60  # 300 characters > MAX_CHARS
    _write(
        root,
        f"{n}mixed.csv",
        (
            "note_id,text\n"
            'c1,"Chest pain, rule out myocardial infarction."\n'
            'c2,"   "\n'
            'c1,"Different text SECRET-PHI-1"\n'
            'c3,"Bell\x07 ring"\n'
            f'c4,"{long_text}"\n'
            'c5,"x SECRET-PHI-4","extra"\n'
            ',"no id SECRET-PHI-2"\n'
            "c6\n"
        ),
    )
    _write(root, f"{n}bad/latin1.txt", "café SECRET".encode("latin-1"))
    _write(root, f"{n}bad/empty.txt", b"")
    _write(root, f"{n}bad/scan.pdf", b"%PDF-1.4 binary")
    _write(
        root,
        f"{n}bad/broken.jsonl",
        _jsonl(
            "not json SECRET-PHI-3",
            {"note_id": "x1"},
            [1, 2],
            {"note_id": "x2", "text": 5},
        ),
    )
    _write(root, f"{n}bad/schema.csv", "id,body\n1,hello\n")
    _write(
        root,
        f"{n}z_dups.jsonl",
        _jsonl(
            {"note_id": "a1", "text": "Asthma, treated with albuterol."},
            {"note_id": "n1", "text": "A different note under an existing id."},
        ),
    )


EXPECTED_REASONS = {
    "bad_encoding": 1,
    "duplicate_note_id": 2,
    "duplicate_record": 1,
    "empty_text": 2,
    "invalid_note_id": 1,
    "invalid_text_type": 1,
    "malformed_json": 1,
    "malformed_row": 1,
    "missing_field": 2,
    "not_an_object": 1,
    "schema_mismatch": 1,
    "too_long": 1,
    "unsupported_file_type": 1,
}
EXPECTED_CURATED = {"n1", "a1", "2", "a3", "c1", "c3"}
EXPECTED_QUARANTINE = {
    ("raw/notes/bad/broken.jsonl", 1, "malformed_json"),
    ("raw/notes/bad/broken.jsonl", 2, "missing_field"),
    ("raw/notes/bad/broken.jsonl", 3, "not_an_object"),
    ("raw/notes/bad/broken.jsonl", 4, "invalid_text_type"),
    ("raw/notes/bad/empty.txt", None, "empty_text"),
    ("raw/notes/bad/latin1.txt", None, "bad_encoding"),
    ("raw/notes/bad/scan.pdf", None, "unsupported_file_type"),
    ("raw/notes/bad/schema.csv", None, "schema_mismatch"),
    ("raw/notes/mixed.csv", 2, "empty_text"),
    ("raw/notes/mixed.csv", 3, "duplicate_note_id"),
    ("raw/notes/mixed.csv", 5, "too_long"),
    ("raw/notes/mixed.csv", 6, "malformed_row"),
    ("raw/notes/mixed.csv", 7, "invalid_note_id"),
    ("raw/notes/mixed.csv", 8, "missing_field"),
    ("raw/notes/z_dups.jsonl", 1, "duplicate_record"),
    ("raw/notes/z_dups.jsonl", 2, "duplicate_note_id"),
}


def _run(job, spark, root: Path, run_id: str, dt: str = DT) -> dict:
    args = job.parse_args(
        [
            "--lake_root",
            str(root),
            "--run_date",
            dt,
            "--run_id",
            run_id,
            "--max_chars",
            str(MAX_CHARS),
        ]
    )
    return job.run(spark, args)


def _table(root: Path, prefix: str):
    path = root / prefix
    if not path.exists():
        return []
    return pq.read_table(path).to_pylist()


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, spark, validate_job):
    root = tmp_path_factory.mktemp("lake")
    make_inputs(root)
    report = _run(validate_job, spark, root, "run-1")
    return root, report


def test_counts_are_exact_and_add_up(first_run):
    _, report = first_run
    assert report["objects"] == {"listed": 9, "skipped_already_processed": 0, "processed": 9}
    assert report["in"] == 22
    assert report["curated"] == 6
    assert report["quarantined"] == 16
    assert report["in"] == report["curated"] + report["quarantined"]
    assert report["quarantined_by_reason"] == EXPECTED_REASONS
    assert report["curated_written"] == 6 and report["quarantined_written"] == 16


def test_summary_json_is_written(first_run):
    root, report = first_run
    path = root / LAKE.run_reports / "validate_notes" / f"dt={DT}" / "run-1.json"
    assert json.loads(path.read_text()) == report


def test_curated_notes_are_kept_as_delivered_in_the_dt_partition(first_run):
    root, _ = first_run
    assert (root / LAKE.curated_notes / f"dt={DT}").is_dir()
    rows = {r["note_id"]: r for r in _table(root, LAKE.curated_notes)}
    assert set(rows) == EXPECTED_CURATED
    # Never rewritten (offsets index the note as delivered): CRLF, MTSamples commas, controls.
    delivered = {
        "n1": "Patient presents with type 2 diabetes mellitus.\r\nStarted on metformin.",
        "a3": "PREOPERATIVE DIAGNOSIS: , Morbid obesity.,PLAN: , Gastric bypass.",
        "c3": "Bell\x07 ring",
    }
    for note_id, text in delivered.items():
        assert rows[note_id]["text"] == text
        assert rows[note_id]["note_sha256"] == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert rows["2"]["source"] == "raw/notes/good/batch.jsonl" and rows["2"]["locator"] == 2
    assert rows["n1"]["locator"] is None
    assert all(r["dt"] == DT and r["run_id"] == "run-1" for r in rows.values())
    assert all(r["char_count"] == len(r["text"]) for r in rows.values())


def test_every_rejected_record_is_quarantined_with_source_and_reason(first_run):
    root, _ = first_run
    rows = _table(root, LAKE.quarantine)
    got = {(r["source"], r["locator"], r["reason"]) for r in rows}
    assert len(rows) == 16
    assert got == EXPECTED_QUARANTINE
    assert all(r["detail"] for r in rows)
    blob = json.dumps(rows, default=str)
    for secret in SECRETS:
        assert secret not in blob, "note text leaked into the quarantine table"


def test_rerun_on_same_input_writes_nothing(first_run, spark, validate_job):
    root, _ = first_run
    before = (len(_table(root, LAKE.curated_notes)), len(_table(root, LAKE.quarantine)))
    report = _run(validate_job, spark, root, "run-2")
    assert report["objects"] == {"listed": 9, "skipped_already_processed": 9, "processed": 0}
    assert report["in"] == report["curated"] == report["quarantined"] == 0
    after = (len(_table(root, LAKE.curated_notes)), len(_table(root, LAKE.quarantine)))
    assert after == before == (6, 16)


def test_interrupted_run_is_repaired_without_duplicates(tmp_path, spark, validate_job):
    """Data written but the ledger lost (crash before step 5): the re-run writes nothing new."""
    make_inputs(tmp_path)
    first = _run(validate_job, spark, tmp_path, "run-a")
    shutil.rmtree(tmp_path / LAKE.job_state)
    again = _run(validate_job, spark, tmp_path, "run-b")
    assert again["objects"]["processed"] == 9
    assert again["in"] == first["in"] == 22
    assert again["curated_written"] == 0 and again["curated_already_present"] == 6
    assert again["quarantined_written"] == 0 and again["quarantined_already_present"] == 16
    assert len(_table(tmp_path, LAKE.curated_notes)) == 6
    assert len(_table(tmp_path, LAKE.quarantine)) == 16


def test_new_object_is_checked_against_curated_notes_of_earlier_runs(tmp_path, spark, validate_job):
    n = LAKE.raw_notes
    _write(tmp_path, f"{n}day1.jsonl", _jsonl({"note_id": "p1", "text": "Gout. Colchicine."}))
    day1 = _run(validate_job, spark, tmp_path, "d1", dt="2024-03-01")
    assert (day1["in"], day1["curated"], day1["quarantined"]) == (1, 1, 0)
    _write(
        tmp_path,
        f"{n}day2.jsonl",
        _jsonl(
            {"note_id": "p1", "text": "Gout. Colchicine."},  # re-dropped elsewhere: same text
            {"note_id": "p1", "text": "Gout. Allopurinol."},  # same id, new text
            {"note_id": "p2", "text": "Migraine. Sumatriptan."},
        ),
    )
    day2 = _run(validate_job, spark, tmp_path, "d2", dt="2024-03-02")
    assert day2["objects"] == {"listed": 2, "skipped_already_processed": 1, "processed": 1}
    assert (day2["in"], day2["curated"], day2["quarantined"]) == (3, 1, 2)
    assert day2["quarantined_by_reason"] == {"duplicate_note_id": 1, "duplicate_record": 1}
    curated = _table(tmp_path, LAKE.curated_notes)
    assert Counter(r["note_id"] for r in curated) == {"p1": 1, "p2": 1}
    assert {r["dt"] for r in curated} == {"2024-03-01", "2024-03-02"}


def test_empty_lake_gives_an_empty_summary(tmp_path, spark, validate_job):
    report = _run(validate_job, spark, tmp_path, "empty")
    assert report["objects"] == {"listed": 0, "skipped_already_processed": 0, "processed": 0}
    assert report["in"] == 0
    assert not (tmp_path / LAKE.curated_notes).exists()


def test_glue_style_arguments_are_accepted(validate_job):
    args = validate_job.parse_args(
        [
            "--JOB_NAME",
            "clinical-ner-dev-validate-notes",
            "--JOB_RUN_ID",
            "jr_abc",
            "--lake_root",
            "s3://bucket",
            "--job-bookmark-option",
            "job-bookmark-disable",
            "--TempDir",
            "s3://bucket/_state/glue-temp/validate_notes/",
        ]
    )
    assert args.run_id == "jr_abc" and args.lake_root == "s3://bucket"
    with pytest.raises(ValueError):
        validate_job.parse_args(["--lake_root", "/x", "--run_date", "2024-02-30"])
