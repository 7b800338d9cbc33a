"""The training dataset honours a record's own "split" field and hashes the rest."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from clinical_ner.data import data_prep as dp

SAMPLES = Path(__file__).resolve().parents[2] / "clinical_ner" / "samples"
SPEC = dp.SplitSpec()


def _texts_hashed_to(split: str, count: int) -> list[str]:
    """Distinct texts that the hash split alone puts in `split`."""
    out: list[str] = []
    i = 0
    while len(out) < count:
        text = f"Patient {i} has asthma treated with albuterol."
        if SPEC.assign(text) == split:
            out.append(text)
        i += 1
    return out


def _jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def _ids(dataset: dp.TrainingDataset, split: str) -> set[str]:
    content = dataset.files[f"{split}.jsonl"].decode()
    return {json.loads(line)["text"] for line in content.splitlines() if line}


def test_assign_record_prefers_the_named_split_and_hashes_otherwise() -> None:
    (text,) = _texts_hashed_to("train", 1)
    assert SPEC.assign_record(text, "test") == "test"
    assert SPEC.assign_record(text, " DEV ") == "dev"
    assert SPEC.assign_record(text, "") == "train"
    assert SPEC.assign_record(text, "validation") == "train"  # not one of ours: hashed


def test_explicit_split_overrides_the_hash_and_the_rest_is_hashed() -> None:
    to_test = _texts_hashed_to("train", 3)  # the hash would train on these
    to_train = _texts_hashed_to("test", 6)[3:]  # the hash would test these (not `plain`)
    plain = _texts_hashed_to("test", 3)  # no field: the hash keeps them in test
    odd = _texts_hashed_to("dev", 1)  # an unknown value: hashed
    records = (
        [{"text": t, "label": [], "split": "test"} for t in to_test]
        + [{"text": t, "label": [], "split": "train"} for t in to_train]
        + [{"text": t, "label": []} for t in plain]
        + [{"text": t, "label": [], "split": "holdout"} for t in odd]
    )
    dataset = dp.build_training_dataset({"batch.jsonl": _jsonl(records)})

    assert _ids(dataset, "test") == set(to_test) | set(plain)
    assert _ids(dataset, "train") == set(to_train)
    assert _ids(dataset, "dev") == set(odd)
    split = dataset.manifest["split"]
    assert (split["explicit_docs"], split["hashed_docs"]) == (6, 4)
    assert split["unrecognised_split_values"] == 1
    # The field picks the split only; it is not a training record field.
    for name in dp.SPLITS:
        for line in dataset.files[f"{name}.jsonl"].decode().splitlines():
            assert "split" not in json.loads(line)


def test_moving_a_doc_to_another_split_makes_another_dataset_version() -> None:
    (text,) = _texts_hashed_to("train", 1)
    plain = dp.build_training_dataset({"a.jsonl": _jsonl([{"text": text, "label": []}])})
    pinned = dp.build_training_dataset(
        {"a.jsonl": _jsonl([{"text": text, "label": [], "split": "test"}])}
    )
    assert plain.dataset_version != pinned.dataset_version


def test_bundled_clinical_notes_keep_their_held_out_test_split() -> None:
    path = SAMPLES / "synthetic_clinical_notes.jsonl"
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    dataset = dp.build_training_dataset({path.name: path.read_bytes()})
    for name in dp.SPLITS:
        assert _ids(dataset, name) == {r["text"] for r in records if r["split"] == name}
    expected = Counter(r["split"] for r in records)
    assert {n: s["docs"] for n, s in dataset.manifest["splits"].items()} == dict(expected)
