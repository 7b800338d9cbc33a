"""Inference speed and peak memory of a model on real notes, meant to run pinned to one core.

Run as a separate process (the benchmark does) so peak RSS is the model's alone:
    OPENBLAS_NUM_THREADS=1 taskset -c 0 python benchmarks/speed.py --model DIR --notes CSV
Prints one JSON line: NER + confidence words/s, the same with the per-entity details
(sections, traits, codes, drugs, medication attributes) in the same process, load seconds and
peak RSS (with the vocabularies; `--no-details` for the model alone).
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import sys
import time
from pathlib import Path


def load_texts(path: Path, limit: int) -> list[str]:
    csv.field_size_limit(sys.maxsize)
    seen: set[str] = set()
    texts = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            text = (row.get("transcription") or row.get("text") or "").strip()
            if text and text not in seen:
                seen.add(text)
                texts.append(text)
            if len(texts) >= limit:
                break
    return texts


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM).

    Not ru_maxrss: Linux carries it over from a forked parent, so a benchmark that trained a
    model before starting this process would be measured instead of the model.
    """
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--notes", required=True)
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--no-details",
        action="store_true",
        help="load without the vocabularies (NER + confidence only): the memory they cost",
    )
    args = parser.parse_args()

    from clinical_ner.model.inference import NerModel

    texts = load_texts(Path(args.notes), args.limit)
    words = sum(len(t.split()) for t in texts)
    started = time.perf_counter()
    model = NerModel.load(args.model, enrich=not args.no_details)
    load_seconds = time.perf_counter() - started
    tokens = sum(len(doc) for doc in model.nlp.tokenizer.pipe(texts))
    list(model.predict(texts[:10]))  # warm-up

    started = time.perf_counter()
    plain_entities = sum(len(d.ents) for d in model.nlp.pipe(texts, batch_size=args.batch_size))
    plain_seconds = time.perf_counter() - started

    # Side by side in one process: entities + confidence alone, then with the details
    # (sections, traits, ICD-10-CM codes, drugs, medication attributes).
    enricher, model.enricher = model.enricher, None
    started = time.perf_counter()
    scored_entities = sum(len(e) for e in model.predict(texts, batch_size=args.batch_size))
    scored_seconds = time.perf_counter() - started
    model.enricher = enricher
    detailed_seconds = None
    if enricher is not None:
        started = time.perf_counter()
        sum(len(e) for e in model.predict(texts, batch_size=args.batch_size))
        detailed_seconds = time.perf_counter() - started

    peak_mb = peak_rss_mb()
    print(
        json.dumps(
            {
                "notes": len(texts),
                "words": words,
                "model_tokens": tokens,
                "spacy_pipe_words_per_second": round(words / plain_seconds),
                "with_confidence_words_per_second": round(words / scored_seconds),
                "with_confidence_tokens_per_second": round(tokens / scored_seconds),
                "with_details_words_per_second": (
                    round(words / detailed_seconds) if detailed_seconds else None
                ),
                "details_ms_per_note": (
                    round(1000 * (detailed_seconds - scored_seconds) / len(texts), 2)
                    if detailed_seconds
                    else None
                ),
                "load_seconds": round(load_seconds, 2),
                "notes_per_second": round(len(texts) / scored_seconds, 1),
                "entities": scored_entities,
                "entities_plain": plain_entities,
                "peak_rss_mb": round(peak_mb, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
