"""NER benchmark on ../shared/data: spaCy model vs a CRF baseline, speed, memory, tokenization.

    python benchmarks/benchmark_ner.py [--corpora bc5cdr,ncbi,biotext] [--max-steps N]
        [--config NAME=CFG ...] [--no-crf]

For each corpus: trains on train, scores on devel (BioText has no devel: a fixed 10% hash split
of train), for each spaCy config and sklearn-crfsuite; prints F1 per corpus, training time,
inference words/s on one core, peak memory, and the effect of the tokenizer on raw text.
The default configs are the bundled `ner.cfg` (dictionary features) and
`benchmarks/configs/ner_no_dictionaries.cfg` (the same without them), side by side.
Results also go to benchmarks/results/benchmark.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from crf_baseline import CrfBaseline  # noqa: E402

from clinical_ner.data.notes import normalise_text, read_notes  # noqa: E402
from clinical_ner.model.corpus import AnnotatedDoc, Entity, Token  # noqa: E402
from clinical_ner.model.evaluation import score_entities  # noqa: E402
from clinical_ner.model.inference import NerModel  # noqa: E402
from clinical_ner.model.readers import DEFAULT_LABEL_MAP, read_annotations  # noqa: E402
from clinical_ner.model.training import (  # noqa: E402
    TrainingInputs,
    file_sha256,
    pretrain_tok2vec,
    split_by_hash,
    train_model,
)

DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
CORPORA = {
    "bc5cdr": ("BC5CDR-IOB/train.tsv", "BC5CDR-IOB/devel.tsv"),
    "ncbi": ("NCBI-disease-IOB/train.tsv", "NCBI-disease-IOB/devel.tsv"),
    "biotext": ("biotext-disease-treatment/train_sent", None),
}
DEFAULT_CONFIGS = {
    "dictionaries": None,  # the bundled clinical_ner/configs/ner.cfg
    "no_dictionaries": REPO / "benchmarks" / "configs" / "ner_no_dictionaries.cfg",
}
NO_SPACE_BEFORE = {".", ",", ";", ":", ")", "]", "%", "?", "!"}
NO_SPACE_AFTER = {"(", "["}
GLUE = {"-", "/"}


def natural_text(doc: AnnotatedDoc) -> AnnotatedDoc:
    """Re-join corpus tokens the way a person writes them ("short-term", "(n=3)")."""
    text = ""
    tokens: list[Token] = []
    previous = ""
    for token in doc.tokens:
        word = token.text
        glued = (
            not text
            or word in NO_SPACE_BEFORE
            or word in GLUE
            or previous in GLUE
            or previous in NO_SPACE_AFTER
            or (word == "'" and previous.isalpha())
            or (previous == "'" and word == "s")
        )
        if not glued:
            text += " "
        tokens.append(Token(word, len(text), len(text) + len(word)))
        text += word
        previous = word
    by_start = {t.start: i for i, t in enumerate(doc.tokens)}
    by_end = {t.end: i for i, t in enumerate(doc.tokens)}
    entities = tuple(
        Entity(tokens[by_start[e.start]].start, tokens[by_end[e.end]].end, e.label)
        for e in doc.entities
    )
    return AnnotatedDoc(text, tuple(tokens), entities, doc.source)


def tokenization_effect(model: NerModel, docs: list[AnnotatedDoc]) -> dict[str, float]:
    """Strict F1 on naturally written text with our tokenizer vs spaCy's default English one."""
    import spacy

    natural = [natural_text(d) for d in docs]
    gold = [[(e.start, e.end, e.label) for e in d.entities] for d in natural]
    results = {}
    default_tokenizer = spacy.blank("en").tokenizer
    for name, make_doc in (
        ("punctuation_splitting (ours)", model.nlp.make_doc),
        ("spacy_default_english", lambda text: _retokenize(model, default_tokenizer(text))),
    ):
        predicted = [
            [(p.start, p.end, p.label) for p in preds]
            for preds in model.predict_docs(make_doc(d.text) for d in natural)
        ]
        results[name] = score_entities(gold, predicted).total.f1
    joined = [[(e.start, e.end, e.label) for e in d.entities] for d in docs]
    predictions = model.predict([d.text for d in docs])
    predicted = [[(p.start, p.end, p.label) for p in preds] for preds in predictions]
    results["corpus_tokens (reference)"] = score_entities(joined, predicted).total.f1
    return results


def _retokenize(model: NerModel, doc: object) -> object:
    from spacy.tokens import Doc

    words = [t.text for t in doc]  # type: ignore[attr-defined]
    spaces = [bool(t.whitespace_) for t in doc]  # type: ignore[attr-defined]
    return Doc(model.nlp.vocab, words=words, spaces=spaces)


def crf_scores(train: list[AnnotatedDoc], dev: list[AnnotatedDoc]) -> dict[str, object]:
    crf = CrfBaseline().fit(train)
    predicted = crf.predict([d.text for d in dev])
    gold = [[(e.start, e.end, e.label) for e in d.entities] for d in dev]
    scores = score_entities(gold, predicted).as_dict()
    return {
        "ents_f": scores["ents_f"],
        "per_label": {k: v["f"] for k, v in scores["per_label"].items()},  # type: ignore[union-attr]
        "train_seconds": round(crf.train_seconds, 1),
    }


def speed(model_dir: Path) -> dict[str, object]:
    notes = DATA / "mtsamples" / "mtsamples.csv"
    env = {
        **os.environ,
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
    }
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "speed.py"),
        "--model",
        str(model_dir),
        "--notes",
        str(notes),
    ]
    if os.path.exists("/usr/bin/taskset"):
        command = ["taskset", "-c", "0", *command]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def pretrained_weights(corpora: list[str], epochs: int) -> Path:
    """tok2vec pretrained on MTSamples notes + the corpora's train texts (never devel)."""
    notes = read_notes([DATA / "mtsamples" / "mtsamples.csv"]).collect().notes
    texts = [normalise_text(n.text, mtsamples_repair=True) for n in notes]
    for name in corpora:
        texts += [d.text for d in read_annotations([DATA / CORPORA[name][0]])[0]]
    started = time.perf_counter()
    weights = pretrain_tok2vec(texts, RESULTS / "pretrain", epochs=epochs, seed=0)
    words = sum(len(t.split()) for t in texts)
    print(
        f"pretrained tok2vec on {len(texts)} texts / {words} words, {epochs} epochs, "
        f"{time.perf_counter() - started:.0f} s -> {weights}",
        flush=True,
    )
    return weights


def run_corpus(
    name: str,
    max_steps: int | None,
    with_crf: bool,
    init_tok2vec: Path | None,
    config: tuple[str, Path | None] = ("dictionaries", None),
) -> dict[str, object]:
    """Train one spaCy config on one corpus and score it on its devel split (plus CRF)."""
    config_name, config_path = config
    train_rel, dev_rel = CORPORA[name]
    train_path = DATA / train_rel
    train_docs, train_report = read_annotations([train_path], labels=dict(DEFAULT_LABEL_MAP))
    if dev_rel:
        dev_path = DATA / dev_rel
        dev_docs, _ = read_annotations([dev_path], labels=dict(DEFAULT_LABEL_MAP))
        files = {str(train_path): file_sha256(train_path), str(dev_path): file_sha256(dev_path)}
    else:
        train_docs, dev_docs = split_by_hash(train_docs, 0.1)
        files = {str(train_path): file_sha256(train_path)}
    inputs = TrainingInputs(
        train_docs,
        dev_docs,
        files,
        {"train": train_report.as_dict()},
        not dev_rel,
        dict(DEFAULT_LABEL_MAP),
    )
    model_dir = RESULTS / "models" / f"{name}-{config_name}"
    overrides: dict[str, object] = {"training.max_steps": max_steps} if max_steps else {}
    started = time.perf_counter()
    metrics = train_model(
        inputs,
        model_dir,
        seed=0,
        config_path=config_path,
        overrides=overrides,
        log=lambda _: None,
    )
    wall = time.perf_counter() - started
    dev = metrics["dev"]
    assert isinstance(dev, dict)
    result: dict[str, object] = {
        "corpus": name,
        "config": config_name,
        "train_docs": len(train_docs),
        "dev_docs": len(dev_docs),
        "spacy_f": dev["ents_f"],
        "spacy_p": dev["ents_p"],
        "spacy_r": dev["ents_r"],
        "spacy_per_label": {k: v["f"] for k, v in dev["per_label"].items()},
        "train_seconds": round(wall, 1),
        "pretrained_tok2vec": init_tok2vec is not None,
        "calibration": {
            k: metrics["calibration"][k]  # type: ignore[index]
            for k in ("ece_raw", "ece_calibrated_cross_fitted", "auroc")
            if k in metrics["calibration"]  # type: ignore[operator]
        },
        "model_dir": str(model_dir),
    }
    if with_crf:
        result["crf"] = crf_scores(train_docs, dev_docs)
    if name == "bc5cdr" and config_name == "dictionaries":
        result["tokenization_f1_on_natural_text"] = tokenization_effect(
            NerModel.load(model_dir), dev_docs
        )
    result["speed_one_core"] = speed(model_dir)
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpora", default="bc5cdr,ncbi,biotext")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--no-crf", action="store_true")
    parser.add_argument("--pretrain-epochs", type=int, default=0, help="0 = no pretraining")
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="NAME=CFG",
        help="spaCy config to compare (repeatable; default: dictionaries and no_dictionaries)",
    )
    args = parser.parse_args()
    configs: dict[str, Path | None] = dict(DEFAULT_CONFIGS)
    if args.config:
        configs = {}
        for spec in args.config:
            config_name, sep, path = spec.partition("=")
            if not sep or not config_name or not path:
                parser.error(f"--config wants NAME=CFG, got {spec!r}")
            configs[config_name] = Path(path)
    if not DATA.is_dir():
        print(f"SKIPPED: {DATA} not found (the benchmark needs ../shared/data)")
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    corpora = [name.strip() for name in args.corpora.split(",")]
    weights = pretrained_weights(corpora, args.pretrain_epochs) if args.pretrain_epochs else None
    results = [
        # The CRF does not depend on the spaCy config: train it once per corpus.
        run_corpus(name, args.max_steps, not args.no_crf and k == 0, weights, config)
        for name in corpora
        for k, config in enumerate(configs.items())
    ]
    (RESULTS / "benchmark.json").write_text(json.dumps(results, indent=2) + "\n")
    print()
    header = f"{'corpus':<9} {'config':<16} {'spaCy F1':>9} {'CRF F1':>8} {'train s':>8} "
    header += f"{'words/s 1 core':>15} "
    print(header + f"{'peak MB':>8}")
    for r in results:
        crf = r.get("crf", {})
        sp = r["speed_one_core"]
        assert isinstance(sp, dict) and isinstance(crf, dict)
        print(
            f"{r['corpus']:<9} {r['config']:<16} {r['spacy_f']:9.4f} "
            f"{crf.get('ents_f', float('nan')):8.4f} "
            f"{r['train_seconds']:8.1f} {sp['with_confidence_words_per_second']:15d} "
            f"{sp['peak_rss_mb']:8.1f}"
        )
        for label, f in r["spacy_per_label"].items():  # type: ignore[union-attr]
            crf_f = crf.get("per_label", {}).get(label, float("nan"))
            print(f"  {label:<12} spaCy {f:.4f}  CRF {crf_f:.4f}")
        if "tokenization_f1_on_natural_text" in r:
            for k, v in r["tokenization_f1_on_natural_text"].items():  # type: ignore[union-attr]
                print(f"  tokenizer {k:<30} F1 {v:.4f}")


if __name__ == "__main__":
    main()
