"""Entity offsets index the note as delivered: ``original[start:end] == entity.text``.

The model reads a normalised view (CRLF, control characters, NFC; the MTSamples comma repair
only when asked for); every runtime maps offsets back and keeps the delivered text and its
sha256. Checked on texts the normaliser changes, with a seeded random generator (hypothesis
is not a dependency), through `clinical-ner extract`, `run_extraction` and the Glue core.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from clinical_ner.cli import main
from clinical_ner.data import data_prep as dp
from clinical_ner.data.extraction import run_extraction
from clinical_ner.data.notes import (
    OffsetMap,
    checked_note_view,
    model_view,
    normalise_text,
    normalise_with_offsets,
    read_notes,
)
from clinical_ner.model.inference import PredictedEntity

# Texts the normaliser changes, each with words a test double finds in the normalised view.
CHANGED_TEXTS = {
    "decomposed": "Cafe\u0301 owner with asthma, na\u0308ive to albuterol.",
    "controls": "\x00Fever\x07 and asthma\x1b; albuterol\x7f given\x85.",
    "crlf": "Asthma.\r\nAlbuterol PRN.\rFever resolved.\r\n",
    "nul_inside": "asth\x00ma treated with albu\x00terol",
    # Zero-width characters are format characters, not control characters: kept, and counted.
    "zero_width": "\ufeffAsthma\u200b with fever\u200d;\r\nalbuterol\u2060.",
    "astral": "\U0001f600 asthma \U0001d11e albuterol \U0001f3e5 fever e\u0301 \U0001d15e",
    "hangul_and_singletons": "\u1100\u1161\u11a8 asthma \u212b albuterol \u0344 fever",
    "mtsamples": "DIAGNOSIS: , Asthma.,PLAN:  ,  , Albuterol., ,HISTORY: , Fever,ABDOMEN: Soft",
}
WORDS = re.compile(r"asthma|albuterol|fever|caf\u00e9", re.IGNORECASE)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _reference_view(text: str) -> str:
    """The normalised view written out independently (no offsets): what the model must read."""
    text = re.sub(r"\r\n?", "\n", text)
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", "", text)
    return unicodedata.normalize("NFC", text)


class WordFinder:
    """TEST DOUBLE, not a model: tags fixed words in the text it is given (the view)."""

    version = "word-finder-1"
    labels = ("DISEASE", "TREATMENT")

    def __init__(self) -> None:
        self.seen: list[str] = []

    def predict(
        self, texts: Iterable[str], batch_size: int = 64
    ) -> Iterator[list[PredictedEntity]]:
        for text in texts:
            self.seen.append(text)
            yield [
                PredictedEntity(
                    m.start(),
                    m.end(),
                    "TREATMENT" if m.group().lower() == "albuterol" else "DISEASE",
                    m.group(),
                    0.9,
                )
                for m in WORDS.finditer(text)
            ]


# ----------------------------------------------------------------------------- the map


@pytest.mark.parametrize("repair", [False, True])
@pytest.mark.parametrize("name", sorted(CHANGED_TEXTS))
def test_words_found_on_the_view_slice_the_original(name: str, repair: bool) -> None:
    original = CHANGED_TEXTS[name]
    view = model_view(original, mtsamples_repair=repair)
    # The normaliser really changes every one of these (the MTSamples one only when asked).
    assert (view.text != original) is (repair or name != "mtsamples")
    assert view.text == normalise_text(original, mtsamples_repair=repair)
    if not repair:
        assert view.text == _reference_view(original)
    found = next(iter(WordFinder().predict([view.text])))
    assert found
    mapped = view.entities_on_original(found)
    assert len(mapped) == len(found)
    for before, after in zip(found, mapped, strict=True):
        assert original[after.start : after.end] == after.text
        # The span covers exactly the word: it normalises back to what the model saw.
        assert normalise_text(after.text, mtsamples_repair=repair) == before.text


def test_exact_offsets_on_the_delivered_text() -> None:
    original = "e\u0301\r\nx\x00y Fever"
    view = model_view(original)
    assert view.text == "\u00e9\nxy Fever"
    spans = [view.offsets.original_span(i, i + 1) for i in range(len(view.text))]
    # é <- "e\u0301", \n <- "\r\n", x, y (NUL dropped), then one to one.
    assert spans[:4] == [(0, 2), (2, 4), (4, 5), (6, 7)]
    assert view.offsets.original_span(2, 4) == (4, 7)  # "x\x00y": the NUL inside is kept
    assert view.offsets.original_span(5, 10) == (8, 13)
    assert original[8:13] == "Fever"


@pytest.mark.parametrize("repair", [False, True])
def test_mtsamples_repair_is_opt_in_and_offsets_survive_it(repair: bool) -> None:
    original = CHANGED_TEXTS["mtsamples"]
    view = model_view(original, mtsamples_repair=repair)
    assert ("DIAGNOSIS:\nAsthma.\nPLAN:\n\nAlbuterol." in view.text) is repair
    assert ("DIAGNOSIS: , Asthma.,PLAN:" in view.text) is not repair
    mapped = view.entities_on_original(next(iter(WordFinder().predict([view.text]))))
    starts = {e.text: e.start for e in mapped}
    assert starts == {
        "Asthma": original.index("Asthma"),
        "Albuterol": original.index("Albuterol"),
        "Fever": original.index("Fever"),
    }


def test_a_note_of_only_removed_characters_is_empty() -> None:
    with pytest.raises(ValueError, match="empty_text"):
        checked_note_view("n", "\x00\x07\r\n\x1b")


def test_spans_falling_in_one_rewritten_run_are_reported_once() -> None:
    original = "DIAGNOSIS:  ,  ,  , Asthma"
    view = model_view(original, mtsamples_repair=True)
    first_newline = view.text.index("\n")
    # Two spans whose boundaries lie inside the same run of repaired newlines.
    entities = [
        PredictedEntity(first_newline, first_newline + 1, "DISEASE", "\n", 0.2),
        PredictedEntity(first_newline + 1, first_newline + 2, "DISEASE", "\n", 0.7),
    ]
    (kept,) = view.entities_on_original(entities)
    assert kept.confidence == 0.7
    assert original[kept.start : kept.end] == kept.text == "  ,  ,  , "


def test_offset_map_refuses_spans_outside_the_view() -> None:
    _, offsets = normalise_with_offsets("a\r\nb")
    for start, end in [(-1, 1), (1, 1), (0, 4), (2, 1)]:
        with pytest.raises(ValueError, match="outside"):
            offsets.original_span(start, end)
    assert OffsetMap(3, 3).original_span(0, 3) == (0, 3)


# ----------------------------------------------------------------------------- property test

_PIECES = [
    *"abcdefghij ",
    "asthma",
    "Fever",
    " ",
    "\n",
    "\t",
    "\r\n",
    "\r",
    "\x00",
    "\x07",
    "\x1b",
    "\x7f",
    "\x85",
    "\u200b",
    "\ufeff",
    "e\u0301",
    "\u0301",
    "\u0323",
    "\u0308",
    "A\u030a",
    "\u212b",
    "\u0344",
    "\ufb2c",
    "\u0958",
    "\u1100",
    "\u1161",
    "\u11a8",
    "\uac00",
    "\U0001f600",
    "\U0001d11e",
    "\U0001d15e",
    ":",
    ",",
    " ,",
    ".",
    "DIAGNOSIS:",
    "ABDOMEN:",
]


def _random_text(rng: random.Random) -> str:
    return "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 40)))


@pytest.mark.parametrize("repair", [False, True])
def test_seeded_random_texts_map_every_span_back(repair: bool) -> None:
    rng = random.Random(20240305 + repair)
    moved = 0
    for _ in range(400):
        original = _random_text(rng)
        view, offsets = normalise_with_offsets(original, mtsamples_repair=repair)
        assert view == normalise_text(view, mtsamples_repair=repair)  # idempotent
        if not repair:
            assert view == _reference_view(original)
        assert offsets.length == len(view) and offsets.original_length == len(original)
        if not view:
            continue
        chars = [offsets.original_span(i, i + 1) for i in range(len(view))]
        for (a1, b1), (a2, b2) in itertools.pairwise(chars):
            assert a1 <= a2 and b1 <= b2  # monotone: the view's order is the original's
        spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", view)]
        spans += [tuple(sorted(rng.sample(range(len(view) + 1), 2))) for _ in range(5)]
        entities = [
            PredictedEntity(s, e, "DISEASE", view[s:e], rng.random()) for s, e in spans if s < e
        ]
        mapped = model_view(original, mtsamples_repair=repair).entities_on_original(entities)
        for e in mapped:
            assert 0 <= e.start < e.end <= len(original)
            assert original[e.start : e.end] == e.text
        for e in entities:
            a, b = offsets.original_span(e.start, e.end)
            if not repair:
                # What the model read lies inside what the delivered span normalises to.
                assert e.text in normalise_text(original[a:b])
            moved += (a, b) != (e.start, e.end)
    assert moved > 100  # the generator really exercises rewritten texts


# ----------------------------------------------------------------------------- runtimes


def _write_inputs(root: Path) -> dict[str, str]:
    """The changed texts as .jsonl, .csv and .txt records; note_id -> text as delivered."""
    root.mkdir(parents=True, exist_ok=True)
    delivered: dict[str, str] = {}
    lines = []
    for name, text in CHANGED_TEXTS.items():
        if name not in ("crlf", "mtsamples"):
            lines.append(json.dumps({"note_id": name, "text": text}))
            delivered[name] = text
    (root / "a.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # CSV: the quoted field keeps its CRLFs (newline="" in the reader).
    csv_text = CHANGED_TEXTS["crlf"]
    (root / "b.csv").write_bytes(('note_id,text\r\ncrlf,"' + csv_text + '"\r\n').encode("utf-8"))
    delivered["crlf"] = csv_text
    (root / "mtsamples.txt").write_bytes(b"\xef\xbb\xbf" + CHANGED_TEXTS["mtsamples"].encode())
    delivered["mtsamples"] = CHANGED_TEXTS["mtsamples"]  # the BOM is an encoding mark
    return delivered


def _check_outputs(out: Path, delivered: dict[str, str]) -> pd.DataFrame:
    notes = pd.read_parquet(out / "notes").set_index("note_id")
    assert set(notes.index) == set(delivered)
    for note_id, text in delivered.items():
        assert notes.loc[note_id, "note_sha256"] == _sha(text)
        assert notes.loc[note_id, "char_count"] == len(text)
    entities = pd.read_parquet(out / "entities")
    for row in entities.itertuples():
        original = delivered[row.note_id]
        assert original[row.start_char : row.end_char] == row.text
        assert row.note_sha256 == _sha(original)
    return entities


@pytest.mark.parametrize("repair", [False, True])
def test_run_extraction_offsets_index_the_delivered_notes(tmp_path: Path, repair: bool) -> None:
    delivered = _write_inputs(tmp_path / "in")
    model = WordFinder()
    summary = run_extraction(model, tmp_path / "in", tmp_path / "out", mtsamples_repair=repair)
    assert summary.processed == len(delivered) and summary.quarantined == 0
    # The model read the normalised views, never the delivered texts.
    assert sorted(model.seen) == sorted(
        normalise_text(t, mtsamples_repair=repair) for t in delivered.values()
    )
    entities = _check_outputs(tmp_path / "out", delivered)
    expected = sum(len(WORDS.findall(normalise_text(t))) for t in delivered.values())
    assert len(entities) == expected
    stored = {n.note_id: n.text for n in read_notes(tmp_path / "in").collect().notes}
    assert stored == delivered


@pytest.mark.parametrize("repair", [False, True])
def test_cli_extract_with_a_trained_model(
    tiny_model_dir: Path, tmp_path: Path, repair: bool
) -> None:
    delivered = _write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    argv = ["extract", "--model", str(tiny_model_dir), str(tmp_path / "in"), "--output", str(out)]
    assert main(argv + (["--mtsamples-repair"] if repair else [])) == 0
    entities = _check_outputs(out, delivered)
    assert len(entities) > 0, "the tiny model finds something in these notes"
    # Some entity sits after a rewritten character, so view offsets would not slice it.
    shifted = [
        r
        for r in entities.itertuples()
        if normalise_text(delivered[r.note_id], mtsamples_repair=repair)[r.start_char : r.end_char]
        != r.text
    ]
    assert shifted


def test_glue_core_keeps_the_delivered_text_and_its_sha(tmp_path: Path) -> None:
    delivered = _write_inputs(tmp_path / "in")
    curated: dict[str, dict[str, object]] = {}
    for path in sorted((tmp_path / "in").iterdir()):
        result = dp.process_note_object(f"raw/notes/{path.name}", path.read_bytes())
        assert result.quarantined == []
        for note in result.notes:
            curated[note.note_id] = dp.curated_row(note, run_id="r", ingested_at=pd.Timestamp(0))
    assert set(curated) == set(delivered)
    for note_id, text in delivered.items():
        row = curated[note_id]
        assert row["text"] == text
        assert row["note_sha256"] == _sha(text)
        assert row["char_count"] == len(text)


def test_batch_transform_answers_are_published_on_the_delivered_text(tmp_path: Path) -> None:
    """The server maps offsets back itself; publishing must keep them, not re-map them."""
    from clinical_ner.data.publish import publish_transform_output

    delivered = _write_inputs(tmp_path / "in")
    notes = read_notes(tmp_path / "in").collect().notes
    answers = {}
    for note in notes:
        # What the serving container answers: the model read the view, offsets mapped back.
        view = model_view(note.text)
        found = view.entities_on_original(next(iter(WordFinder().predict([view.text]))))
        answers[note.note_id] = {
            "note_id": note.note_id,
            "model_version": WordFinder.version,
            "note_sha256": _sha(note.text),
            "entities": [
                {
                    "start": e.start,
                    "end": e.end,
                    "label": e.label,
                    "text": e.text,
                    "confidence": 0.9,
                }
                for e in found
            ],
        }
    out = tmp_path / "out"
    publish_transform_output(notes, answers, out, dt="2024-03-05", labels=WordFinder.labels)
    entities = _check_outputs(out, delivered)
    assert len(entities) == sum(len(a["entities"]) for a in answers.values()) > 0
