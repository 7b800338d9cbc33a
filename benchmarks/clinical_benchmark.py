"""Clinical dev split: dictionary lookup vs trained models, strict and overlap P/R/F1 per label.

Two subcommands (models go under /tmp, never into the repository; the data stays in
../shared/data):

    # train one variant of a recipe (default: the product recipe; a .toml file adds corpora
    # with their own label maps and weights, clinical_ner/model/recipes.py)
    python benchmarks/clinical_benchmark.py train --output /tmp/g_runs/no_dict \\
        --config benchmarks/configs/ner_no_dictionaries.cfg --symptom keep
    # score systems side by side and time the dictionary tagger
    python benchmarks/clinical_benchmark.py evaluate --model base=/tmp/g_runs/base_dst \\
        --model dict=/tmp/g_runs/dict_dst

Scores: strict = same label and exact span; overlap = i2b2-style lenient (same label, spans
overlap; P counts predicted mentions that overlap a gold one, R gold mentions overlapped by a
prediction). Two views: SYMPTOM ignored (gold and predicted SYMPTOM dropped) and SYMPTOM as
DISEASE (both mapped). The dictionary baseline is `clinical_ner.model.dictionaries.lookup_entities`.
`--crf` (on by default) adds the project's CRF baseline (benchmarks/crf_baseline.py:
sklearn-crfsuite, BIO over `clinical_ner.model.tokenization.tokenize_offsets`, 100 L-BFGS
iterations) trained on the clinical train split with all three labels and scored the same way.
Speed (run it with `taskset -c 1`: one core): the dictionary tagger's words/s on the dev notes
in this process and its peak RSS in a child process that only loads and runs it; for each
spaCy model, words/s and peak RSS (VmHWM) of a child process that loads the model and runs the
full extraction (`NerModel.predict`: entities + confidence + negation) over the dev notes
repeated to >= 50k whitespace words.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clinical_ner.model.recipes import Recipe

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
NOTES = DATA / "clinical-notes-annotated" / "notes.jsonl"
SYMPTOM_MAPS = {"keep": {}, "as-disease": {"SYMPTOM": "DISEASE"}, "drop": {"SYMPTOM": "O"}}
SPEED_WORDS = 50_000  # the dev notes are repeated until the speed run has at least this many
# Child process for one model's speed and memory: it reads the dev notes itself (no note text
# passes through argv or temporary files), loads the model, warms up on one note, then times the
# full extraction. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forked parent.
MODEL_SPEED_CODE = """
import json, math, sys, time
import clinical_ner.model.dictionaries  # registers the dictionary architecture
from clinical_ner.model.inference import NerModel
notes, model_dir, target = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(notes, encoding="utf-8") as f:
    dev = [r["text"] for r in map(json.loads, filter(str.strip, f)) if r["split"] == "dev"]
texts = dev * math.ceil(target / sum(len(t.split()) for t in dev))
model = NerModel.load(model_dir)
list(model.predict(texts[:1]))
started = time.perf_counter()
entities = sum(len(ents) for ents in model.predict(texts))
seconds = time.perf_counter() - started
peak = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
words = sum(len(t.split()) for t in texts)
print(json.dumps({"words": words, "seconds": seconds, "entities": entities, "peak_kb": int(peak)}))
"""
Span = tuple[int, int, str]


def read_clinical(split: str, symptom: str = "keep") -> list:
    from clinical_ner.model.readers import read_annotations

    labels = {"DISEASE": "DISEASE", "SYMPTOM": "SYMPTOM", "TREATMENT": "TREATMENT"}
    labels.update(SYMPTOM_MAPS[symptom])
    with tempfile.TemporaryDirectory() as tmp:
        subset = Path(tmp) / f"{split}.jsonl"
        with open(NOTES, encoding="utf-8") as source, open(subset, "w", encoding="utf-8") as out:
            for line in source:
                if line.strip() and json.loads(line)["split"] == split:
                    out.write(line)
        docs, _ = read_annotations([subset], "jsonl", labels, deduplicate=False)
    return docs


def view(spans: Sequence[Span], mode: str) -> list[Span]:
    if mode == "symptom-ignored":
        return [s for s in spans if s[2] != "SYMPTOM"]
    return [(s, e, "DISEASE" if label == "SYMPTOM" else label) for s, e, label in spans]


def prf(tp_p: int, n_pred: int, tp_g: int, n_gold: int) -> tuple[float, float, float]:
    p = tp_p / n_pred if n_pred else 0.0
    r = tp_g / n_gold if n_gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def score(
    gold: Sequence[Sequence[Span]], pred: Sequence[Sequence[Span]]
) -> dict[str, dict[str, tuple[float, float, float, int]]]:
    """{match: {label or ALL: (p, r, f, support)}} for strict and overlap matching."""
    labels = sorted({s[2] for doc in gold for s in doc} | {s[2] for doc in pred for s in doc})
    out: dict[str, dict[str, tuple[float, float, float, int]]] = {}
    for match in ("strict", "overlap"):
        counts = {label: [0, 0, 0, 0] for label in [*labels, "ALL"]}  # tp_p, n_p, tp_g, n_g
        for g_doc, p_doc in zip(gold, pred, strict=True):
            for mine, others, hit_i, n_i in ((p_doc, g_doc, 0, 1), (g_doc, p_doc, 2, 3)):
                for s, e, label in mine:
                    if match == "strict":
                        hit = (s, e, label) in set(others)
                    else:
                        hit = any(lo < e and s < hi and lab == label for lo, hi, lab in others)
                    for key in (label, "ALL"):
                        counts[key][hit_i] += hit
                        counts[key][n_i] += 1
        out[match] = {k: (*prf(*c), c[3]) for k, c in counts.items()}
    return out


def dictionary_system() -> tuple[Callable[[list[str]], list[list[Span]]], object]:
    from clinical_ner.model.dictionaries import VocabularySpec, lookup_entities

    tagger = VocabularySpec().build()
    return (lambda texts: [lookup_entities(tagger, t) for t in texts]), tagger


def model_system(path: str) -> Callable[[list[str]], list[list[Span]]]:
    import clinical_ner.model.dictionaries  # noqa: F401 - registers the dictionary architecture
    from clinical_ner.model.inference import NerModel

    model = NerModel.load(path)
    return lambda texts: [
        [(e.start, e.end, e.label) for e in ents] for ents in model.predict(texts, batch_size=16)
    ]


def tagger_speed(tagger: object, texts: list[str]) -> dict[str, float]:
    from clinical_ner.model.dictionaries import lookup_entities

    words = sum(len(t.split()) for t in texts)
    started = time.perf_counter()
    rounds = 5
    for _ in range(rounds):
        for text in texts:
            lookup_entities(tagger, text)  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    return {"words_per_second": round(rounds * words / seconds), "words": words}


def tagger_rss(tagger: object) -> float:
    """Peak RSS (MB) of a fresh process that loads the saved vocabularies and tags notes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dictionaries.bin"
        tagger.to_disk(path)  # type: ignore[attr-defined]
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forked parent.
        code = (
            "import json,sys;from clinical_ner.model.dictionaries import DictionaryTagger,"
            "lookup_entities;t=DictionaryTagger.from_disk(sys.argv[1]);"
            f"[lookup_entities(t,json.loads(l)['text']) for l in open({str(NOTES)!r})];"
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
        )
        result = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
        )
        return float(result.stdout.strip()) / 1024  # kB -> MB


def crf_system() -> tuple[Callable[[list[str]], list[list[Span]]], float]:
    """The project's CRF baseline trained on the clinical train split; (system, train seconds)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from crf_baseline import CrfBaseline

    crf = CrfBaseline(max_iterations=100).fit(read_clinical("train"))
    return crf.predict, crf.train_seconds


def model_speed(path: str) -> dict[str, float]:
    """Words/s and peak RSS (MB) of a fresh process running the full extraction with a model."""
    result = subprocess.run(
        [sys.executable, "-c", MODEL_SPEED_CODE, str(NOTES), path, str(SPEED_WORDS)],
        capture_output=True,
        text=True,
        check=True,
    )
    run = json.loads(result.stdout.strip().splitlines()[-1])
    return {
        "words_per_second": round(run["words"] / run["seconds"]),
        "words": run["words"],
        "peak_rss_mb": run["peak_kb"] / 1024,
    }


def print_table(name: str, results: dict[str, dict]) -> None:
    for mode in ("symptom-ignored", "symptom-as-disease"):
        print(f"\n## {name}: {mode}")
        print("| system | label | support | strict P / R / F1 | overlap P / R / F1 |")
        print("|---|---|---|---|---|")
        for system, by_mode in results.items():
            scores = by_mode[mode]
            for label in sorted(scores["strict"], key=lambda x: (x == "ALL", x)):
                sp, sr, sf, support = scores["strict"][label]
                op, orr, of, _ = scores["overlap"].get(label, (0.0, 0.0, 0.0, 0))
                print(
                    f"| {system} | {label} | {support} | {sp:.3f} / {sr:.3f} / {sf:.3f} | "
                    f"{op:.3f} / {orr:.3f} / {of:.3f} |"
                )


def evaluate(args: argparse.Namespace) -> None:
    docs = read_clinical("dev")
    texts = [d.text for d in docs]
    gold = [[(e.start, e.end, e.label) for e in d.entities] for d in docs]
    systems: dict[str, Callable[[list[str]], list[list[Span]]]] = {}
    lookup, tagger = dictionary_system()
    systems["dictionary lookup"] = lookup
    model_dirs = dict(spec.partition("=")[::2] for spec in args.model)
    for name, path in model_dirs.items():
        systems[name] = model_system(path)
    crf_seconds = None
    if args.crf:
        systems["crf (sklearn-crfsuite)"], crf_seconds = crf_system()
    results: dict[str, dict] = {}
    for name, system in systems.items():
        predicted = system(texts)
        results[name] = {
            mode: score([view(g, mode) for g in gold], [view(p, mode) for p in predicted])
            for mode in ("symptom-ignored", "symptom-as-disease")
        }
    print(f"clinical dev split: {len(docs)} notes, {sum(len(g) for g in gold)} gold mentions")
    print_table("clinical dev", results)
    if crf_seconds is not None:
        print(
            f"\ncrf (sklearn-crfsuite): trained on the clinical train split (DISEASE/SYMPTOM/"
            f"TREATMENT, BIO over tokenize_offsets, max_iterations=100) in {crf_seconds:.0f} s"
        )
    speed = tagger_speed(tagger, texts)
    tagger_peak = tagger_rss(tagger)
    print(
        f"\ndictionary tagger ({len(tagger)} terms): {speed['words_per_second']} words/s "  # type: ignore[arg-type]
        f"(lookup over {speed['words']} whitespace words x5, one process); peak RSS of a "
        f"process loading the saved vocabularies and tagging all 160 notes: "
        f"{tagger_peak:.0f} MB"
    )
    print("\n## extraction speed (one core) and peak RSS")
    print("| system | words/s | peak RSS (MB) | measured on |")
    print("|---|---|---|---|")
    print(
        f"| dictionary lookup | {speed['words_per_second']} | {tagger_peak:.0f} | "
        f"lookup only; speed in-process over {speed['words']} words x5, RSS of a child "
        "tagging all 160 notes |"
    )
    for name, path in model_dirs.items():
        run = model_speed(path)
        print(
            f"| {name} | {run['words_per_second']} | {run['peak_rss_mb']:.0f} | child process: "
            f"load + NerModel.predict (entities, confidence, negation) over the dev notes "
            f"repeated to {run['words']} words |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def with_symptom(recipe: Recipe, mode: str) -> Recipe:
    """`recipe` with SYMPTOM kept, mapped to DISEASE, or dropped in every part's label map."""
    remap = SYMPTOM_MAPS[mode]

    def mapped(labels: Mapping[str, str] | None) -> dict[str, str] | None:
        return None if labels is None else {k: remap.get(v, v) for k, v in labels.items()}

    return dataclasses.replace(
        recipe,
        labels=mapped(recipe.labels) or {},
        train=tuple(dataclasses.replace(p, labels=mapped(p.labels)) for p in recipe.train),
        dev=tuple(dataclasses.replace(p, labels=mapped(p.labels)) for p in recipe.dev),
    )


def train(args: argparse.Namespace) -> None:
    import clinical_ner.model.dictionaries  # noqa: F401 - registers the dictionary architecture
    from clinical_ner.model.recipes import get_recipe, read_recipe_data
    from clinical_ner.model.training import TrainingInputs, train_model

    recipe = with_symptom(get_recipe(args.recipe), args.symptom)
    data = read_recipe_data(recipe, DATA, log=print)
    inputs = TrainingInputs(
        data.train_docs,
        data.dev_docs,
        data_files={str(p): "" for p in data.files},
        data_reports={"recipe": recipe.name, "files": data.reports, "symptom": args.symptom},
        label_map=dict(recipe.labels),
    )
    started = time.perf_counter()
    overrides = {**recipe.overrides, "training.eval_frequency": 250}
    if args.steps:
        overrides["training.max_steps"] = args.steps
    metrics = train_model(
        inputs,
        args.output,
        seed=recipe.seed if args.seed is None else args.seed,
        config_path=args.config,
        overrides=overrides,
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "output": args.output,
                "recipe": recipe.name,
                "seconds": round(time.perf_counter() - started),
                "peak_rss_mb": round(peak),
                "train": {k: v for k, v in data.reports.items() if k.startswith("train ")},
                "dev_ents_f": metrics["dev"]["ents_f"],  # type: ignore[index]
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one variant of a recipe (default: product)")
    t.add_argument("--output", required=True)
    t.add_argument("--recipe", default="product", help="bundled recipe name or a .toml file")
    t.add_argument("--config", default=None, help="spaCy config (default: the bundled ner.cfg)")
    t.add_argument("--symptom", choices=sorted(SYMPTOM_MAPS), default="keep")
    t.add_argument("--steps", type=int, default=None, help="default: the recipe's")
    t.add_argument("--seed", type=int, default=None, help="default: the recipe's")
    e = sub.add_parser("evaluate", help="score systems on the clinical dev split")
    e.add_argument("--model", action="append", default=[], help="NAME=MODEL_DIR")
    e.add_argument("--json", default=None, help="also write the scores to this file")
    e.add_argument(
        "--crf",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also train and score the CRF baseline on the clinical train split (default: on)",
    )
    args = parser.parse_args()
    train(args) if args.command == "train" else evaluate(args)


if __name__ == "__main__":
    main()
