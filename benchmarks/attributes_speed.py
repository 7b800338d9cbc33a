"""Cost of medication-attribute linking (clinical_ner.model.medication), per 1000 words.

Two inputs: the gold entity spans of the TRAIN split of clinical-notes-annotated (TREATMENT as
medications, the rest as other entities; procedures among the TREATMENTs only make it slower),
and MTSamples with medications faked by a small drug-name regex (no other entities, so the
windows are as long as they get). Meant to run pinned to one core:
    taskset -c 1 .venv/bin/python benchmarks/attributes_speed.py
Prints one JSON line per corpus: microseconds per 1000 words (best of --repeats), spans, words.
No note text is printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from clinical_ner.model.medication import link_attributes

Doc = tuple[str, list[tuple[int, int]], list[tuple[int, int]]]

# Common drugs of MTSamples medication lists: enough spans to exercise the rules.
_FAKE_DRUGS = re.compile(
    r"\b(?:lisinopril|metformin|aspirin|tylenol|acetaminophen|ibuprofen|motrin|lasix"
    r"|furosemide|atenolol|metoprolol|amlodipine|norvasc|simvastatin|lipitor|synthroid"
    r"|levothyroxine|prednisone|coumadin|warfarin|plavix|protonix|prilosec|omeprazole"
    r"|insulin|lantus|albuterol|keflex|zithromax|cipro|flagyl|metronidazole|morphine"
    r"|dilaudid|percocet|vicodin|lortab|oxycodone|zofran|phenergan|ativan|lorazepam"
    r"|xanax|zoloft|prozac|lidocaine|marcaine|xylocaine|bupivacaine|heparin|lovenox"
    r"|kenalog|depo-medrol|ancef|cefazolin|vancomycin|gentamicin|colace|senokot)\b",
    re.IGNORECASE,
)


def gold_docs(path: Path) -> list[Doc]:
    docs = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record.get("split") != "train":
                continue
            meds = [(s, e) for s, e, label in record["label"] if label == "TREATMENT"]
            others = [(s, e) for s, e, label in record["label"] if label != "TREATMENT"]
            docs.append((record["text"], meds, others))
    return docs


def mtsamples_docs(path: Path, limit: int) -> list[Doc]:
    csv.field_size_limit(sys.maxsize)
    docs: list[Doc] = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            text = row.get("transcription") or ""
            if text:
                meds = [m.span() for m in _FAKE_DRUGS.finditer(text)]
                docs.append((text, meds, []))
            if len(docs) >= limit:
                break
    return docs


def measure(docs: Sequence[Doc], repeats: int) -> dict[str, float | int]:
    words = sum(len(text.split()) for text, _, _ in docs)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for text, meds, others in docs:
            link_attributes(text, meds, others)
        best = min(best, time.perf_counter() - started)
    attributes = sum(
        len(attrs) for text, meds, others in docs for attrs in link_attributes(text, meds, others)
    )
    return {
        "docs": len(docs),
        "words": words,
        "medications": sum(len(meds) for _, meds, _ in docs),
        "other_entities": sum(len(others) for _, _, others in docs),
        "attributes": attributes,
        "us_per_1000_words": round(best / words * 1000 * 1e6, 1),
        "words_per_s": round(words / best),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    parser.add_argument(
        "--notes", type=Path, default=data / "clinical-notes-annotated" / "notes.jsonl"
    )
    parser.add_argument("--mtsamples", type=Path, default=data / "mtsamples" / "mtsamples.csv")
    parser.add_argument("--limit", type=int, default=2000, help="MTSamples notes")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    corpora = {
        "gold_train": gold_docs(args.notes),
        "mtsamples_fake_drugs": mtsamples_docs(args.mtsamples, args.limit),
    }
    for name, docs in corpora.items():
        print(json.dumps({"corpus": name, **measure(docs, args.repeats)}), flush=True)


if __name__ == "__main__":
    main()
