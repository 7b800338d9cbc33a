"""Time of sections + context traits over the train split's gold mentions, per 1000 words.

    taskset -c 1 .venv/bin/python benchmarks/context_speed.py [--repeats 21]

Prints the best of the repeats for the NegEx scanner alone and for sections + all five traits
(what `Enricher.details` runs per note besides codes, drugs and attributes).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

NOTES = Path(__file__).resolve().parents[2] / "shared" / "data" / "clinical-notes-annotated"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", default=str(NOTES / "notes.jsonl"))
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    if not Path(args.notes).is_file():
        print(f"skipped: {args.notes} is absent (the annotated clinical notes)", file=sys.stderr)
        return 2

    from clinical_ner.model.context import ContextScanner
    from clinical_ner.model.sections import SectionIndex
    from clinical_ner.model.traits import NegationScanner

    with open(args.notes, encoding="utf-8") as handle:
        notes = [n for n in map(json.loads, handle) if n["split"] == "train"]
    words = sum(len(re.findall(r"\S+", n["text"])) for n in notes)
    mentions = sum(len(n["label"]) for n in notes)

    def negation_only() -> None:
        for n in notes:
            scanner = NegationScanner(n["text"])
            for start, end, _ in n["label"]:
                scanner.is_negated(start, end)

    def sections_and_traits() -> None:
        for n in notes:
            scanner = ContextScanner(n["text"], SectionIndex(n["text"]))
            for start, end, _ in n["label"]:
                scanner.traits(start, end)

    runs: tuple[tuple[str, Callable[[], None]], ...] = (
        ("negation only", negation_only),
        ("sections + all traits", sections_and_traits),
    )
    for name, run in runs:
        best = min(_timed(run) for _ in range(args.repeats))
        print(
            f"{name}: {best * 1e3:.1f} ms, {best * 1e6 / words * 1000:.0f} us per 1000 words, "
            f"{best * 1e6 / mentions:.1f} us per mention ({len(notes)} notes, {words} words, "
            f"{mentions} mentions)"
        )
    return 0


def _timed(run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
