"""Per-entity details end to end: composition, wire format, table rows, offsets, named queries.

The notes here are SYNTHETIC (written for these tests). The vocabularies are the real ones,
built from the pinned packages once per machine (`built_enrichment_dir`).
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from clinical_ner.data import analytics
from clinical_ner.data.extraction import run_extraction
from clinical_ner.data.notes import Note, content_sha256, model_view
from clinical_ner.data.publish import TransformOutputError, _entities
from clinical_ner.data.schemas import ENTITY_SCHEMA
from clinical_ner.model.enrichment import (
    ENRICHMENT_DIR,
    MANIFEST_FILE,
    Enricher,
    EnrichmentFormatError,
    EntityDetails,
    built_enrichment_dir,
    load_enricher,
    save_enrichment,
)
from clinical_ner.model.inference import PredictedEntity

REPO = Path(__file__).resolve().parents[2]
NOTE = (
    "FAMILY HISTORY:,  Mother had breast cancer.,PAST MEDICAL HISTORY:,  Hypertension.,"
    "MEDICATIONS:,  Lisinopril 10 mg p.o. daily.,ASSESSMENT:,  No pneumonia.  Possible "
    "pulmonary embolism.  Return if chest pain."
)
MENTIONS = {
    "breast cancer": "DISEASE",
    "Hypertension": "DISEASE",
    "Lisinopril": "TREATMENT",
    "pneumonia": "DISEASE",
    "pulmonary embolism": "DISEASE",
    "chest pain": "SYMPTOM",
}


def spans_of(text: str) -> list[tuple[int, int, str]]:
    spans = []
    for words, label in MENTIONS.items():
        start = text.find(words)
        if start >= 0:
            spans.append((start, start + len(words), label))
    return sorted(spans)


@pytest.fixture(scope="module")
def enricher() -> Enricher:
    return Enricher.load(built_enrichment_dir())


@pytest.fixture(scope="module")
def details(enricher: Enricher) -> dict[str, EntityDetails]:
    spans = spans_of(NOTE)
    found = enricher.details(NOTE, spans)
    return {NOTE[s:e]: d for (s, e, _), d in zip(spans, found, strict=True)}


def traits_of(d: EntityDetails) -> dict[str, str]:
    return {t.trait: t.trigger for t in d.traits}


def test_each_entity_gets_its_section_traits_codes_drug_and_attributes(details):
    cancer = details["breast cancer"]
    assert cancer.section == "family_history"
    assert traits_of(cancer) == {"family": "Mother"}
    assert cancer.codes[0].code.startswith("C50")
    assert cancer.chapter is not None and cancer.chapter.startswith("II ")

    hypertension = details["Hypertension"]
    assert hypertension.section == "past_medical_history"
    assert traits_of(hypertension) == {"historical": "PAST MEDICAL HISTORY:"}
    assert hypertension.codes[0].code == "I10"
    assert hypertension.chapter.startswith("IX ")

    lisinopril = details["Lisinopril"]
    assert lisinopril.section == "medications" and lisinopril.traits == ()
    assert lisinopril.codes == () and lisinopril.chapter is None
    assert lisinopril.drug is not None and lisinopril.drug.name.lower() == "lisinopril"
    assert {(a.type, a.text) for a in lisinopril.attributes} == {
        ("STRENGTH", "10 mg"),
        ("ROUTE_OR_MODE", "p.o."),
        ("FREQUENCY", "daily"),
    }

    assert traits_of(details["pneumonia"]) == {"negated": "No"}
    assert details["pneumonia"].codes[0].code == "J18.9"
    assert details["pneumonia"].section == "assessment_plan"
    assert traits_of(details["pulmonary embolism"]) == {"uncertain": "Possible"}
    assert "hypothetical" in traits_of(details["chest pain"])  # "Return if"
    assert details["chest pain"].codes[0].code == "R07.9"  # SYMPTOM mentions are coded too


def test_no_entities_no_work(enricher):
    assert enricher.details(NOTE, []) == []
    assert enricher.details("", []) == []


def test_wire_format_round_trips_and_checks_offsets_against_the_note(details):
    for d in details.values():
        wire = json.loads(json.dumps(d.to_json()))
        back = EntityDetails.from_json(wire, NOTE, "e")
        assert back.to_json() == wire
        assert back.traits == d.traits and back.attributes == d.attributes
        assert back.drug == d.drug and back.section == d.section


HOSTILE = [
    ({"traits": "negated"}, "traits is not a list"),
    ({"traits": [{"name": "sad", "trigger": "No", "start": 0, "end": 2}]}, "unknown trait"),
    ({"traits": [{"name": "negated", "trigger": "No", "start": True, "end": 2}]}, "integer"),
    ({"traits": [{"name": "negated", "trigger": "No", "start": 5, "end": 2}]}, "not a span"),
    ({"traits": [{"name": "negated", "trigger": "No", "start": 0, "end": 2}]}, "do not slice"),
    ({"icd10cm": [{"code": "I10", "description": "x", "score": 1.5}]}, r"not in \[0, 1\]"),
    ({"icd10cm": [{"code": 10, "description": "x", "score": 0.5}]}, "code"),
    ({"icd10cm": [{"code": "I10", "description": "x", "score": True}]}, "score"),
    ({"attributes": [{"type": "COLOR", "text": "x", "start": 0, "end": 1}]}, "unknown attr"),
    ({"attributes": [{"type": "FORM", "text": "FAMILY", "start": 1, "end": 7}]}, "slice"),
    ({"drug": "aspirin"}, "drug is not an object"),
    ({"drug": {"name": None}}, "name"),
    ({"drug": {"name": "x", "mesh_id": 5}}, "mesh_id"),
    ({"section": 3}, "section"),
    ({"icd10cm_chapter": ["IX"]}, "chapter"),
]


@pytest.mark.parametrize(("raw", "message"), HOSTILE)
def test_hostile_details_are_refused_without_echoing_the_note(raw, message):
    with pytest.raises(EnrichmentFormatError, match=message) as caught:
        EntityDetails.from_json(raw, NOTE, "note_id='n1' entity 0")
    assert "FAMILY" not in str(caught.value) and "Mother" not in str(caught.value)
    assert "note_id='n1' entity 0" in str(caught.value)


def test_publish_refuses_answers_whose_details_do_not_fit_the_note(details):
    note = Note("n1", NOTE, "in.jsonl", 1, content_sha256(NOTE))
    start = NOTE.find("pneumonia")
    entity = {
        "start": start,
        "end": start + 9,
        "label": "DISEASE",
        "text": "pneumonia",
        "confidence": 0.9,
        "negated": True,
        **details["pneumonia"].to_json(),
    }
    assert _entities(note, {"entities": [entity]})[0].negated
    for bad in (
        {**entity, "negated": False},  # disagrees with its own traits
        {**entity, "traits": [{**entity["traits"][0], "start": 0}]},
    ):
        with pytest.raises(TransformOutputError, match="note_id='n1'"):
            _entities(note, {"entities": [bad]})
    # An answer of a model served before #14: negated, no details.
    old = {k: entity[k] for k in ("start", "end", "label", "text", "confidence", "negated")}
    (answered,) = _entities(note, {"entities": [old]})
    assert answered.negated and answered.details == EntityDetails()


def test_row_fills_every_new_column_and_reads_back(details):
    base = {
        "note_id",
        "entity_id",
        "label",
        "text",
        "start_char",
        "end_char",
        "confidence",
        "negated",
        "model_version",
        "inference_time",
        "dt",
        "source",
        "note_sha256",
    }
    for d in details.values():
        row = d.row()
        assert set(row) == set(ENTITY_SCHEMA.names) - base
        back = EntityDetails.from_row(row)
        assert back.traits == d.traits and back.attributes == d.attributes
        assert back.codes == d.codes and back.section == d.section
    row = details["Lisinopril"].row()
    assert (row["strength"], row["route_or_mode"], row["frequency"]) == ("10 mg", "p.o.", "daily")
    assert row["dosage"] is None and row["icd10cm_code"] is None
    assert details["Hypertension"].row()["historical"] is True


def test_offsets_move_to_the_text_as_delivered(enricher):
    delivered = NOTE.replace(".,", ".\r\n").replace(":,", ":\r\n")
    view = model_view(delivered)
    assert view.text != delivered  # the model reads \n where the user sent \r\n
    spans = spans_of(view.text)
    found = enricher.details(view.text, spans)
    entities = [
        PredictedEntity(s, e, label, view.text[s:e], 0.9, 0.9, d)
        for (s, e, label), d in zip(spans, found, strict=True)
    ]
    moved = view.entities_on_original(entities)
    assert any(t.source == "section" for e in moved for t in e.details.traits)
    for e in moved:
        assert delivered[e.start : e.end] == e.text
        for t in e.details.traits:
            assert delivered[t.start : t.end] == t.trigger
        for a in e.details.attributes:
            assert delivered[a.start : a.end] == a.text
    assert any(e.details.attributes for e in moved)


def test_review_summary_holds_no_note_words(details):
    summary = json.dumps([d.review_summary() for d in details.values()])
    for words in ("Mother", "10 mg", "p.o.", "Possible", "PAST MEDICAL"):
        assert words not in summary
    assert '"I10"' in summary and "historical" in summary
    for words in ("hypertension", "Lisinopril", "lisinopril", "embolism", "neoplasm"):
        assert words not in summary  # ids only: no clinical words in the queue item
    assert details["Lisinopril"].review_summary()["drugbank_id"].startswith("DB")


def test_model_directory_carries_its_vocabularies(tmp_path, caplog):
    save_enrichment(tmp_path)
    manifest = json.loads((tmp_path / ENRICHMENT_DIR / MANIFEST_FILE).read_text())
    assert set(manifest["packages"]) == {"simple_icd_10_cm", "drug-named-entity-recognition"}
    assert not list((tmp_path / ENRICHMENT_DIR).rglob("*.pkl"))
    assert load_enricher(tmp_path).linker.link(["hypertension"])[0][0].code == "I10"
    # A model directory from before the vocabularies existed: built ones, with a warning.
    older = tmp_path / "older"
    older.mkdir()
    with caplog.at_level("WARNING"):
        assert load_enricher(older).drugs.normalise(["Tylenol"])[0] is not None
    assert "no enrichment/" in caplog.text
    # Vocabularies saved by an older release of the linker: rebuilt, the model still loads.
    meta_file = tmp_path / ENRICHMENT_DIR / "icd10cm" / "icd10cm_linker.json.gz"
    meta = json.loads(gzip.decompress(meta_file.read_bytes()))
    meta_file.unlink()  # a hard link into the shared cache: replace it, never write through it
    meta_file.write_bytes(gzip.compress(json.dumps({**meta, "format": 0}).encode()))
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert load_enricher(tmp_path).linker.link(["hypertension"])[0][0].code == "I10"
    assert "unsupported ICD-10-CM linker format 0" in caplog.text


def test_the_tables_writers_import_no_scipy_sklearn_or_spacy():
    # The publish and review Lambdas run with the AWS SDK for pandas layer: no scipy there.
    code = (
        "import sys, clinical_ner.data.publish, clinical_ner.data.review,"
        " clinical_ner.pipeline.review_service;"
        "bad = {'scipy', 'sklearn', 'spacy'} & set(sys.modules); assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


class EnrichedLexiconPredictor:
    """Finds MENTIONS words and gives them the real details (a stand-in for the NER)."""

    version = "clinical-ner-bbbbbbbbbbbb"
    labels = ("DISEASE", "SYMPTOM", "TREATMENT")

    def __init__(self, enricher: Enricher) -> None:
        self.enricher = enricher

    def predict(self, texts: Iterable[str], batch_size: int = 64) -> Iterator[list]:
        for text in texts:
            spans = spans_of(text)
            found = self.enricher.details(text, spans)
            yield [
                PredictedEntity(s, e, label, text[s:e], 0.8, 0.8, d)
                for (s, e, label), d in zip(spans, found, strict=True)
            ]


def test_new_columns_end_to_end_extract_parquet_duckdb_named_queries(tmp_path, enricher):
    notes = tmp_path / "notes.jsonl"
    rows = [
        {"note_id": "syn-1", "text": NOTE},
        {"note_id": "syn-2", "text": "MEDICATIONS:,  Lisinopril 20 mg daily.,  Hypertension."},
    ]
    notes.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    now = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    run_extraction(EnrichedLexiconPredictor(enricher), [notes], out, now=now)

    results = analytics.run_local(out, {"note_extractions": {"note_id": "syn-1"}})
    columns, chapters = results["diagnoses_by_icd10cm_chapter_by_day"]
    by_chapter = {
        (r[columns.index("label")], r[columns.index("icd10cm_chapter")][:3].strip()): r
        for r in chapters
    }
    # Patient's own coded mentions only: not the mother's cancer, the negated pneumonia or the
    # hypothetical chest pain; the uncertain embolism and both historical hypertensions count.
    assert set(by_chapter) == {("DISEASE", "IX")}
    row = by_chapter[("DISEASE", "IX")]
    assert row[columns.index("mentions")] == 3  # hypertension x2, pulmonary embolism
    assert row[columns.index("notes")] == 2
    assert row[columns.index("historical_mentions")] == 1  # only the PMH-section one
    assert row[columns.index("uncertain_mentions")] == 1
    assert row[columns.index("dt")] == "2026-12-01"

    columns, medications = results["medications_with_dose_per_note"]
    got = [dict(zip(columns, r, strict=True)) for r in medications]
    assert [(m["note_id"], m["text"], m["strength"], m["frequency"]) for m in got] == [
        ("syn-1", "Lisinopril", "10 mg", "daily"),
        ("syn-2", "Lisinopril", "20 mg", "daily"),
    ]
    assert got[0]["route_or_mode"] == "p.o." and got[0]["drug_name"].lower() == "lisinopril"
    assert got[0]["drug_drugbank_id"].startswith("DB")
    assert got[0]["drug_nhs_url"] == "https://www.nhs.uk/medicines/lisinopril/"
    assert got[0]["section"] == "medications"

    columns, extractions = results["note_extractions"]
    flags = {r[columns.index("text")]: r for r in extractions}
    assert flags["breast cancer"][columns.index("family")] is True
    assert flags["pneumonia"][columns.index("icd10cm_code")] == "J18.9"


def test_a_unitless_ratio_is_a_strength_only_after_a_known_drug(enricher):
    text = "Percocet 5/325 one tablet q.4h. Neck flexion 4/5 and physical therapy 3 times a week."
    spans = [
        (0, 8, "TREATMENT"),
        (text.index("Neck flexion"), text.index("Neck flexion") + 12, "TREATMENT"),
        (text.index("physical therapy"), text.index("physical therapy") + 16, "TREATMENT"),
    ]
    percocet, flexion, therapy = enricher.details(text, spans)
    assert percocet.drug is not None
    assert ("STRENGTH", "5/325") in {(a.type, a.text) for a in percocet.attributes}
    assert flexion.drug is None and flexion.attributes == ()  # an exam grade, not a strength
    assert [(a.type, a.text) for a in therapy.attributes] == [("FREQUENCY", "3 times a week")]
