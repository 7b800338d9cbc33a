"""Inference time against note length: seconds per 1k characters must stay flat (linear cost).

    OPENBLAS_NUM_THREADS=1 taskset -c 0 python benchmarks/length_scaling.py --model DIR

Builds one note per length (default 1k, 5k, 10k, 20k, 40k, 100k characters; 100k is the
readers' and the server's limit) by concatenating MTSamples transcriptions, normalised as the
prep job does, read at run time from the shared CSV (nothing from it is stored), or with
`--text synthetic` (also the fallback without the CSV) by repeating invented, entity-dense
clinical sentences. Each note is cut at a word boundary to its length.
Times `NerModel.predict` on each note (`--repeats` runs, the fastest kept, so a busy shared
core adds less noise) and prints seconds per note, seconds per 1k characters and that rate
relative to the shortest note. A quadratic step (some per-entity work that reads the whole
note) shows as a ratio that grows with the length; a linear pipeline keeps it near 1. Prints
one JSON line at the end (also written to `--output` when given).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: one core, comparable runs

import argparse
import csv
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CSV = REPO.parent / "shared" / "data" / "mtsamples" / "mtsamples.csv"
DEFAULT_LENGTHS = (1_000, 5_000, 10_000, 20_000, 40_000, 100_000)
sys.path.insert(0, str(REPO))

from clinical_ner.data.notes import normalise_text  # noqa: E402
from clinical_ner.model.inference import NerModel  # noqa: E402

# Used only when the MTSamples CSV is missing: invented, clinical-looking, no real patient.
SYNTHETIC = (
    "The patient is a 64-year-old man with a history of type 2 diabetes mellitus and "
    "hypertension treated with metformin and lisinopril. He denies chest pain, but reports "
    "shortness of breath on exertion. No evidence of pneumonia on the chest X-ray. Asthma was "
    "ruled out. He was started on albuterol for wheezing and aspirin for coronary artery "
    "disease. Gout flares have resolved with allopurinol.\n"
)


def source_text(path: Path, needed: int, kind: str) -> tuple[str, str]:
    """At least `needed` characters of running clinical text, and where they came from."""
    if kind != "synthetic" and path.is_file():
        csv.field_size_limit(2**31 - 1)
        parts: list[str] = []
        total = 0
        with open(path, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                text = normalise_text(row.get("transcription") or "", mtsamples_repair=True).strip()
                if text:
                    parts.append(text)
                    total += len(text) + 1
                if total >= needed:
                    return "\n".join(parts), "mtsamples"
    return SYNTHETIC * (needed // len(SYNTHETIC) + 1), "synthetic"


def note_of_length(text: str, length: int) -> str:
    """The first `length` characters of `text`, cut back to the last whitespace."""
    cut = text[:length]
    space = cut.rfind(" ")
    return cut[:space] if space > length // 2 else cut


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="trained model directory")
    parser.add_argument("--notes-csv", default=str(DEFAULT_CSV))
    parser.add_argument(
        "--text",
        choices=("mtsamples", "synthetic"),
        default="mtsamples",
        help="synthetic: dense, entity-rich sentences (a weak model finds few entities in "
        "MTSamples, which hides per-entity costs); mtsamples falls back to it without the CSV",
    )
    parser.add_argument("--lengths", default=",".join(str(n) for n in DEFAULT_LENGTHS))
    parser.add_argument("--repeats", type=int, default=3, help="runs per length (fastest kept)")
    parser.add_argument(
        "--max-seconds", type=float, default=120.0, help="skip repeats once a run exceeds this"
    )
    parser.add_argument("--output", default=None, help="also write the JSON result here")
    args = parser.parse_args()

    lengths = sorted({int(n) for n in args.lengths.split(",")})
    text, origin = source_text(Path(args.notes_csv), max(lengths), args.text)
    model = NerModel.load(args.model)
    list(model.predict(["Warm-up note: no evidence of pneumonia."]))

    rows: list[dict[str, float | int]] = []
    print(f"model {model.version}, text from {origin}")
    print(f"{'chars':>8} {'entities':>9} {'s/note':>9} {'s/1k chars':>11} {'vs first':>9}")
    for length in lengths:
        note = note_of_length(text, length)
        best = float("inf")
        entities = 0
        for _ in range(max(1, args.repeats)):
            started = time.perf_counter()
            (predicted,) = model.predict([note])
            best = min(best, time.perf_counter() - started)
            entities = len(predicted)
            if best > args.max_seconds:
                break
        per_1k = best / (len(note) / 1000)
        base = rows[0]["seconds_per_1k_chars"] if rows else per_1k
        rows.append(
            {
                "chars": len(note),
                "entities": entities,
                "seconds": round(best, 4),
                "seconds_per_1k_chars": round(per_1k, 5),
                "ratio_to_first": round(per_1k / float(base), 2),
            }
        )
        row = rows[-1]
        print(
            f"{row['chars']:>8} {row['entities']:>9} {row['seconds']:>9.3f} "
            f"{row['seconds_per_1k_chars']:>11.4f} {row['ratio_to_first']:>9.2f}",
            flush=True,
        )
    result = {
        "benchmark": "length_scaling",
        "model": str(args.model),
        "text": origin,
        "rows": rows,
        "max_ratio_to_first": max(float(r["ratio_to_first"]) for r in rows),
    }
    line = json.dumps(result)
    print(line)
    if args.output:
        Path(args.output).write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
