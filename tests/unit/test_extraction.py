"""Unit tests for data.extraction: accounting, offsets, Parquet contracts, idempotency."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from clinical_ner.data.extraction import (
    SUMMARY_FILE,
    EntityOffsetError,
    ModelContractError,
    run_extraction,
)
from clinical_ner.data.notes import read_notes
from clinical_ner.data.schemas import (
    PARTITION_COLUMN,
    TABLES,
    describe,
    file_schema,
    make_entity_id,
)
from clinical_ner.model.inference import PredictedEntity

NOW = datetime(2024, 3, 5, 14, 30, tzinfo=UTC)
SECRET = "Zelda Quokkaberg MRN-99417 secret-phi"
LEXICON = {
    "diabetes": ("DISEASE", 0.9),
    "hypertension": ("DISEASE", 0.7),
    "metformin": ("TREATMENT", 0.9),
}
_WORDS = re.compile(r"\b(?:" + "|".join(LEXICON) + r")\b", re.IGNORECASE)


class DictionaryTestDouble:
    """TEST DOUBLE, not a model: finds fixed words by dictionary lookup, deterministically.

    It has the `clinical_ner.model.inference.NerModel` interface so these tests exercise the
    extraction job's accounting and I/O, not NER quality.
    """

    labels = ("DISEASE", "TREATMENT")

    def __init__(self, version: str = "test-double-1") -> None:
        self.version = version
        self.calls: list[int] = []

    def entities(self, text: str) -> list[PredictedEntity]:
        found = []
        for m in _WORDS.finditer(text):
            label, confidence = LEXICON[m.group().lower()]
            found.append(PredictedEntity(m.start(), m.end(), label, m.group(), confidence))
        return found

    def predict(
        self, texts: Iterable[str], batch_size: int = 64
    ) -> Iterator[list[PredictedEntity]]:
        texts = list(texts)
        self.calls.append(len(texts))
        for text in texts:
            yield self.entities(text)


class ShiftedOffsetsDouble(DictionaryTestDouble):
    """TEST DOUBLE with an off-by-one bug: offsets no longer slice the entity text."""

    def entities(self, text: str) -> list[PredictedEntity]:
        return [
            PredictedEntity(e.start + 1, e.end + 1, e.label, e.text, e.confidence)
            for e in super().entities(text)
        ]


class DropsResultsDouble(DictionaryTestDouble):
    """TEST DOUBLE that returns one result too few per batch."""

    def predict(
        self, texts: Iterable[str], batch_size: int = 64
    ) -> Iterator[list[PredictedEntity]]:
        return iter(list(super().predict(texts, batch_size))[:-1])


class BadLabelDouble(DictionaryTestDouble):
    """TEST DOUBLE that emits a label the model does not declare."""

    def entities(self, text: str) -> list[PredictedEntity]:
        return [
            PredictedEntity(e.start, e.end, "DRUG", e.text, e.confidence)
            for e in super().entities(text)
        ]


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def jsonl(*objs: object) -> str:
    return "".join(json.dumps(o) + "\n" for o in objs)


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """7 records: 4 notes (one without entities), 3 quarantined (malformed, empty, unsupported)."""
    root = tmp_path / "in"
    write(
        root / "a.jsonl",
        jsonl(
            {"note_id": "n1", "text": "Diabetes treated with metformin."},
            {"note_id": "n2", "text": "DIAGNOSIS: , Hypertension.,PLAN: , Metformin, diabetes."},
        )
        + "{not json\n"
        + jsonl({"note_id": "n3", "text": "  "}),
    )
    write(root / "b.csv", 'note_id,text\nn4,"No acute distress, vitals stable."\n')
    write(root / "n5.txt", "History of diabetes.")
    write(root / "notes.pdf", b"%PDF-1.4")
    return root


def read_table(out: Path, table: str) -> pd.DataFrame:
    return pd.read_parquet(out / table)


def part_files(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet"))


# ----------------------------------------------------------------------------- accounting


def test_counts_add_up_and_summary_json_matches(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = run_extraction(DictionaryTestDouble(), inputs, out, now=NOW)
    assert (summary.records_in, summary.processed, summary.quarantined) == (7, 4, 3)
    assert summary.records_in == summary.processed + summary.quarantined
    assert summary.quarantined_by_reason == {
        "malformed_json": 1,
        "empty_text": 1,
        "unsupported_file_type": 1,
    }
    assert summary.entities == 6
    assert summary.entities_by_label == {"DISEASE": 4, "TREATMENT": 2}

    on_disk = json.loads((out / SUMMARY_FILE).read_text())
    assert on_disk == json.loads(json.dumps(summary.as_dict()))
    assert on_disk["in"] == on_disk["processed"] + on_disk["quarantined"] == 7
    assert on_disk["entities_by_label"] == {"DISEASE": 4, "TREATMENT": 2}
    assert on_disk["model_version"] == "test-double-1"
    assert on_disk["dt"] == "2024-03-05"
    assert on_disk["words"] == 4 + 6 + 5 + 3  # of the stored texts, as delivered
    for key in ("elapsed_seconds", "notes_per_second", "words_per_second"):
        assert on_disk[key] >= 0

    assert len(read_table(out, "notes")) == 4
    assert len(read_table(out, "entities")) == 6
    quarantine = read_table(out, "quarantine")
    assert sorted(quarantine["reason"]) == ["empty_text", "malformed_json", "unsupported_file_type"]


def test_zero_entity_note_is_processed(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_extraction(DictionaryTestDouble(), inputs, out, now=NOW)
    notes = read_table(out, "notes").set_index("note_id")
    n4 = notes.loc["n4"]
    assert n4["entity_count"] == 0
    assert pd.isna(n4["mean_confidence"])
    assert n4["status"] == "processed"
    assert json.loads(n4["entity_counts_by_label"]) == {"DISEASE": 0, "TREATMENT": 0}
    n2 = notes.loc["n2"]
    assert json.loads(n2["entity_counts_by_label"]) == {"DISEASE": 2, "TREATMENT": 1}
    assert n2["mean_confidence"] == pytest.approx((0.7 + 0.9 + 0.9) / 3, rel=1e-6)


@pytest.mark.parametrize("mtsamples_repair", [False, True])
def test_offsets_slice_the_stored_text_as_delivered(
    inputs: Path, tmp_path: Path, mtsamples_repair: bool
) -> None:
    out = tmp_path / "out"
    run_extraction(DictionaryTestDouble(), inputs, out, now=NOW, mtsamples_repair=mtsamples_repair)
    stored = {n.note_id: n for n in read_notes(inputs).collect().notes}
    # n2 is kept as delivered; with the repair the model reads "DIAGNOSIS:\nHypertension...",
    # and its offsets are mapped back onto the delivered text.
    assert stored["n2"].text.startswith("DIAGNOSIS: , Hypertension.,PLAN: , ")
    entities = read_table(out, "entities")
    for row in entities.itertuples():
        note = stored[row.note_id]
        assert note.text[row.start_char : row.end_char] == row.text
        assert row.note_sha256 == note.content_sha256
        assert row.source == note.source
    n2 = entities[entities.note_id == "n2"].sort_values("start_char")
    assert list(n2.text) == ["Hypertension", "Metformin", "diabetes"]
    assert list(n2.start_char) == [13, 35, 46]


def test_entity_ids_are_deterministic(inputs: Path, tmp_path: Path) -> None:
    run_extraction(DictionaryTestDouble(), inputs, tmp_path / "one", now=NOW)
    run_extraction(DictionaryTestDouble(), inputs, tmp_path / "two", now=NOW + timedelta(days=9))
    one = read_table(tmp_path / "one", "entities")
    two = read_table(tmp_path / "two", "entities")
    assert sorted(one.entity_id) == sorted(two.entity_id)
    assert one.entity_id.is_unique
    for row in one.itertuples():
        expected = make_entity_id(
            row.note_id, row.note_sha256, row.start_char, row.end_char, row.label
        )
        assert row.entity_id == expected
        assert re.fullmatch(r"[0-9a-f]{16}", row.entity_id)


# ----------------------------------------------------------------------------- Parquet contracts


def test_parquet_files_match_the_schemas(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = run_extraction(DictionaryTestDouble(), inputs, out, now=NOW)
    for table, schema in TABLES.items():
        files = summary.output_files[table]
        assert files == [f"{table}/dt=2024-03-05/part-{summary.run_id}-00000.parquet"]
        on_disk = pq.read_schema(out / files[0])
        assert on_disk.equals(file_schema(schema), check_metadata=False)
        assert PARTITION_COLUMN not in on_disk.names
        frame = read_table(out, table)  # hive partition brings dt back as a column
        assert list(frame.columns) == [*file_schema(schema).names, PARTITION_COLUMN]
        assert set(frame[PARTITION_COLUMN].astype(str)) == {"2024-03-05"}
        assert set(describe(schema)) == set(schema.names)
        assert all(describe(schema).values())

    entities = read_table(out, "entities")
    assert str(entities.inference_time.dtype) == "datetime64[us, UTC]"
    assert (entities.inference_time == pd.Timestamp(NOW)).all()
    assert set(entities.model_version) == {"test-double-1"}
    quarantine = read_table(out, "quarantine").set_index("reason")
    assert quarantine.loc["malformed_json", "locator"] == 3
    assert pd.isna(quarantine.loc["unsupported_file_type", "locator"])
    assert quarantine.loc["empty_text", "note_id"] == "n3"


def test_empty_input_still_writes_every_table(tmp_path: Path) -> None:
    write(tmp_path / "in" / "empty.jsonl", "\n")
    out = tmp_path / "out"
    summary = run_extraction(DictionaryTestDouble(), tmp_path / "in", out, now=NOW)
    assert (summary.records_in, summary.processed, summary.quarantined) == (0, 0, 0)
    assert summary.entities_by_label == {"DISEASE": 0, "TREATMENT": 0}
    for table in TABLES:
        assert len(read_table(out, table)) == 0


# ----------------------------------------------------------------------------- idempotency


def test_rerun_into_same_output_dir_does_not_duplicate_rows(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run_extraction(DictionaryTestDouble(), inputs, out, now=NOW)
    files_before = part_files(out)
    frames_before = {t: read_table(out, t) for t in TABLES}

    again = run_extraction(DictionaryTestDouble(), inputs, out, now=NOW)
    assert again.run_id == first.run_id
    assert part_files(out) == files_before
    for table, before in frames_before.items():
        pd.testing.assert_frame_equal(read_table(out, table), before)

    # A re-run on a later day moves the run's rows to the new partition instead of adding them.
    later = run_extraction(DictionaryTestDouble(), inputs, out, now=NOW + timedelta(days=1))
    assert later.run_id == first.run_id
    assert all("dt=2024-03-06/" in f for f in part_files(out))
    for table, before in frames_before.items():
        assert len(read_table(out, table)) == len(before)
    assert not list(out.rglob("_tmp-*"))


def test_changed_input_or_new_model_version_is_a_new_run(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run_extraction(DictionaryTestDouble("v1"), inputs, out, now=NOW)
    second = run_extraction(DictionaryTestDouble("v2"), inputs, out, now=NOW)
    assert second.run_id != first.run_id
    entities = read_table(out, "entities")
    assert entities.groupby("model_version").size().to_dict() == {"v1": 6, "v2": 6}

    write(inputs / "n5.txt", "History of hypertension.")
    assert run_extraction(DictionaryTestDouble("v1"), inputs, tmp_path / "o2", now=NOW).run_id != (
        first.run_id
    )


def test_batches_and_multiple_part_files(inputs: Path, tmp_path: Path) -> None:
    model = DictionaryTestDouble()
    out = tmp_path / "out"
    summary = run_extraction(model, inputs, out, batch_size=3, rows_per_file=2, now=NOW)
    assert model.calls == [3, 1]
    assert len(summary.output_files["entities"]) == 3
    assert len(summary.output_files["notes"]) == 2
    assert len(read_table(out, "entities")) == 6
    # Fewer rows on a re-run must not leave the earlier run's extra parts behind.
    run_extraction(model, inputs, out, batch_size=3, rows_per_file=10, now=NOW)
    assert len(part_files(out)) == 3
    assert len(read_table(out, "entities")) == 6


# ----------------------------------------------------------------------------- model contract


def test_offset_violation_raises_without_note_text(tmp_path: Path) -> None:
    write(tmp_path / "in" / "n.jsonl", jsonl({"note_id": "s1", "text": f"{SECRET} diabetes"}))
    out = tmp_path / "out"
    with pytest.raises(EntityOffsetError) as info:
        run_extraction(ShiftedOffsetsDouble(), tmp_path / "in", out, now=NOW)
    message = str(info.value)
    assert "s1" in message
    for fragment in ("Zelda", "Quokkaberg", "MRN-99417", "diabetes"):
        assert fragment not in message
    assert part_files(out) == []  # nothing half-written is published
    assert not (out / SUMMARY_FILE).exists()


def test_wrong_result_count_and_unknown_label_raise(inputs: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelContractError, match="returned 3 results for 4 texts"):
        run_extraction(DropsResultsDouble(), inputs, tmp_path / "a", now=NOW)
    with pytest.raises(ModelContractError, match="label not in the model's labels"):
        run_extraction(BadLabelDouble(), inputs, tmp_path / "b", now=NOW)


def test_naive_now_is_rejected(inputs: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        run_extraction(DictionaryTestDouble(), inputs, tmp_path / "out", now=datetime(2024, 1, 1))


def test_note_text_never_reaches_summary_or_quarantine(tmp_path: Path) -> None:
    root = tmp_path / "in"
    write(
        root / "n.jsonl",
        jsonl(
            {"note_id": "ok", "text": f"{SECRET} has diabetes"},
            {"note_id": "ok", "text": f"{SECRET} changed"},
            {"note_id": "long", "text": SECRET * 50},
        )
        + f'{{"note_id": "x", "text": "{SECRET}"\n',
    )
    out = tmp_path / "out"
    run_extraction(DictionaryTestDouble(), root, out, max_chars=len(SECRET) * 10, now=NOW)
    assert "Quokkaberg" not in (out / SUMMARY_FILE).read_text()
    quarantine = read_table(out, "quarantine")
    assert len(quarantine) == 3
    assert not quarantine.astype(str).apply(lambda c: c.str.contains("Quokkaberg")).any().any()


def test_data_contracts_doc_lists_every_column() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "data-contracts.md").read_text(encoding="utf-8")
    for table, schema in TABLES.items():
        section = doc.split(f"### `{table}`", 1)[1].split("\n### ", 1)[0]
        documented = re.findall(r"^\| `(\w+)` \|", section, flags=re.MULTILINE)
        assert documented == schema.names, table
