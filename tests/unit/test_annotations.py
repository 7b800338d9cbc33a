"""The in-house annotations (benchmarks/annotations) point at the corpus and follow the guideline.

They hold offsets, hashes and our labels only: every record must still point at the same gold
mention of ``../shared/data/clinical-notes-annotated`` (a changed corpus would silently shift
every figure of the structured benchmark), and the counts the issue asks for must hold.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
import simple_icd_10_cm as cm

from clinical_ner.model.context import TRAITS
from clinical_ner.model.medication import ATTRIBUTE_TYPES
from clinical_ner.model.sections import SECTION_NAMES

REPO = Path(__file__).resolve().parents[2]
ANNOTATIONS = REPO / "benchmarks" / "annotations"
NOTES = REPO.parent / "shared" / "data" / "clinical-notes-annotated" / "notes.jsonl"


@pytest.fixture(scope="module")
def notes() -> dict[str, dict]:
    if not NOTES.is_file():
        pytest.skip(f"{NOTES} is absent (the annotated clinical notes)")
    with NOTES.open(encoding="utf-8") as handle:
        return {str(r["note_id"]): r for r in map(json.loads, handle)}


def records(pattern: str) -> list[tuple[Path, dict]]:
    out = []
    for path in sorted(ANNOTATIONS.glob(pattern)):
        with path.open(encoding="utf-8") as handle:
            out.extend((path, json.loads(line)) for line in handle if line.strip())
    return out


def check_pointer(path: Path, record: dict, notes: dict[str, dict], split: str) -> str:
    note = notes[record["note_id"]]
    assert note["split"] == split, (path.name, record["note_id"])
    start, end = record["start"], record["end"]
    assert [start, end, record["label"]] in note["label"], (path.name, record["note_id"], start)
    digest = hashlib.sha256(note["text"][start:end].encode()).hexdigest()[:8]
    assert digest == record["text_sha8"], (path.name, record["note_id"], start)
    return note["text"]


def test_codes_point_at_dev_disease_mentions_and_are_valid(notes):
    found = records("icd10cm_dev_*.jsonl")
    for path, r in found:
        check_pointer(path, r, notes, "dev")
        assert r["label"] == "DISEASE"
        if r["code"] is None:
            assert r["uncodable_reason"], (path.name, r["note_id"], r["start"])
        else:
            assert cm.is_valid_item(r["code"]), (path.name, r["code"])
    assert len({(r["note_id"], r["start"]) for _, r in found}) == len(found)
    assert sum(r["code"] is not None for _, r in found) >= 200  # the minimum


def test_traits_point_at_gold_mentions_with_exact_triggers(notes):
    found = records("traits_*.jsonl")
    for path, r in found:
        split = "train" if "_train_" in path.name else "dev"
        text = check_pointer(path, r, notes, split)
        assert set(r["triggers"]) == {t for t in TRAITS if r[t]}, (path.name, r["start"])
        for start, end in r["triggers"].values():
            assert 0 <= start < end <= len(text)
        assert r["section"] is None or r["section"] in SECTION_NAMES
    dev = [r for path, r in found if "_dev_" in path.name]
    assert len(dev) >= 300  # the minimum
    positives = Counter(t for r in dev for t in TRAITS if r[t])
    assert all(positives[t] >= 20 for t in TRAITS), positives


def test_attributes_point_at_dev_treatments_and_never_overlap_them(notes):
    found = records("attributes_dev_*.jsonl")
    for path, r in found:
        text = check_pointer(path, r, notes, "dev")
        assert r["label"] == "TREATMENT"
        for a in r["attributes"]:
            assert a["type"] in ATTRIBUTE_TYPES
            assert 0 <= a["start"] < a["end"] <= len(text)
            assert a["end"] <= r["start"] or r["end"] <= a["start"]
    assert sum(len(r["attributes"]) for _, r in found) >= 100
