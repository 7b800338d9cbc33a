"""Codes, traits, sections and medication attributes measured on the in-house dev annotations.

Reads the gold mentions of the clinical dev split (``../shared/data/clinical-notes-annotated``)
and our annotations of them (``benchmarks/annotations/*.jsonl``, guideline in
``benchmarks/annotations/GUIDELINE.md``), runs the product's per-entity details on the gold
mentions (so the figures measure linking, traits and attributes, not NER errors) and prints:

* ICD-10-CM top-1 / top-5 accuracy, at the full code and at the 3-character category, for the
  linker and for a peer (exact match of the mention on a tabular-list description);
* precision / recall / F1 per trait, for the rules with sections and without them (the peer
  for negation is the NegEx scanner alone), and section accuracy;
* medication attribute precision / recall / F1 (type and exact offsets; and type + overlap);
* the cost: milliseconds per note and per 1000 words of computing the details.

    .venv/bin/python benchmarks/structured_benchmark.py [--model DIR] [--json OUT]

Without ``--model`` the vocabularies are the freshly built ones (the same a trained model holds).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ANNOTATIONS = REPO / "benchmarks" / "annotations"
NOTES = REPO.parent / "shared" / "data" / "clinical-notes-annotated" / "notes.jsonl"


def read_jsonl(paths: Iterable[Path]) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(paths):
        with path.open(encoding="utf-8") as handle:
            rows.extend(json.loads(line) for line in handle if line.strip())
    return rows


def check_pointer(record: dict[str, Any], notes: dict[str, dict[str, Any]]) -> tuple[int, int]:
    """The record's (start, end), after checking it points at the same gold mention."""
    note = notes[str(record["note_id"])]
    start, end = int(record["start"]), int(record["end"])
    digest = hashlib.sha256(note["text"][start:end].encode()).hexdigest()[:8]
    if digest != record["text_sha8"] or [start, end, record["label"]] not in note["label"]:
        raise SystemExit(f"annotation for note {record['note_id']} {start}..{end} is stale")
    return start, end


def prf(tp: int, fp: int, fn: int) -> dict[str, float | int]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"p": round(p, 3), "r": round(r, 3), "f1": round(f, 3), "tp": tp, "fp": fp, "fn": fn}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory whose enrichment/ to use")
    parser.add_argument("--notes", default=str(NOTES))
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--part",
        action="append",
        help="only the annotation files of these parts (a, b, c: the *_dev_<part>.jsonl files); "
        "repeatable. Default: all parts",
    )
    args = parser.parse_args()
    if not Path(args.notes).is_file():
        print(f"skipped: {args.notes} is absent (the annotated clinical notes)", file=sys.stderr)
        return 2

    from clinical_ner.model.context import TRAITS, ContextScanner
    from clinical_ner.model.enrichment import (
        ENRICHMENT_DIR,
        MANIFEST_FILE,
        Enricher,
        built_enrichment_dir,
    )
    from clinical_ner.model.sections import SectionIndex
    from clinical_ner.model.traits import NegationScanner

    notes = {}
    with open(args.notes, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record["split"] == "dev":
                notes[str(record["note_id"])] = record

    def files(kind: str) -> list[Path]:
        found = sorted(ANNOTATIONS.glob(f"{kind}_dev_*.jsonl"))
        return [p for p in found if not args.part or p.stem.rsplit("_", 1)[1] in args.part]

    codes = read_jsonl(files("icd10cm"))
    traits = read_jsonl(files("traits"))
    attributes = read_jsonl(files("attributes"))
    print(f"annotation parts: {', '.join(args.part) if args.part else 'all'}")

    started = time.perf_counter()
    directory = Path(args.model) / ENRICHMENT_DIR if args.model else built_enrichment_dir()
    if not (directory / MANIFEST_FILE).is_file():
        raise SystemExit(f"{directory} holds no vocabularies")
    enricher = Enricher.load(directory)
    load_seconds = time.perf_counter() - started

    annotated = sorted({str(r["note_id"]) for r in (*codes, *traits, *attributes)})
    details: dict[tuple[str, int, int], Any] = {}
    spent = 0.0
    words = 0
    for note_id in annotated:
        note = notes[note_id]
        spans = [(s, e, label) for s, e, label in sorted(note["label"])]
        started = time.perf_counter()
        found = enricher.details(note["text"], spans)
        spent += time.perf_counter() - started
        words += len(note["text"].split())
        for (s, e, _), d in zip(spans, found, strict=True):
            details[(note_id, s, e)] = d

    results: dict[str, Any] = {
        "vocabularies": str(directory),
        "load_seconds": round(load_seconds, 2),
    }

    # ICD-10-CM codes.
    import simple_icd_10_cm as cm

    exact_index: dict[str, str] = {}
    for candidate_code in cm.get_all_codes(with_dots=True):
        if cm.is_leaf(candidate_code):
            description = cm.get_description(candidate_code)
            exact_index.setdefault(" ".join(description.lower().split()), candidate_code)
    coded = [r for r in codes if r["code"]]
    hits = Counter()
    for r in coded:
        start, end = check_pointer(r, notes)
        gold = r["code"]
        ranked = [c.code for c in details[(str(r["note_id"]), start, end)].codes]
        hits["top1"] += ranked[:1] == [gold]
        hits["top5"] += gold in ranked[:5]
        hits["top1_category"] += [c[:3] for c in ranked[:1]] == [gold[:3]]
        hits["top5_category"] += gold[:3] in {c[:3] for c in ranked[:5]}
        mention = notes[str(r["note_id"])]["text"][start:end]
        peer = exact_index.get(" ".join(mention.lower().split()))
        hits["peer_top1"] += peer == gold
        hits["peer_top1_category"] += peer is not None and peer[:3] == gold[:3]
    n = len(coded)
    results["codes"] = {
        "mentions": len(codes),
        "coded": n,
        "uncodable": len(codes) - n,
        **{k: round(v / n, 3) for k, v in sorted(hits.items())},
    }

    # Traits and sections: rules with sections (the product), without sections, NegEx alone.
    by_note: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in traits:
        check_pointer(r, notes)
        by_note[str(r["note_id"])].append(r)
    counts: dict[str, dict[str, Counter[str]]] = {
        system: defaultdict(Counter) for system in ("product", "no_sections", "negex")
    }
    trigger_overlap = Counter()
    section_hits = 0
    for note_id, records in by_note.items():
        text = notes[note_id]["text"]
        bare = ContextScanner(text, None)
        negex = NegationScanner(text)
        index = SectionIndex(text)
        for r in records:
            start, end = int(r["start"]), int(r["end"])
            product = details[(note_id, start, end)]
            section = index.at(start)
            section_hits += (section.name if section else None) == r["section"]
            predicted = {
                "product": {t.trait: t for t in product.traits},
                "no_sections": {t.trait: t for t in bare.traits(start, end)},
                "negex": {"negated": True} if negex.is_negated(start, end) else {},
            }
            for system, found in predicted.items():
                for trait in TRAITS if system != "negex" else ("negated",):
                    gold, guess = bool(r[trait]), trait in found
                    counts[system][trait][
                        "tp" if gold and guess else "fp" if guess else "fn" if gold else "tn"
                    ] += 1
            for trait, evidence in predicted["product"].items():
                if r[trait] and trait in r["triggers"]:
                    g_start, g_end = r["triggers"][trait]
                    trigger_overlap[trait] += evidence.start < g_end and g_start < evidence.end
    results["traits"] = {
        system: {trait: prf(c["tp"], c["fp"], c["fn"]) for trait, c in sorted(per_trait.items())}
        for system, per_trait in counts.items()
    }
    results["trait_trigger_overlap"] = {
        trait: round(trigger_overlap[trait] / max(1, counts["product"][trait]["tp"]), 3)
        for trait in TRAITS
    }
    results["trait_mentions"] = len(traits)
    results["section_accuracy"] = round(section_hits / max(1, len(traits)), 3)

    # Medication attributes.
    exact: dict[str, Counter[str]] = defaultdict(Counter)
    loose: dict[str, Counter[str]] = defaultdict(Counter)
    for r in attributes:
        start, end = check_pointer(r, notes)
        gold = {(a["type"], int(a["start"]), int(a["end"])) for a in r["attributes"]}
        guess = {
            (a.type, a.start, a.end) for a in details[(str(r["note_id"]), start, end)].attributes
        }
        for kind in {k for k, _, _ in gold | guess} | {"all"}:
            g = {a for a in gold if kind in ("all", a[0])}
            p = {a for a in guess if kind in ("all", a[0])}
            exact[kind]["tp"] += len(g & p)
            exact[kind]["fp"] += len(p - g)
            exact[kind]["fn"] += len(g - p)
            matched = {a for a in p if any(a[0] == b[0] and a[1] < b[2] and b[1] < a[2] for b in g)}
            found = {b for b in g if any(a[0] == b[0] and a[1] < b[2] and b[1] < a[2] for a in p)}
            loose[kind]["tp"] += len(found)
            loose[kind]["fp"] += len(p - matched)
            loose[kind]["fn"] += len(g - found)
    results["attributes"] = {
        "medication_mentions": len(attributes),
        "gold_attributes": sum(len(r["attributes"]) for r in attributes),
        "exact": {k: prf(c["tp"], c["fp"], c["fn"]) for k, c in sorted(exact.items())},
        "overlap": {k: prf(c["tp"], c["fp"], c["fn"]) for k, c in sorted(loose.items())},
    }
    results["cost"] = {
        "notes": len(annotated),
        "words": words,
        "gold_mentions": len(details),
        "ms_per_note": round(1000 * spent / len(annotated), 2),
        "ms_per_1000_words": round(1000 * spent / words * 1000, 2),
    }

    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


def print_table(results: dict[str, Any]) -> None:
    c = results["codes"]
    print(f"ICD-10-CM, {c['coded']} coded DISEASE mentions ({c['uncodable']} uncodable left out)")
    print(f"  {'system':<28} {'top-1':>6} {'top-5':>6} {'cat top-1':>9} {'cat top-5':>9}")
    print(
        f"  {'linker (TF-IDF + rules)':<28} {c['top1']:6.3f} {c['top5']:6.3f} "
        f"{c['top1_category']:9.3f} {c['top5_category']:9.3f}"
    )
    print(
        f"  {'exact billable description':<28} {c['peer_top1']:6.3f} {'':>6} "
        f"{c['peer_top1_category']:9.3f}"
    )
    print(f"\nTraits, {results['trait_mentions']} mentions (P / R / F1, support)")
    for system, label in (
        ("product", "rules + sections"),
        ("no_sections", "rules without sections"),
        ("negex", "NegEx scanner alone"),
    ):
        for trait, s in results["traits"][system].items():
            print(
                f"  {label:<24} {trait:<13} {s['p']:.3f} / {s['r']:.3f} / {s['f1']:.3f}"
                f"  ({s['tp'] + s['fn']})"
            )
    print(
        f"  trigger overlaps the annotated trigger (true positives): "
        f"{results['trait_trigger_overlap']}"
    )
    print(f"  section accuracy: {results['section_accuracy']:.3f}")
    a = results["attributes"]
    print(
        f"\nMedication attributes, {a['medication_mentions']} medication mentions, "
        f"{a['gold_attributes']} gold attributes (P / R / F1)"
    )
    for kind, s in a["exact"].items():
        o = a["overlap"][kind]
        print(
            f"  {kind:<14} exact {s['p']:.3f} / {s['r']:.3f} / {s['f1']:.3f}   "
            f"overlap {o['p']:.3f} / {o['r']:.3f} / {o['f1']:.3f}  ({s['tp'] + s['fn']})"
        )
    cost = results["cost"]
    print(
        f"\nCost of the details: {cost['ms_per_note']} ms per note, "
        f"{cost['ms_per_1000_words']} ms per 1000 words ({cost['notes']} notes, "
        f"{cost['gold_mentions']} gold mentions); vocabularies loaded in "
        f"{results['load_seconds']} s"
    )


if __name__ == "__main__":
    sys.exit(main())
