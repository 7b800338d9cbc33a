"""Validates the bundled SYNTHETIC clinical notes and drift windows (make_clinical_notes.py)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from clinical_ner.samples import make_clinical_notes as gen

SAMPLES = Path(gen.__file__).parent
LABELS = {"DISEASE", "SYMPTOM", "TREATMENT"}
MIN_SPLIT = {"train": 50, "dev": 15, "test": 15}
WINDOWS = {gen.REFERENCE: 220, gen.WINDOW: 60, gen.SHIFTED: 60}
# Distinct entity strings of the test split that train never shows (honest held-out score).
MIN_TEST_ONLY_ENTITIES = 100


def _records(name: str) -> list[dict[str, object]]:
    lines = (SAMPLES / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def notes() -> list[dict[str, object]]:
    return _records(gen.ANNOTATED)


def _mentions(record: dict[str, object]) -> list[tuple[str, str]]:
    text = str(record["text"])
    return [(text[s:e].lower(), label) for s, e, label in record["label"]]  # type: ignore[union-attr]


def test_records_are_complete_and_marked_synthetic(notes: list[dict[str, object]]) -> None:
    assert len(notes) >= 90
    ids = [r["note_id"] for r in notes]
    assert len(set(ids)) == len(ids)
    for r in notes:
        assert set(r) == {"note_id", "text", "label", "split", "meta"}, r["note_id"]
        assert re.fullmatch(r"syn-clin-\d{3}", str(r["note_id"]))
        assert r["meta"] == "synthetic"
        assert r["split"] in MIN_SPLIT
        assert gen.MIN_WORDS <= len(str(r["text"]).split()) <= gen.MAX_WORDS, r["note_id"]


def test_offsets_slice_word_bounded_non_overlapping_mentions(
    notes: list[dict[str, object]],
) -> None:
    for r in notes:
        text = str(r["text"])
        previous_end = 0
        for start, end, label in r["label"]:  # type: ignore[union-attr]
            assert label in LABELS, r["note_id"]
            assert 0 <= previous_end <= start < end <= len(text), (r["note_id"], start)
            mention = text[start:end]
            assert mention == mention.strip() and mention[0].isalnum() and mention[-1].isalnum()
            assert start == 0 or not text[start - 1].isalnum(), (r["note_id"], start)
            assert end == len(text) or not text[end].isalnum(), (r["note_id"], end)
            previous_end = end
        assert "[" not in text and "|" not in text, r["note_id"]  # no markup left behind


def test_every_label_and_split_is_represented(notes: list[dict[str, object]]) -> None:
    splits = Counter(str(r["split"]) for r in notes)
    for split, minimum in MIN_SPLIT.items():
        assert splits[split] >= minimum, split
        per_label = Counter(
            label for r in notes if r["split"] == split for _, label in _mentions(r)
        )
        assert all(per_label[label] >= 100 for label in LABELS), (split, per_label)


def test_no_duplicate_texts_anywhere(notes: list[dict[str, object]]) -> None:
    texts = [str(r["text"]) for r in notes]
    for name in WINDOWS:
        texts += [str(r["text"]) for r in _records(name)]
    assert len(set(texts)) == len(texts)


def test_test_split_names_entities_train_never_shows(notes: list[dict[str, object]]) -> None:
    train = {m for r in notes if r["split"] == "train" for m, _ in _mentions(r)}
    test = {m for r in notes if r["split"] == "test" for m, _ in _mentions(r)}
    assert len(test - train) >= MIN_TEST_ONLY_ENTITIES
    assert {"pyridostigmine", "colchicine", "adalimumab"} <= test - train


def test_regenerating_gives_byte_identical_files() -> None:
    built = gen.build(gen.SOURCE.read_text(encoding="utf-8"))
    assert set(built) == {gen.ANNOTATED, gen.BAD, *WINDOWS}
    for name, content in built.items():
        assert (SAMPLES / name).read_bytes() == content.encode("utf-8"), name


def test_drift_windows_have_the_expected_shape() -> None:
    windows = {name: _records(name) for name in WINDOWS}
    for name, count in WINDOWS.items():
        records = windows[name]
        assert len(records) == count, name
        assert all(set(r) == {"note_id", "text"} for r in records), name
        assert len({r["note_id"] for r in records}) == count, name

    def words(name: str) -> list[str]:
        return [w.lower() for r in windows[name] for w in re.findall(r"[A-Za-z]+", str(r["text"]))]

    vocab = set(words(gen.REFERENCE))

    def oov(name: str) -> float:
        tokens = words(name)
        return sum(w not in vocab for w in tokens) / len(tokens)

    def mean_len(name: str) -> float:
        return sum(len(str(r["text"])) for r in windows[name]) / len(windows[name])

    # A moderate shift: clearly more unseen words, notes of about the same length.
    assert oov(gen.SHIFTED) > 5 * oov(gen.WINDOW)
    assert 0.8 < mean_len(gen.SHIFTED) / mean_len(gen.REFERENCE) < 1.25


def test_files_are_marked_synthetic_and_small() -> None:
    for path in (gen.SOURCE, SAMPLES / "make_clinical_notes.py"):
        assert "SYNTHETIC" in path.read_text(encoding="utf-8")[:400], path.name
    total = sum((SAMPLES / n).stat().st_size for n in (gen.ANNOTATED, *WINDOWS))
    assert total + gen.SOURCE.stat().st_size < 1_500_000


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("the [ pain|S] here", "edge"),
        ("hyper[tension|D] here", "word boundary"),
        ("a [pain|X] here", "stray"),
    ],
)
def test_markup_errors_are_caught(raw: str, reason: str) -> None:
    with pytest.raises(gen.MarkupError, match=reason):
        gen.parse_markup("syn-clin-999", raw)
