"""The prepare_training_data Glue script on local Spark: every annotation format of the core
readers, bad files, exact counts, content-hash versions and idempotent re-runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from clinical_ner.data import data_prep as dp
from clinical_ner.pipeline.stage_config import LAKE

A = LAKE.raw_annotations

IOB = (
    "Familial\tB-Disease\npolyposis\tI-Disease\nis\tO\nrare\tO\n.\tO\n\n"
    "No\tO\nfindings\tO\n.\tO\n\n"
    "Cystic\tB-Disease\nfibrosis\tI-Disease\nrecurs\tO\n.\tO\n"
)
JSONL = (
    json.dumps(
        {"text": "Metformin treats diabetes.", "label": [[0, 9, "TREATMENT"], [17, 25, "DISEASE"]]}
    )
    + "\n"
    # the same text as an IOB sentence: dropped once as a duplicate across files
    + json.dumps({"text": "No findings .", "label": []})
    + "\n"
)
SENT = "Aspirin\nfor\nheadache\n.\n\nRest\n.\n"
LABEL = "T\nO\nD\nO\n\nO\nO\n"
BAD_IOB = "Some\tO\nthing\tB-Unknowntype\n"


def _write(root: Path, key: str, text: str) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def make_annotations(root: Path) -> None:
    _write(root, f"{A}ncbi/train.tsv", IOB)
    _write(root, f"{A}doccano/batch.jsonl", JSONL)
    _write(root, f"{A}biotext/x_sent", SENT)
    _write(root, f"{A}biotext/x_label", LABEL)
    _write(root, f"{A}bad/broken.tsv", BAD_IOB)
    _write(root, f"{A}orphan/y_label", "O\n")


def _run(job, spark, root: Path, run_id: str) -> dict:
    args = job.parse_args(
        ["--lake_root", str(root), "--run_id", run_id, "--run_date", "2024-03-01"]
    )
    return job.run(spark, args)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


@pytest.fixture(scope="module")
def first(tmp_path_factory, spark, prepare_job):
    root = tmp_path_factory.mktemp("lake")
    make_annotations(root)
    return root, _run(prepare_job, spark, root, "p1")


def test_dataset_counts_and_rejected_files(first):
    _, report = first
    # 3 IOB + 2 JSONL + 2 sent/label docs, minus 1 duplicate text across files.
    assert report["docs_total"] == 6
    assert sum(report["splits"].values()) == 6
    assert report["files_read"] == 6
    assert {(r["source"], r["reason"]) for r in report["rejected_files"]} == {
        (f"{A}bad/broken.tsv", "malformed_annotations"),
        (f"{A}orphan/y_label", "orphan_label_file"),
    }
    broken = next(r for r in report["rejected_files"] if r["reason"] == "malformed_annotations")
    assert broken["detail"].startswith("bad/broken.tsv:2")  # file and line, no temp path
    assert "/tmp" not in json.dumps(report["rejected_files"])


def test_files_match_manifest(first):
    root, report = first
    prefix = root / report["prefix"]
    assert report["prefix"] == f"{LAKE.curated_training}{report['dataset_version']}/"
    manifest = json.loads((prefix / "manifest.json").read_text())
    assert manifest["dataset_version"] == report["dataset_version"]
    assert manifest["read_report"]["duplicates_dropped"] == 1
    assert manifest["read_report"]["entities"] == {"DISEASE": 4, "TREATMENT": 2}
    total_entities = {}
    for split in dp.SPLITS:
        stats = manifest["splits"][split]
        data = (prefix / stats["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == stats["sha256"]
        records = _lines(prefix / stats["file"])
        assert len(records) == stats["docs"]
        for rec in records:
            assert rec["id"] == dp.doc_id(rec["text"])
            assert dp.SplitSpec().assign(rec["text"]) == split
            for start, end, label in rec["entities"]:
                total_entities[label] = total_entities.get(label, 0) + 1
                assert 0 <= start < end <= len(rec["text"])
    assert total_entities == {"DISEASE": 4, "TREATMENT": 2}
    sources = {s["key"]: s for s in manifest["sources"]}
    assert set(sources) == {
        f"{A}ncbi/train.tsv",
        f"{A}doccano/batch.jsonl",
        f"{A}biotext/x_sent",
        f"{A}biotext/x_label",
        f"{A}bad/broken.tsv",
        f"{A}orphan/y_label",
    }
    assert sources[f"{A}biotext/x_label"]["used"] is True
    assert sources[f"{A}bad/broken.tsv"]["used"] is False
    assert sources[f"{A}ncbi/train.tsv"]["sha256"] == hashlib.sha256(IOB.encode()).hexdigest()
    latest = json.loads((root / LAKE.curated_training / "_latest.json").read_text())
    assert latest["dataset_version"] == report["dataset_version"]


def test_entity_offsets_point_at_the_mentions(first):
    root, report = first
    prefix = root / report["prefix"]
    mentions = set()
    for split in dp.SPLITS:
        for rec in _lines(prefix / f"{split}.jsonl"):
            mentions |= {(rec["text"][s:e], lab) for s, e, lab in rec["entities"]}
    assert mentions == {
        ("Familial polyposis", "DISEASE"),
        ("Cystic fibrosis", "DISEASE"),
        ("Metformin", "TREATMENT"),
        ("diabetes", "DISEASE"),
        ("Aspirin", "TREATMENT"),
        ("headache", "DISEASE"),
    }


def test_rerun_keeps_the_version_and_writes_nothing(first, spark, prepare_job):
    root, report = first
    manifest = root / report["prefix"] / "manifest.json"
    before = manifest.read_bytes()
    again = _run(prepare_job, spark, root, "p2")
    assert again["dataset_version"] == report["dataset_version"]
    assert again["already_existed"] is True and report["already_existed"] is False
    assert manifest.read_bytes() == before
    assert len(list((root / LAKE.curated_training).glob("ds-*"))) == 1


def test_new_annotations_make_a_new_version_and_keep_old_splits(tmp_path, spark, prepare_job):
    make_annotations(tmp_path)
    v1 = _run(prepare_job, spark, tmp_path, "a")
    _write(
        tmp_path,
        f"{A}doccano/more.jsonl",
        json.dumps({"text": "Insulin for type 1 diabetes.", "label": [[0, 7, "TREATMENT"]]}),
    )
    v2 = _run(prepare_job, spark, tmp_path, "b")
    assert v2["dataset_version"] != v1["dataset_version"]
    assert v2["docs_total"] == v1["docs_total"] + 1

    def assignment(report):
        prefix = tmp_path / report["prefix"]
        return {r["id"]: s for s in dp.SPLITS for r in _lines(prefix / f"{s}.jsonl")}

    old, new = assignment(v1), assignment(v2)
    assert {k: new[k] for k in old} == old  # a document never changes split


def test_no_annotations_fails_clearly(tmp_path, spark, prepare_job):
    with pytest.raises(dp.EmptyDatasetError):
        _run(prepare_job, spark, tmp_path, "none")
