"""Config-driven training of the spaCy NER pipeline from a blank English model.

The model directory written here is what every runtime loads: the spaCy pipeline (loadable
with `spacy.load`, tokenizer included), `clinical_ner.json` (model card: version, labels,
confidence calibration, training data hashes) and `metrics.json` (dev scores per label,
calibration error, timings, data reports).

Safety of the output: `train_model` never deletes what it did not write. An existing output is
replaced only when it is empty or a model directory of this package holding nothing but the
files a model directory has (`check_output_dir`); anything else is refused before training.
The model is built in a temporary directory beside the output and moved into place at the end,
so an interrupted run (SIGINT, or SIGTERM under `sigterm_as_exit`) leaves the old output as it
was and no temporary files behind.

Dictionary features (docs/dictionaries.md): the default config's tok2vec embeds longest-match
tags from vocabularies built from the pinned vocabulary packages at initialization and saved
inside ``tok2vec/model``; a loaded model never needs those packages.

PHI: the saved spaCy vocabulary keeps only the NER labels (`strip_training_strings`). spaCy
would otherwise store every token, norm, prefix, suffix and shape seen in training in
``vocab/strings.json``; inference does not need them (the tok2vec layer embeds hashes of those
attributes, computed from the note being parsed).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import spacy
from spacy.tokens import DocBin
from spacy.training.initialize import init_nlp
from spacy.training.loop import train as spacy_train_loop
from spacy.util import load_config, load_model_from_config

import clinical_ner.model.dictionaries  # noqa: F401 - registers the dictionary-feature layer
from clinical_ner import __version__
from clinical_ner.model.contracts import (
    BASELINE_FILE,
    METRICS_FILE,
    ContractError,
    Metrics,
    ModelCard,
    read_model_card_file,
    write_metrics,
    write_model_card,
)
from clinical_ner.model.corpus import AnnotatedDoc
from clinical_ner.model.enrichment import ENRICHMENT_DIR, save_enrichment
from clinical_ner.model.evaluation import expected_calibration_error, reliability_table
from clinical_ner.model.inference import MODEL_CARD_FILE, Calibrator, NerModel
from clinical_ner.model.scoring import evaluate_docs
from clinical_ner.model.spacy_tokenizer import blank_pipeline
from clinical_ner.model.tokenization import tokenize_offsets

DEFAULT_DEV_FRACTION = 0.1
MODEL_VERSION_PREFIX = "clinical-ner-"
# Top-level entries of a model directory besides its pipeline components' directories.
_MODEL_DIR_FILES = frozenset(
    {
        "config.cfg",
        "meta.json",
        "tokenizer",
        "vocab",
        ENRICHMENT_DIR,
        MODEL_CARD_FILE,
        METRICS_FILE,
        BASELINE_FILE,
    }
)
# Run-specific values of the effective config that do not change the weights.
_VERSION_NEUTRAL_PATHS = {"train": "<train docs>", "dev": "<dev docs>"}


class OutputDirError(ValueError):
    """The output path holds something other than a model directory this package wrote."""


def _is_our_model_dir(path: Path) -> bool:
    """A model directory written by `train_model`: its card names a version of ours."""
    try:
        card = read_model_card_file(path)
    except (OSError, ContractError):
        return False
    version = card.get("model_version")
    return (
        isinstance(version, str)
        and version.startswith(MODEL_VERSION_PREFIX)
        and (path / "config.cfg").is_file()
    )


def _model_dir_entries(path: Path) -> set[str]:
    """Names a model directory of ours may hold: fixed files plus its components' folders."""
    names = set(_MODEL_DIR_FILES)
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        names.update(str(name) for name in meta.get("components", []))
    except (OSError, ValueError, AttributeError):
        pass
    return names


def check_output_dir(output_dir: Path | str) -> None:
    """Raise `OutputDirError` unless writing a model to `output_dir` can destroy nothing.

    Allowed: a path that does not exist, an empty directory, or a model directory of this
    package holding only model files (it is replaced). Messages name paths, never contents.
    """
    output_dir = Path(output_dir)
    if not output_dir.exists():
        if output_dir.is_symlink():
            raise OutputDirError(f"output {output_dir} is a dangling symlink")
        return
    if not output_dir.is_dir():
        raise OutputDirError(f"output {output_dir} exists and is not a directory")
    entries = {child.name for child in output_dir.iterdir()}
    if not entries:
        return
    if not _is_our_model_dir(output_dir):
        raise OutputDirError(
            f"output {output_dir} is not empty and is not a clinical-ner model directory (no "
            f"{MODEL_CARD_FILE} with a model_version); refusing to overwrite it: give a new or "
            "empty directory"
        )
    foreign = sorted(entries - _model_dir_entries(output_dir))
    if foreign:
        raise OutputDirError(
            f"output {output_dir} is a clinical-ner model directory but also holds "
            f"{len(foreign)} other entr{'y' if len(foreign) == 1 else 'ies'} (first: "
            f"{foreign[0]!r}); refusing to delete them: move them or give another directory"
        )


def _publish(staged: Path, output_dir: Path) -> None:
    """Move the finished model in `staged` to `output_dir` (same file system: renames)."""
    check_output_dir(output_dir)  # again: the directory may have changed during training
    if not output_dir.exists():
        os.replace(staged, output_dir)
        return
    for child in output_dir.iterdir():  # only model entries, as checked just above
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    for child in staged.iterdir():
        shutil.move(str(child), str(output_dir / child.name))


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into `SystemExit` so `finally` blocks (temp directory cleanup) run.

    Python's default SIGTERM action kills the process without unwinding. Only installed from
    the main thread and only over the default action, so an application's handler stays.
    """
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def strip_training_strings(nlp: spacy.language.Language) -> None:
    """Keep only the NER labels in `nlp`'s string store before it is saved (PHI).

    spaCy stores every string it interned in training (tokens, norms, affixes, shapes of the
    training notes) in ``vocab/strings.json``. Parsing does not need them: the tok2vec layer
    embeds 64-bit hashes of the attributes, computed from the note being parsed, and the NER
    moves add their labels back on load.
    """
    labels = [label for name in nlp.pipe_names for label in nlp.get_pipe(name).labels]
    # StringStore has no public way to drop strings; this is what its from_disk uses (spaCy is
    # pinned, and the PHI test of the saved directory fails if this stops working).
    nlp.vocab.strings._reset_and_load(sorted(set(labels)))


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


def docs_sha256(docs: Sequence[AnnotatedDoc]) -> str:
    """Hash of the texts and entities of `docs`, in order (what training actually sees)."""
    digest = hashlib.sha256()
    for doc in docs:
        record = [doc.text, [[e.start, e.end, e.label] for e in doc.entities]]
        digest.update(json.dumps(record, ensure_ascii=False).encode("utf-8", "surrogatepass"))
        digest.update(b"\n")
    return digest.hexdigest()


def model_version_for(config_text: str, inputs: TrainingInputs, seed: int) -> str:
    """`clinical-ner-<12 hex>` over everything that changes the weights.

    `config_text` is the effective config (file + overrides + our own adjustments, temp paths
    neutralised, see `_effective_config_text`); the train and dev docs are hashed as parsed,
    so the label map, the dev split and the reader's repairs count as well as the files.
    """
    digest = hashlib.sha256()
    for part in (
        config_text,
        json.dumps(sorted(inputs.data_files.values())),
        json.dumps(sorted(inputs.label_map.items())),
        str(seed),
        docs_sha256(inputs.train_docs),
        docs_sha256(inputs.dev_docs),
        file_sha256(inputs.init_tok2vec) if inputs.init_tok2vec is not None else "",
        spacy.__version__,
        __version__,
    ):
        digest.update(part.encode())
        digest.update(b"\0")
    return f"{MODEL_VERSION_PREFIX}{digest.hexdigest()[:12]}"


def _effective_config_text(config: spacy.util.Config) -> str:
    """The config training runs with, minus its run-specific temp paths (for the version)."""
    canonical = config.copy()
    canonical["paths"].update(_VERSION_NEUTRAL_PATHS)
    if canonical["paths"].get("init_tok2vec"):
        canonical["paths"]["init_tok2vec"] = "<init_tok2vec: hashed by content>"
    return canonical.to_str()


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
) -> Metrics:
    """Train, select on dev, calibrate confidences, and write the model directory.

    Refuses (`OutputDirError`, before training) an output that is not empty and not a model
    directory of ours; see `check_output_dir`. Everything is built in a temporary directory
    beside `output_dir` that is removed however the run ends.
    """
    if not inputs.train_docs:
        raise ValueError("no training documents")
    if not inputs.dev_docs:
        raise ValueError("no dev documents (pass --dev or let train split one off)")
    output_dir = Path(output_dir)
    check_output_dir(output_dir)
    config_path = Path(config_path) if config_path else default_config_path()
    config_text = config_path.read_text()
    started = time.perf_counter()
    conversion = ConversionReport()
    # Beside the output, not in /tmp: the final move is a rename, and a full /tmp cannot
    # fail a run whose output disk has room.
    parent = output_dir.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="clinical-ner-train-", dir=parent) as tmp:
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
        max_steps = int(config["training"]["max_steps"])
        if max_steps < 0:  # spaCy would stop before the first step and save an untrained model
            raise ValueError(f"training.max_steps must be >= 1 (0: no limit), got {max_steps}")
        # Short runs must still be evaluated, or model-best would be the untrained step 0.
        if max_steps and config["training"]["eval_frequency"] > max_steps // 4:
            config["training"]["eval_frequency"] = max(1, max_steps // 4)
        effective_config = _effective_config_text(config)
        nlp = init_nlp(config)  # the tokenizer comes from the config ([nlp] tokenizer)
        log(
            f"training on {conversion.docs} docs / {conversion.entities} entities, "
            f"dev {len(inputs.dev_docs)} docs, seed {seed}"
        )
        (tmp_dir / "out").mkdir()
        spacy_train_loop(nlp, tmp_dir / "out", stdout=_LogWriter(log))
        train_seconds = time.perf_counter() - started

        staged = tmp_dir / "model"
        version = model_version_for(effective_config, inputs, seed)
        nlp = spacy.load(tmp_dir / "out" / "model-best")
        nlp.meta.update({"name": "clinical_ner", "version": __version__})
        nlp.meta["description"] = f"Clinical NER model {version}"
        strip_training_strings(nlp)
        nlp.to_disk(staged)
        save_enrichment(staged)  # the codes, drugs and trait rules' vocabularies travel with it
        # The model as saved (what every runtime loads); calibration and scoring read spans
        # and labels only, so the per-entity details are not computed here.
        model = NerModel.load(staged, enrich=False)
        model.version = version
        metrics = _finish_model_dir(
            staged,
            model,
            inputs,
            seed=seed,
            batch_size=batch_size,
            train_seconds=train_seconds,
            conversion=conversion,
            config_text=config_text,
            effective_config=effective_config,
            overrides=overrides,
        )
        _publish(staged, output_dir)
    return metrics


def _finish_model_dir(
    staged: Path,
    model: NerModel,
    inputs: TrainingInputs,
    *,
    seed: int,
    batch_size: int,
    train_seconds: float,
    conversion: ConversionReport,
    config_text: str,
    effective_config: str,
    overrides: dict[str, object] | None,
) -> Metrics:
    """Calibrate and score `model` on dev; write its card and metrics into `staged`."""
    version = model.version
    calibrator, calibration = _calibrate(model, inputs.dev_docs, batch_size)
    model.calibrator = calibrator
    dev_scores = evaluate_docs(model, inputs.dev_docs, batch_size=batch_size)
    labels = sorted(model.labels)
    card: ModelCard = {
        "model_version": version,
        "labels": labels,
        "calibration": calibrator.as_dict(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "package_version": __version__,
        "spacy_version": spacy.__version__,
        "seed": seed,
        "training_data": inputs.data_files,
    }
    write_model_card(card, staged / MODEL_CARD_FILE)
    metrics: Metrics = {
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
        "effective_config_sha256": hashlib.sha256(effective_config.encode()).hexdigest(),
        "config_overrides": {k: v for k, v in (overrides or {}).items()},
        "init_tok2vec": (
            {"path": str(inputs.init_tok2vec), "sha256": file_sha256(inputs.init_tok2vec)}
            if inputs.init_tok2vec is not None
            else None
        ),
    }
    return write_metrics(metrics, staged / METRICS_FILE)


def pretrain_tok2vec(
    texts: Iterable[str],
    output_dir: Path | str,
    *,
    epochs: int = 2,
    seed: int = 0,
    config_path: Path | str | None = None,
) -> Path:
    """Pretrain the tok2vec layer on unlabelled texts; return the last epoch's weights file.

    Texts are split into paragraphs as written; spaCy's pretraining tokenizes them with the
    tokenizer the config names, the model's own.
    """
    from spacy.training.pretrain import pretrain

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    corpus = output_dir / "pretrain_texts.jsonl"
    count = 0
    with open(corpus, "w", encoding="utf-8") as handle:
        for text in texts:
            for paragraph in text.split("\n"):
                # the config's [corpora.pretrain] min_length counts the model's tokens
                if len(tokenize_offsets(paragraph)) >= 5:
                    handle.write(json.dumps({"text": paragraph}) + "\n")
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
