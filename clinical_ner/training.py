"""Config-driven training of the spaCy NER pipeline from a blank English model.

The model directory written here is what every runtime loads: the spaCy pipeline (loadable
with `spacy.load`, tokenizer included), `clinical_ner.json` (model card: version, labels,
confidence calibration, training data hashes) and `metrics.json` (dev scores per label,
calibration error, timings, data reports).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import spacy
from spacy.tokens import DocBin
from spacy.training.initialize import init_nlp
from spacy.training.loop import train as spacy_train_loop
from spacy.util import load_config, load_model_from_config

from clinical_ner import __version__
from clinical_ner.corpus import AnnotatedDoc
from clinical_ner.evaluation import expected_calibration_error, reliability_table
from clinical_ner.inference import MODEL_CARD_FILE, Calibrator, NerModel
from clinical_ner.scoring import evaluate_docs
from clinical_ner.tokenization import (
    TOKEN_PATTERN,
    blank_pipeline,
    punctuation_splitting_tokenizer,
)

METRICS_FILE = "metrics.json"
DEFAULT_DEV_FRACTION = 0.1


def default_config_path() -> Path:
    return Path(str(resources.files("clinical_ner") / "configs" / "ner.cfg"))


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _doc_key(doc: AnnotatedDoc) -> int:
    return int.from_bytes(hashlib.sha256(doc.text.encode("utf-8")).digest()[:8], "big")


def split_by_hash(
    docs: Sequence[AnnotatedDoc], fraction: float = DEFAULT_DEV_FRACTION
) -> tuple[list[AnnotatedDoc], list[AnnotatedDoc]]:
    """Deterministic (train, held-out) split on a hash of each text: stable across runs."""
    threshold = int(fraction * 2**64)
    held = [d for d in docs if _doc_key(d) < threshold]
    kept = [d for d in docs if _doc_key(d) >= threshold]
    return kept, held


@dataclass
class ConversionReport:
    docs: int = 0
    entities: int = 0
    entities_realigned: int = 0


def to_docbin(docs: Sequence[AnnotatedDoc], report: ConversionReport) -> DocBin:
    """Tokenize each text as the model will at inference and attach its entities.

    Entity boundaries that fall inside a model token (possible for JSONL spans) are expanded
    to whole tokens and counted, rather than silently dropped.
    """
    nlp = blank_pipeline()
    docbin = DocBin(attrs=["ORTH", "ENT_IOB", "ENT_TYPE"], store_user_data=False)
    for annotated in docs:
        doc = nlp.make_doc(annotated.text)
        spans = []
        for entity in annotated.entities:
            span = doc.char_span(entity.start, entity.end, entity.label)
            if span is None:
                span = doc.char_span(
                    entity.start, entity.end, entity.label, alignment_mode="expand"
                )
                report.entities_realigned += 1
            if span is not None:
                spans.append(span)
        doc.ents = spacy.util.filter_spans(spans)
        report.docs += 1
        report.entities += len(doc.ents)
        docbin.add(doc)
    return docbin


@dataclass
class TrainingInputs:
    """Everything that determines a model, hashed into its version."""

    train_docs: list[AnnotatedDoc]
    dev_docs: list[AnnotatedDoc]
    data_files: dict[str, str] = field(default_factory=dict)  # path -> sha256
    data_reports: dict[str, object] = field(default_factory=dict)
    dev_is_split_of_train: bool = False
    label_map: dict[str, str] = field(default_factory=dict)
    init_tok2vec: Path | None = None  # weights from `pretrain_tok2vec`


def model_version_for(config_text: str, inputs: TrainingInputs, seed: int) -> str:
    digest = hashlib.sha256()
    digest.update(config_text.encode())
    digest.update(json.dumps(sorted(inputs.data_files.values())).encode())
    digest.update(json.dumps(sorted(inputs.label_map.items())).encode())
    digest.update(str(seed).encode())
    if inputs.init_tok2vec is not None:
        digest.update(file_sha256(inputs.init_tok2vec).encode())
    return f"clinical-ner-{digest.hexdigest()[:12]}"


def _calibrate(
    model: NerModel, dev_docs: Sequence[AnnotatedDoc], batch_size: int
) -> tuple[Calibrator, dict[str, object]]:
    """Fit the confidence map on dev; report ECE on held-out halves (2-fold cross-fitting)."""
    predictions = list(model.predict([d.text for d in dev_docs], batch_size=batch_size))
    folds: list[list[tuple[float, bool]]] = [[], []]
    for doc, predicted in zip(dev_docs, predictions, strict=True):
        gold = {(e.start, e.end, e.label) for e in doc.entities}
        fold = folds[_doc_key(doc) % 2]
        fold.extend((p.raw_score, (p.start, p.end, p.label) in gold) for p in predicted)
    held_conf: list[float] = []
    held_ok: list[bool] = []
    for fit_fold, eval_fold in ((0, 1), (1, 0)):
        fitted = Calibrator.fit([c for c, _ in folds[fit_fold]], [ok for _, ok in folds[fit_fold]])
        held_conf.extend(fitted(c) for c, _ in folds[eval_fold])
        held_ok.extend(ok for _, ok in folds[eval_fold])
    all_pairs = folds[0] + folds[1]
    raw_conf = [c for c, _ in all_pairs]
    raw_ok = [ok for _, ok in all_pairs]
    calibrator = Calibrator.fit(raw_conf, raw_ok)
    report = {
        "method": "product of greedy action probabilities + isotonic regression on dev",
        "entities": len(all_pairs),
        "accuracy": sum(raw_ok) / len(raw_ok) if raw_ok else 0.0,
        "ece_raw": expected_calibration_error(raw_conf, raw_ok),
        "ece_calibrated_cross_fitted": expected_calibration_error(held_conf, held_ok),
        "reliability_calibrated": reliability_table(held_conf, held_ok),
    }
    try:
        from sklearn.metrics import roc_auc_score

        if len(set(raw_ok)) == 2:
            report["auroc"] = float(roc_auc_score(raw_ok, raw_conf))
    except ImportError:  # pragma: no cover - scikit-learn is a core dependency
        pass
    return calibrator, report


def train_model(
    inputs: TrainingInputs,
    output_dir: Path | str,
    *,
    seed: int = 0,
    config_path: Path | str | None = None,
    overrides: dict[str, object] | None = None,
    batch_size: int = 128,
    log: Callable[[str], None] = print,
) -> dict[str, object]:
    """Train, select on dev, calibrate confidences, and write the model directory."""
    if not inputs.train_docs:
        raise ValueError("no training documents")
    if not inputs.dev_docs:
        raise ValueError("no dev documents (pass --dev or let train split one off)")
    output_dir = Path(output_dir)
    config_path = Path(config_path) if config_path else default_config_path()
    config_text = config_path.read_text()
    started = time.perf_counter()
    conversion = ConversionReport()
    with tempfile.TemporaryDirectory(prefix="clinical-ner-train-") as tmp:
        tmp_dir = Path(tmp)
        to_docbin(inputs.train_docs, conversion).to_disk(tmp_dir / "train.spacy")
        to_docbin(inputs.dev_docs, ConversionReport()).to_disk(tmp_dir / "dev.spacy")
        config_overrides: dict[str, object] = {
            "paths.train": str(tmp_dir / "train.spacy"),
            "paths.dev": str(tmp_dir / "dev.spacy"),
            "system.seed": seed,
            **(overrides or {}),
        }
        if inputs.init_tok2vec is not None:
            config_overrides["paths.init_tok2vec"] = str(inputs.init_tok2vec)
        config = load_config(config_path, overrides=config_overrides, interpolate=False)
        # Short runs must still be evaluated, or model-best would be the untrained step 0.
        max_steps = int(config["training"]["max_steps"])
        if max_steps and config["training"]["eval_frequency"] > max_steps // 4:
            config["training"]["eval_frequency"] = max(1, max_steps // 4)
        nlp = init_nlp(config)
        nlp.tokenizer = punctuation_splitting_tokenizer(nlp)
        log(
            f"training on {conversion.docs} docs / {conversion.entities} entities, "
            f"dev {len(inputs.dev_docs)} docs, seed {seed}"
        )
        (tmp_dir / "out").mkdir()
        spacy_train_loop(nlp, tmp_dir / "out", stdout=_LogWriter(log))
        best = tmp_dir / "out" / "model-best"
        if output_dir.exists():
            shutil.rmtree(output_dir)
        shutil.copytree(best, output_dir)
    train_seconds = time.perf_counter() - started

    version = model_version_for(config_text, inputs, seed)
    nlp = spacy.load(output_dir)
    nlp.meta.update({"name": "clinical_ner", "version": __version__})
    nlp.meta["description"] = f"Clinical NER model {version}"
    nlp.to_disk(output_dir)
    model = NerModel(nlp, version)
    calibrator, calibration = _calibrate(model, inputs.dev_docs, batch_size)
    model.calibrator = calibrator
    dev_scores = evaluate_docs(model, inputs.dev_docs, batch_size=batch_size)
    labels = sorted(model.labels)
    card = {
        "model_version": version,
        "labels": labels,
        "calibration": calibrator.as_dict(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "package_version": __version__,
        "spacy_version": spacy.__version__,
        "seed": seed,
        "training_data": inputs.data_files,
    }
    (output_dir / MODEL_CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    metrics = {
        "model_version": version,
        "labels": labels,
        "dev": dev_scores,
        "dev_source": "hash split of train" if inputs.dev_is_split_of_train else "dev files",
        "calibration": calibration,
        "training_seconds": round(train_seconds, 1),
        "seed": seed,
        "train_docs": len(inputs.train_docs),
        "dev_docs": len(inputs.dev_docs),
        "train_entities_realigned_to_tokens": conversion.entities_realigned,
        "training_data": inputs.data_files,
        "data_reports": inputs.data_reports,
        "label_map": inputs.label_map,
        "config_sha256": hashlib.sha256(config_text.encode()).hexdigest(),
        "config_overrides": {k: v for k, v in (overrides or {}).items()},
        "init_tok2vec": (
            {"path": str(inputs.init_tok2vec), "sha256": file_sha256(inputs.init_tok2vec)}
            if inputs.init_tok2vec is not None
            else None
        ),
    }
    (output_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def pretrain_tok2vec(
    texts: Iterable[str],
    output_dir: Path | str,
    *,
    epochs: int = 2,
    seed: int = 0,
    config_path: Path | str | None = None,
) -> Path:
    """Pretrain the tok2vec layer on unlabelled texts; return the last epoch's weights file.

    Texts are written pre-tokenized (tokens joined by spaces) because spaCy's pretraining
    tokenizes with the config's default tokenizer, which must see the model's own tokens.
    """
    from spacy.training.pretrain import pretrain

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    corpus = output_dir / "pretrain_texts.jsonl"
    count = 0
    with open(corpus, "w", encoding="utf-8") as handle:
        for text in texts:
            for paragraph in text.split("\n"):
                tokens = TOKEN_PATTERN.findall(paragraph)
                if len(tokens) >= 5:
                    handle.write(json.dumps({"text": " ".join(tokens)}) + "\n")
                    count += 1
    if count == 0:
        raise ValueError("no text with at least 5 tokens to pretrain on")
    raw_config = load_config(
        Path(config_path) if config_path else default_config_path(),
        overrides={
            "paths.raw_text": str(corpus),
            "pretraining.max_epochs": epochs,
            "system.seed": seed,
        },
        interpolate=False,
    )
    # spaCy's pretrain() wants a config with every default filled in, as `train` fills it.
    filled = load_model_from_config(raw_config, auto_fill=True, validate=True).config
    pretrain(filled.interpolate(), output_dir, silent=True)
    corpus.unlink()
    weights = output_dir / f"model{epochs - 1}.bin"
    if not weights.is_file():
        raise RuntimeError(f"pretraining wrote no {weights.name}")
    return weights


class _LogWriter:
    """File-like adapter so spaCy's training table goes through our logger."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            if line.strip():
                self._log(line)
        return len(text)

    def flush(self) -> None:
        pass
