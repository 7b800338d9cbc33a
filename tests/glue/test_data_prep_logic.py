"""clinical_ner.data.data_prep without Spark: the rules the Glue jobs apply."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from clinical_ner.data import data_prep as dp
from clinical_ner.data.notes import QuarantineReason

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def key(note_id, sha, source, locator):
    return dp.NoteKey(note_id, sha, source, locator)


def test_resolve_duplicates_first_occurrence_in_key_order_wins():
    res = dp.resolve_duplicates(
        [
            key("1", "h2", "raw/notes/b.jsonl", 1),
            key("1", "h1", "raw/notes/a.jsonl", 3),
            key("1", "h1", "raw/notes/a.jsonl", 5),
            key("2", "h3", "raw/notes/b.jsonl", 2),
        ],
        existing={},
    )
    assert res.decisions == {
        ("raw/notes/a.jsonl", 3): dp.Decision.WRITE,
        ("raw/notes/b.jsonl", 2): dp.Decision.WRITE,
    }
    assert res.rejected[("raw/notes/a.jsonl", 5)].reason is QuarantineReason.DUPLICATE_RECORD
    dup = res.rejected[("raw/notes/b.jsonl", 1)]
    assert dup.reason is QuarantineReason.DUPLICATE_NOTE_ID
    assert dup.detail == "note_id already accepted from raw/notes/a.jsonl:3 with different text"


def test_resolve_duplicates_against_curated():
    existing = {"7": ("h7", "raw/notes/old.csv"), "8": ("h8", "raw/notes/old.csv")}
    res = dp.resolve_duplicates(
        [
            key("7", "h7", "raw/notes/old.csv", None),  # same record: earlier interrupted run
            key("8", "h8", "raw/notes/new.csv", 1),  # same text re-dropped elsewhere
            key("7", "zz", "raw/notes/new.csv", 2),
        ],  # same id, new text
        existing,
    )
    assert res.decisions == {("raw/notes/old.csv", -1): dp.Decision.ALREADY_CURATED}
    assert res.rejected[("raw/notes/new.csv", 1)].reason is QuarantineReason.DUPLICATE_RECORD
    assert res.rejected[("raw/notes/new.csv", 2)].reason is QuarantineReason.DUPLICATE_NOTE_ID


def test_select_new_objects_uses_key_size_and_mtime():
    a = dp.ObjectRef("raw/notes/a.txt", 10, T0)
    b = dp.ObjectRef("raw/notes/b.txt", 10, T0)
    b2 = dp.ObjectRef("raw/notes/b.txt", 10, T0 + dt.timedelta(seconds=1))  # overwritten
    new, old = dp.select_new_objects([b2, a], [(a.source, 10, T0), (b.source, 10, T0)])
    assert new == [b2] and old == [a]
    naive = T0.replace(tzinfo=None)  # Spark may hand back naive UTC timestamps
    assert dp.select_new_objects([a], [(a.source, 10, naive)]) == ([], [a])


def test_process_note_object_reports_the_object_key_not_a_temp_path():
    data = b'{"note_id": "1", "text": "a"}\n{"note_id": "1", "text": "b"}\n'
    res = dp.process_note_object("raw/notes/x/y.jsonl", data)
    assert [n.note_id for n in res.notes] == ["1"]
    assert res.notes[0].source == "raw/notes/x/y.jsonl"
    (q,) = res.quarantined
    assert q.source == "raw/notes/x/y.jsonl"
    assert q.detail == "note_id already accepted from raw/notes/x/y.jsonl:1 with different text"
    assert res.summary.records_in == 2


def test_txt_note_id_is_the_object_stem():
    res = dp.process_note_object("raw/notes/2024/note-17.txt", b"Fever.")
    assert res.notes[0].note_id == "note-17"


def test_run_summary_accounting_is_enforced():
    s = dp.RunSummary(
        run_id="r",
        dt="2024-01-01",
        started_at="t",
        records_in=3,
        curated_written=1,
        quarantined_written=1,
    )
    s.quarantined_by_reason["empty_text"] = 1
    with pytest.raises(dp.AccountingError):
        s.to_dict()
    s.curated_already_present = 1
    assert s.to_dict()["in"] == 3


def test_summarise_run_splits_written_and_existing_quarantine_rows():
    res = dp.resolve_duplicates([key("1", "h", "s", 1), key("1", "h", "s", 2)], existing={})
    summary = dp.RunSummary(run_id="r", dt="2024-01-01", started_at="t")
    to_write = dp.summarise_run(
        summary, [(3, [("s", 3, "empty_text")])], res, existing_quarantine={("s", 3, "empty_text")}
    )
    assert to_write == {("s", 2, "duplicate_record")}
    assert (summary.records_in, summary.curated, summary.quarantined) == (3, 1, 2)
    assert summary.quarantined_already_present == 1


def test_split_is_deterministic_and_roughly_proportional():
    spec = dp.SplitSpec()
    texts = [f"sentence number {i}" for i in range(5000)]
    splits = [spec.assign(t) for t in texts]
    assert splits == [dp.SplitSpec().assign(t) for t in texts]
    share = {s: splits.count(s) / len(texts) for s in dp.SPLITS}
    assert 0.77 < share["train"] < 0.83 and 0.08 < share["dev"] < 0.12
    with pytest.raises(ValueError):
        dp.SplitSpec(dev_fraction=0.5, test_fraction=0.5)


def test_dataset_version_ignores_file_names_but_not_content():
    doc = json.dumps({"text": "Gout flares.", "label": [[0, 4, "DISEASE"]]}) + "\n"
    v1 = dp.build_training_dataset({"a.jsonl": doc.encode()})
    v2 = dp.build_training_dataset({"renamed/b.jsonl": doc.encode()})
    v3 = dp.build_training_dataset({"a.jsonl": doc.replace("0, 4", "0, 3").encode()})
    assert v1.dataset_version == v2.dataset_version != v3.dataset_version
    assert v1.files != v2.files  # provenance ("source") differs, training content does not
    assert v1.manifest_bytes() == v1.manifest_bytes()


def test_only_malformed_files_is_an_empty_dataset():
    with pytest.raises(dp.EmptyDatasetError):
        dp.build_training_dataset({"bad.tsv": b"x\tB-Nope\n"})


@pytest.mark.parametrize("bad", ["2024-1-01", "2024-02-30", "x", ""])
def test_check_dt_rejects_bad_dates(bad):
    with pytest.raises(ValueError):
        dp.check_dt(bad)


def test_partition_and_training_prefixes():
    assert dp.partition_prefix("curated/notes/", "2024-01-31") == "curated/notes/dt=2024-01-31/"
    assert dp.training_prefix("curated/training/", "ds-0123456789abcdef") == (
        "curated/training/ds-0123456789abcdef/"
    )
    with pytest.raises(ValueError):
        dp.training_prefix("curated/training/", "../x")


def test_spark_schema_follows_the_arrow_contract():
    pytest.importorskip("pyspark", reason="pyspark missing: pip install '.[infra]'")
    schema = dp.spark_schema(dp.CURATED_NOTE_FILE_SCHEMA)
    assert schema.fieldNames() == dp.CURATED_NOTE_FILE_SCHEMA.names
    assert "dt" not in schema.fieldNames()
    assert {f.name: f.nullable for f in schema}["locator"] is True
