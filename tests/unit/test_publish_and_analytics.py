"""Transform output -> Parquet (idempotent, checked) and every named query in DuckDB over real
extraction output (the tiny model on the bundled synthetic notes, plus bad records)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from tiny_model import NOTES
from transform_output import transform_answer_lines

from clinical_ner.data import analytics, publish
from clinical_ner.data.extraction import run_extraction
from clinical_ner.data.notes import Note, content_sha256
from clinical_ner.model.inference import NerModel

duckdb = pytest.importorskip("duckdb", reason="duckdb missing: pip install duckdb")

NOW = datetime(2024, 5, 2, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return NerModel.load(tiny_model_dir)


@pytest.fixture(scope="module")
def extraction_output(model, tmp_path_factory) -> Path:
    inputs = tmp_path_factory.mktemp("inputs")
    (inputs / "notes.jsonl").write_bytes(NOTES.read_bytes())
    # Bad records, so the quarantine table has rows with reasons.
    (inputs / "bad.jsonl").write_text(
        '{"note_id": "bad-1", "text": ""}\nnot json at all\n{"note_id": "bad-2"}\n'
    )
    out = tmp_path_factory.mktemp("extraction")
    summary = run_extraction(model, [inputs], out, now=NOW)
    assert summary.processed == 40 and summary.quarantined == 3
    return out


def test_every_named_query_returns_rows_in_duckdb(extraction_output):
    con = analytics.connect_local(extraction_output)
    note_id = con.execute("SELECT note_id FROM entities LIMIT 1").fetchone()[0]
    results = analytics.run_local(extraction_output, {"note_extractions": {"note_id": note_id}})
    assert set(results) == {q.name for q in analytics.QUERIES}
    for name, (columns, rows) in results.items():
        assert rows, f"named query {name} returned no rows"
        assert columns
    cols, rows = results["note_extractions"]
    assert {r[cols.index("note_id")] for r in rows} == {note_id}
    starts = [r[cols.index("start_char")] for r in rows]
    assert starts == sorted(starts)
    cols, rows = results["review_queue"]
    mins = [r[cols.index("min_confidence")] for r in rows]
    assert mins == sorted(mins, key=lambda v: (v is not None, v))
    cols, rows = results["quarantine_reasons_by_day"]
    assert sum(r[cols.index("records")] for r in rows) == 3
    assert {r[cols.index("dt")] for r in rows} == {"2024-05-02"}
    cols, rows = results["label_counts_by_day"]
    assert {r[cols.index("label")] for r in rows} == {"DISEASE", "TREATMENT"}
    cols, rows = results["model_version_comparison"]
    assert rows[0][cols.index("notes")] == 40


def test_named_query_parameters_are_checked(extraction_output):
    con = analytics.connect_local(extraction_output)
    with pytest.raises(ValueError, match="needs parameter"):
        analytics.run_query(con, "note_extractions", {})


def _notes():
    rows = [json.loads(line) for line in NOTES.read_text().splitlines()][:10]
    return [
        Note(r["note_id"], r["text"], "raw/notes/x.jsonl", i + 1, content_sha256(r["text"]))
        for i, r in enumerate(rows)
    ]


def test_publish_matches_local_extraction_and_is_idempotent(model, tmp_path):
    notes = _notes()
    body = b"".join(publish.transform_input(notes)).decode()
    assert [json.loads(line)["note_id"] for line in body.splitlines()] == [n.note_id for n in notes]
    answers = publish.parse_transform_output(transform_answer_lines(model, notes))
    out = tmp_path / "out"
    labels = model.labels  # the model's own label set (publish has no default)
    first = publish.publish_transform_output(
        notes, answers, out, dt="2024-05-02", labels=labels, now=NOW
    )
    again = publish.publish_transform_output(
        notes, answers, out, dt="2024-05-02", labels=labels, now=NOW
    )
    assert first.run_id == again.run_id
    ents = pq.read_table(out / "entities").to_pylist()
    assert len(ents) == first.summary.entities > 0
    assert len({e["entity_id"] for e in ents}) == len(ents)  # no duplicates after re-publish
    assert len(pq.read_table(out / "notes")) == 10
    by_id = {n.note_id: n.text for n in notes}
    for e in ents:
        assert by_id[e["note_id"]][e["start_char"] : e["end_char"]] == e["text"]
    # Same notes through local extraction give the same entity ids.
    src = tmp_path / "in.jsonl"
    src.write_text(
        "".join(json.dumps({"note_id": n.note_id, "text": n.text}) + "\n" for n in notes)
    )
    run_extraction(model, [src], tmp_path / "local", now=NOW)
    local = pq.read_table(tmp_path / "local" / "entities").to_pylist()
    assert {e["entity_id"] for e in local} == {e["entity_id"] for e in ents}


def test_publish_rejects_inconsistent_output(model, tmp_path):
    notes = _notes()
    answers = publish.parse_transform_output(transform_answer_lines(model, notes))
    missing = dict(list(answers.items())[1:])
    with pytest.raises(publish.TransformOutputError, match="without an answer"):
        publish.publish_transform_output(
            notes, missing, tmp_path, dt="2024-05-02", labels=model.labels
        )
    some = next(a for a in answers.values() if a["entities"])
    some["entities"][0]["end"] += 1
    with pytest.raises(publish.ModelContractError) as err:
        publish.publish_transform_output(
            notes, answers, tmp_path, dt="2024-05-02", labels=model.labels
        )
    assert some["entities"][0]["text"] not in str(err.value)  # no note text in errors
    assert not list(tmp_path.rglob("part-*.parquet"))  # nothing committed
    with pytest.raises(publish.TransformOutputError, match="repeats"):
        publish.parse_transform_output(['{"note_id":"a","entities":[],"model_version":"m"}'] * 2)


def test_a_refused_record_in_the_transform_output_is_named_as_such():
    refused = '{"line": 2, "error": {"status": 400, "code": "note_too_long", "message": "x"}}'
    with pytest.raises(publish.TransformOutputError, match=r"refused the record \(note_too_long\)"):
        publish.parse_transform_output(
            ['{"note_id":"a","entities":[],"model_version":"m"}', refused]
        )
