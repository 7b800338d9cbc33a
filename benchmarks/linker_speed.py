"""ICD-10-CM linker and drug normaliser costs: build, load, artifact size, microseconds/mention.

Run on one core: `taskset -c 1 .venv/bin/python benchmarks/linker_speed.py`. Mentions are the
gold DISEASE/SYMPTOM (linker) and TREATMENT (normaliser) spans of the clinical TRAIN split
(../shared/data/clinical-notes-annotated/notes.jsonl), fed note by note as the extraction does
(one `link` / `normalise` call per note). "cold" starts from a freshly loaded artifact (every
first occurrence is computed), "warm" repeats the run with the caches filled. No note text is
printed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from clinical_ner.model.coding import Icd10CmLinker
from clinical_ner.model.drugs import DrugNormaliser

REPO = Path(__file__).resolve().parents[1]
NOTES = REPO.parent / "shared" / "data" / "clinical-notes-annotated" / "notes.jsonl"


def _notes(path: Path, split: str) -> list[tuple[int, list[str], list[str]]]:
    """(words, disease/symptom mentions, treatment mentions) per note of the split."""
    out = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record.get("split") != split:
                continue
            text = record["text"]
            conditions = [text[s:e] for s, e, label in record["label"] if label != "TREATMENT"]
            treatments = [text[s:e] for s, e, label in record["label"] if label == "TREATMENT"]
            out.append((len(text.split()), conditions, treatments))
    return out


def _size_mb(directory: Path) -> float:
    return sum(p.stat().st_size for p in directory.iterdir()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", type=Path, default=NOTES)
    parser.add_argument("--split", default="train")
    args = parser.parse_args()
    notes = _notes(args.notes, args.split)
    words = sum(n for n, _, _ in notes)
    n_conditions = sum(len(c) for _, c, _ in notes)
    n_treatments = sum(len(t) for _, _, t in notes)

    with tempfile.TemporaryDirectory() as tmp:
        icd_dir, drug_dir = Path(tmp) / "icd", Path(tmp) / "drugs"
        started = time.perf_counter()
        Icd10CmLinker.build().save(icd_dir)
        icd_build = time.perf_counter() - started
        started = time.perf_counter()
        DrugNormaliser.build().save(drug_dir)
        drug_build = time.perf_counter() - started

        started = time.perf_counter()
        linker = Icd10CmLinker.load(icd_dir)
        icd_load = time.perf_counter() - started
        started = time.perf_counter()
        drugs = DrugNormaliser.load(drug_dir)
        drug_load = time.perf_counter() - started
        icd_mb, drug_mb = _size_mb(icd_dir), _size_mb(drug_dir)

    def run() -> tuple[float, float]:
        icd = drug = 0.0
        for _, conditions, treatments in notes:
            started = time.perf_counter()
            linker.link(conditions)
            icd += time.perf_counter() - started
            started = time.perf_counter()
            drugs.normalise(treatments)
            drug += time.perf_counter() - started
        return icd, drug

    icd_cold, drug_cold = run()
    icd_warm, drug_warm = run()
    unique = len({m for _, c, _ in notes for m in c})
    # How full the top 5 is (from the warm cache): a short list cannot hold the right code.
    found = [len(c) for _, conditions, _ in notes for c in linker.link(conditions, k=5)]

    print(
        f"notes={len(notes)} ({args.split}) words={words} disease/symptom mentions="
        f"{n_conditions} ({unique} distinct) treatment mentions={n_treatments}"
    )
    print(
        f"{'component':<14}{'build s':>9}{'load s':>9}{'MB':>7}{'cold us/m':>11}"
        f"{'warm us/m':>11}{'cold ms/1k words':>18}{'warm ms/1k words':>18}"
    )
    for name, build, load, mb, cold, warm, count in (
        ("icd10cm", icd_build, icd_load, icd_mb, icd_cold, icd_warm, n_conditions),
        ("drugs", drug_build, drug_load, drug_mb, drug_cold, drug_warm, n_treatments),
    ):
        print(
            f"{name:<14}{build:>9.2f}{load:>9.3f}{mb:>7.2f}{cold / count * 1e6:>11.1f}"
            f"{warm / count * 1e6:>11.2f}{cold / words * 1e6:>18.3f}{warm / words * 1e6:>18.3f}"
        )
    print(
        f"icd10cm candidates per mention at k=5: mean {sum(found) / max(1, len(found)):.2f}, "
        f"{sum(n == 5 for n in found) / max(1, len(found)):.1%} with all 5"
    )
    total_cold = (icd_cold + drug_cold) / words * 1e6
    total_warm = (icd_warm + drug_warm) / words * 1e6
    print(
        f"together: {total_cold:.3f} ms per 1000 words cold, {total_warm:.3f} warm (budget ~4 ms)"
    )


if __name__ == "__main__":
    main()
