"""The Glue jobs on local Spark with hostile JSON (issue F): per-record/per-file quarantine.

A 5,000-digit JSON number, nesting deeper than the parser allows and lone surrogate escapes
must not fail the job: validate_notes quarantines each such record with a reason code and
writes everything else (in = curated + quarantined); prepare_training_data rejects only the
file holding one and builds the dataset from the others. Few tests on purpose: Spark is slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from clinical_ner.pipeline.stage_config import LAKE

DT = "2024-03-01"
SECRET = "Zelda Quokkaberg MRN-99417 secret-phi"
HUGE_INT = "9" * 5000
DEEP = "[" * 50_000 + "]" * 50_000


def _write(root: Path, key: str, data: str) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data, encoding="utf-8")


def test_validate_notes_quarantines_hostile_json_records(tmp_path, spark, validate_job):
    n = LAKE.raw_notes
    _write(tmp_path, f"{n}good.txt", "Gout. Colchicine.")
    _write(
        tmp_path,
        f"{n}hostile.jsonl",
        "\n".join(
            [
                json.dumps({"note_id": "ok", "text": "Asthma. Albuterol."}),
                '{"note_id": "big", "text": "' + SECRET + '", "n": ' + HUGE_INT + "}",
                '{"note_id": "deep", "text": "' + SECRET + '", "x": ' + DEEP + "}",
                '{"note_id": "sur", "text": "' + SECRET + ' \\ud800"}',
            ]
        )
        + "\n",
    )
    args = validate_job.parse_args(
        ["--lake_root", str(tmp_path), "--run_date", DT, "--run_id", "hostile"]
    )
    report = validate_job.run(spark, args)
    assert (report["in"], report["curated"], report["quarantined"]) == (5, 2, 3)
    assert report["quarantined_by_reason"] == {"bad_encoding": 1, "malformed_json": 2}
    curated = pq.read_table(tmp_path / LAKE.curated_notes).to_pylist()
    assert sorted(r["note_id"] for r in curated) == ["good", "ok"]
    quarantine = pq.read_table(tmp_path / LAKE.quarantine).to_pylist()
    assert sorted((r["locator"], r["reason"]) for r in quarantine) == [
        (2, "malformed_json"),
        (3, "malformed_json"),
        (4, "bad_encoding"),
    ]
    assert SECRET not in json.dumps(quarantine, default=str)


def test_prepare_training_data_rejects_only_the_hostile_file(tmp_path, spark, prepare_job):
    a = LAKE.raw_annotations
    _write(tmp_path, f"{a}good.jsonl", json.dumps({"text": "Gout.", "label": [[0, 4, "D"]]}))
    _write(tmp_path, f"{a}big.jsonl", '{"text": "x", "label": [[0, ' + HUGE_INT + ', "D"]]}\n')
    _write(tmp_path, f"{a}deep.jsonl", '{"text": "x", "m": ' + DEEP + "}\n")
    _write(tmp_path, f"{a}sur.jsonl", '{"text": "' + SECRET + ' \\ud800", "label": []}\n')
    args = prepare_job.parse_args(
        ["--lake_root", str(tmp_path), "--run_date", DT, "--run_id", "hostile"]
    )
    report = prepare_job.run(spark, args)
    assert report["docs_total"] == 1
    rejected = {r["source"]: r for r in report["rejected_files"]}
    assert set(rejected) == {f"{a}big.jsonl", f"{a}deep.jsonl", f"{a}sur.jsonl"}
    assert {r["reason"] for r in rejected.values()} == {"malformed_annotations"}
    assert SECRET not in json.dumps(report)
