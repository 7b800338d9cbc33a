"""The container's ``train`` entry point (SageMaker training contract), runnable locally.

Layout under the root (``/opt/ml`` in SageMaker; ``--root DIR`` or ``SM_ROOT`` elsewhere)::

    input/config/hyperparameters.json   all values are strings (SageMaker passes them so)
    input/data/train/                   required channel: annotated files, any reader format
    input/data/dev/                     optional; without it a hash split of train is dev
    input/data/test/                    optional; scored into metrics.json["test"]
    input/data/production/              optional: the production (current Approved) model, as
                                        the model.tar.gz a previous job wrote or as an
                                        extracted model directory
    input/data/validated_eval/          optional: the validated evaluation set (reviewed notes
                                        never trained on, doccano JSONL; docs/review.md)
    model/                              written: spaCy model, clinical_ner.json, metrics.json,
                                        drift_baseline.json (SageMaker tars it to model.tar.gz)
    output/failure                      written on error: one reason, no data text

Hyperparameters (all optional): ``seed`` (int, default 0), ``max_steps`` (int: spaCy
``training.max_steps``), ``labels`` (``D=DISEASE,T=TREATMENT`` or a JSON object, over the
default mapping), ``format`` (auto | iob | sent-label | jsonl), ``dev_fraction`` (float in
(0, 0.5], default 0.1, used without a dev channel), ``batch_size`` (int), and any dotted spaCy
config override (``training.max_steps``, ``training.dropout``, ``components.ner.model...``;
values are parsed as JSON when they parse, else kept as strings). Keys starting with
``sagemaker_`` are ignored; any other unknown key fails the job, so a typo cannot silently
train a different model. Every hyperparameter that changes the weights (overrides, seed, labels,
dev_fraction) changes the model version (`clinical_ner.model.training.model_version_for`).

Production baseline: with a ``production`` channel, the production model is scored on exactly
the candidate's dev docs (and test docs, with a test channel) before training, so the promotion
gate (`clinical_ner.pipeline.gating`) compares both models on the same data:
``metrics.json["production_baseline"] = {"model_version": <production NerModel.version>,
"dev": <scores like metrics["dev"]>, "test": <like metrics["test"], with a test channel>}``.
Scores are against the gold labels of the candidate's data: a gold label the production model
does not know counts as missed (F1 0); labels only production predicts stay in ``per_label``.
The channel holds one ``*.tar.gz`` (gzip checksum verified, extracted into a temp dir with
tarfile's ``data`` filter; links, special files, absolute or ``..`` paths and more than
``PRODUCTION_ARCHIVE_MAX_BYTES`` unpacked are rejected) or a model directory (``config.cfg``
at its top or in its only subdirectory). The model needs its ``clinical_ner.json`` card (the
version the gate matches). A production channel that is present but unusable fails the job: a
silently missing baseline would make the gate fall back to comparing scores from different
datasets.

Validated evaluation set: with a ``validated_eval`` channel holding annotated documents, the
trained candidate is scored on it into ``metrics.json["validated_eval"]`` (scores + ``docs``
+ ``files``) and, with a production channel, the production model too, into
``production_baseline["validated_eval"]``: the gate refuses a candidate that is worse on the
users' own notes (`clinical_ner.pipeline.gating`, rule 5). An empty channel counts as absent.

Final metrics are also printed as ``METRIC <name>=<value>`` lines, so a training job's
MetricDefinitions can pick them up with e.g. ``METRIC dev_f1=([0-9.]+)``. Per-label lines
(``dev_f1_<LABEL>``) follow the model's own labels; ``dev_min_label_f1``/``test_min_label_f1``
(the weakest label) are the label-independent names the state machine defines. With a production
channel these include ``production_dev_f1`` (and ``production_test_f1``), which are logged to
MLflow too, with the ``production_model_version`` tag.

PHI: errors name files, lines, keys and exception types; they never quote data. Unexpected
exceptions are reported by type and code location only, because their messages may echo data.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tarfile
import tempfile
import time
import traceback
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:  # spaCy stays a lazy import
    from clinical_ner.model.corpus import AnnotatedDoc
    from clinical_ner.model.inference import NerModel

DEFAULT_ROOT = "/opt/ml"
ROOT_ENV = "SM_ROOT"
FAILURE_REASON_MAX = 1024  # SageMaker shows the first 1024 characters as FailureReason
PRODUCTION_CHANNEL = "production"
VALIDATED_EVAL_CHANNEL = "validated_eval"
CHANNELS = ("train", "dev", "test", PRODUCTION_CHANNEL, VALIDATED_EVAL_CHANNEL)
PRODUCTION_ARCHIVE_MAX_BYTES = 4 * 1024**3  # unpacked; a model of this project is ~10-100 MB
PRODUCTION_ARCHIVE_MAX_MEMBERS = 10_000
_ALIASES = {"max_steps": "training.max_steps"}
_OVERRIDE_SECTIONS = ("training.", "components.", "nlp.", "corpora.", "initialize.", "system.")

log = logging.getLogger("clinical_ner.train")


class TrainJobError(Exception):
    """A problem with the job's inputs; the message is safe to show (no data text)."""


@dataclass
class Hyperparameters:
    seed: int = 0
    fmt: str = "auto"
    labels: str | None = None
    dev_fraction: float = 0.1
    batch_size: int = 128
    overrides: dict[str, object] = field(default_factory=dict)

    def as_params(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "format": self.fmt,
            "labels": self.labels or "",
            "dev_fraction": self.dev_fraction,
            "batch_size": self.batch_size,
            **{f"override.{k}": v for k, v in sorted(self.overrides.items())},
        }


def _parse_value(raw: str) -> object:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _as_int(key: str, raw: object, minimum: int | None = None) -> int:
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise TrainJobError(f"hyperparameter {key!r} must be an integer") from None
    if minimum is not None and value < minimum:
        raise TrainJobError(f"hyperparameter {key!r} must be >= {minimum}")
    return value


def parse_hyperparameters(raw: dict[str, object]) -> Hyperparameters:
    """Hyperparameters from SageMaker's string map (non-string JSON values are tolerated)."""
    from clinical_ner.model.readers import AnnotationFormat, parse_label_map

    if not isinstance(raw, dict):
        raise TrainJobError("hyperparameters.json must hold a JSON object")
    hp = Hyperparameters()
    unknown = []
    for key, value in raw.items():
        text = value if isinstance(value, str) else json.dumps(value)
        key = _ALIASES.get(key, key)
        if key == "seed":
            hp.seed = _as_int(key, text)
        elif key == "batch_size":
            hp.batch_size = _as_int(key, text, minimum=1)
        elif key == "format":
            if text not in {f.value for f in AnnotationFormat}:
                allowed = ", ".join(f.value for f in AnnotationFormat)
                raise TrainJobError(f"hyperparameter 'format' must be one of {allowed}")
            hp.fmt = text
        elif key == "labels":
            hp.labels = _label_spec(text)
            try:
                parse_label_map(hp.labels)
            except ValueError as exc:
                raise TrainJobError(f"hyperparameter 'labels': {exc}") from None
        elif key == "dev_fraction":
            try:
                hp.dev_fraction = float(text)
            except ValueError:
                raise TrainJobError("hyperparameter 'dev_fraction' must be a number") from None
            if not 0.0 < hp.dev_fraction <= 0.5:
                raise TrainJobError("hyperparameter 'dev_fraction' must be in (0, 0.5]")
        elif key.startswith(_OVERRIDE_SECTIONS):
            hp.overrides[key] = _parse_value(text)
        elif key.startswith("sagemaker_"):
            continue
        else:
            unknown.append(key)
    if unknown:
        raise TrainJobError(
            f"unknown hyperparameter(s): {', '.join(sorted(unknown))} (known: seed, max_steps, "
            "labels, format, dev_fraction, batch_size, or a dotted spaCy config key)"
        )
    if "training.max_steps" in hp.overrides:
        hp.overrides["training.max_steps"] = _as_int(
            "max_steps", hp.overrides["training.max_steps"], minimum=1
        )
    return hp


def _label_spec(text: str) -> str:
    """``{"D": "DISEASE"}`` or ``D=DISEASE,...`` -> the ``D=DISEASE,...`` form."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            mapping = json.loads(stripped)
        except json.JSONDecodeError:
            raise TrainJobError("hyperparameter 'labels' is not valid JSON") from None
        if not isinstance(mapping, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
        ):
            raise TrainJobError("hyperparameter 'labels' must map strings to strings")
        return ",".join(f"{k}={v}" for k, v in mapping.items())
    return stripped


def channel_files(channel_dir: Path) -> list[Path]:
    """Data files of a channel in sorted order; hidden files and paired ``_label`` files skip."""
    from clinical_ner.model.readers import label_path_for

    files = sorted(
        p
        for p in channel_dir.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(channel_dir).parts)
    )
    partners = {label_path_for(p) for p in files if "_sent" in p.name}
    return [p for p in files if p not in partners]


@dataclass(frozen=True)
class JobPaths:
    root: Path

    @property
    def hyperparameters(self) -> Path:
        return self.root / "input" / "config" / "hyperparameters.json"

    def channel(self, name: str) -> Path:
        return self.root / "input" / "data" / name

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def failure(self) -> Path:
        return self.root / "output" / "failure"


def _read_channel(
    paths: JobPaths, name: str, hp: Hyperparameters, label_map: dict[str, str]
) -> tuple[list, dict[str, object], dict[str, str]] | None:
    from clinical_ner.model.readers import read_annotations
    from clinical_ner.model.training import file_sha256

    directory = paths.channel(name)
    if not directory.is_dir():
        return None
    files = channel_files(directory)
    if not files:
        raise TrainJobError(f"channel {name!r} has no data files")
    docs, report = read_annotations(files, hp.fmt, label_map)
    if not docs:
        raise TrainJobError(f"channel {name!r} has no annotated documents")
    hashes = {str(f.relative_to(paths.root)): file_sha256(f) for f in files}
    log.info("channel %s: %s", name, json.dumps(report.as_dict()))
    return docs, report.as_dict(), hashes


def _read_validated_eval(
    paths: JobPaths, hp: Hyperparameters, label_map: dict[str, str]
) -> tuple[list, dict[str, object], dict[str, str]] | None:
    """The validated evaluation set's docs, report and file hashes; None when absent or empty.

    Unlike the data channels, an empty channel is normal: no note has been reviewed yet.
    """
    directory = paths.channel(VALIDATED_EVAL_CHANNEL)
    if not directory.is_dir() or not channel_files(directory):
        return None
    try:
        return _read_channel(paths, VALIDATED_EVAL_CHANNEL, hp, label_map)
    except TrainJobError:
        log.info("channel %s: no annotated documents; the rule is not applied", "validated_eval")
        return None


def _find_model_dir(directory: Path) -> Path | None:
    """`directory` itself or its only visible subdirectory, whichever holds ``config.cfg``."""
    if (directory / "config.cfg").is_file():
        return directory
    subdirs = [p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(subdirs) == 1 and (subdirs[0] / "config.cfg").is_file():
        return subdirs[0]
    return None


def _check_archive_members(members: list[tarfile.TarInfo], what: str) -> None:
    """Reject what a model archive never holds; members are named by number, never by name."""
    if len(members) > PRODUCTION_ARCHIVE_MAX_MEMBERS:
        raise TrainJobError(f"{what} has more than {PRODUCTION_ARCHIVE_MAX_MEMBERS} members")
    total = 0
    for number, member in enumerate(members, start=1):
        if member.issym() or member.islnk():
            raise TrainJobError(f"{what}: member {number} is a link; links are rejected")
        if not (member.isfile() or member.isdir()):
            raise TrainJobError(f"{what}: member {number} is not a regular file or directory")
        name = PurePosixPath(member.name)
        if name.is_absolute() or ".." in name.parts:
            raise TrainJobError(
                f"{what}: member {number} has an absolute or '..' path; rejected as unsafe"
            )
        total += member.size
        if total > PRODUCTION_ARCHIVE_MAX_BYTES:
            raise TrainJobError(
                f"{what} unpacks to more than {PRODUCTION_ARCHIVE_MAX_BYTES} bytes; rejected"
            )


def _extract_archive(archive: Path, dest: Path) -> None:
    what = f"production model archive {archive.name}"
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            # tarfile stops quietly at the first garbled header after the first member, so a
            # corrupt archive could pass as a shorter one: read the gzip stream to its end,
            # which checks its CRC and length.
            while tar.fileobj is not None and tar.fileobj.read(1 << 20):
                pass
            _check_archive_members(members, what)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise TrainJobError(
            f"{what} could not be read or extracted ({type(exc).__name__}); expected the "
            "model.tar.gz of a previous training job"
        ) from None


def _production_model_dir(paths: JobPaths, workdir: Path) -> Path | None:
    """The production model's directory (extracted into `workdir` if it is an archive)."""
    channel = paths.channel(PRODUCTION_CHANNEL)
    if not channel.exists():
        return None
    if not channel.is_dir():
        raise TrainJobError(f"channel {PRODUCTION_CHANNEL!r} is not a directory")
    model_dir = _find_model_dir(channel)
    if model_dir is not None:
        return model_dir
    archives = sorted(
        p
        for p in channel.iterdir()
        if p.is_file() and p.name.endswith(".tar.gz") and not p.name.startswith(".")
    )
    if len(archives) != 1:
        raise TrainJobError(
            f"channel {PRODUCTION_CHANNEL!r} holds {len(archives)} *.tar.gz files and no model "
            "directory; expected exactly one model.tar.gz (the production model package's "
            "artifact) or a model directory with config.cfg"
        )
    _extract_archive(archives[0], workdir)
    model_dir = _find_model_dir(workdir)
    if model_dir is None:
        raise TrainJobError(
            f"production model archive {archives[0].name} holds no spaCy model (no config.cfg)"
        )
    return model_dir


def _load_production_model(model_dir: Path) -> NerModel:
    from clinical_ner.model.contracts import ContractError, read_model_card_file
    from clinical_ner.model.inference import MODEL_CARD_FILE, NerModel

    try:
        card = read_model_card_file(model_dir / MODEL_CARD_FILE)
    except FileNotFoundError:
        raise TrainJobError(
            f"production model has no {MODEL_CARD_FILE} (its model_version is what the gate "
            "matches)"
        ) from None
    except ContractError as exc:  # names the file and the reason (not JSON, newer schema...)
        raise TrainJobError(f"production model's {MODEL_CARD_FILE} is unreadable: {exc}") from None
    version = card.get("model_version")
    if not isinstance(version, str) or not version.strip():
        raise TrainJobError(f"production model's {MODEL_CARD_FILE} has no model_version")
    try:
        model = NerModel.load(model_dir, enrich=False)  # evaluated on spans and labels only
    except Exception as exc:  # spaCy raises many types; their messages are not needed
        raise TrainJobError(
            f"production model could not be loaded as a spaCy NER model ({type(exc).__name__})"
        ) from None
    if not model.labels:
        raise TrainJobError("production model has no NER labels")
    return model


def production_baseline(
    paths: JobPaths,
    dev_docs: Sequence[AnnotatedDoc],
    test: tuple[Sequence[AnnotatedDoc], dict[str, object]] | None,
    batch_size: int,
    validated: Sequence[AnnotatedDoc] | None = None,
) -> dict[str, object] | None:
    """The production model's scores on the candidate's dev (and test) docs, if it is given.

    `test` is (docs, data report) of the test channel; `validated` the validated evaluation
    set's docs (scored into ``validated_eval``). Returns None without a production channel;
    an unusable one raises `TrainJobError`.
    """
    from clinical_ner.model.scoring import evaluate_docs

    with tempfile.TemporaryDirectory(prefix="clinical-ner-production-") as tmp:
        model_dir = _production_model_dir(paths, Path(tmp))
        if model_dir is None:
            return None
        model = _load_production_model(model_dir)
        try:
            baseline: dict[str, object] = {
                "model_version": model.version,
                "dev": evaluate_docs(model, dev_docs, batch_size=batch_size),
            }
            if test is not None:
                test_docs, test_report = test
                scores = evaluate_docs(model, test_docs, batch_size=batch_size)
                baseline["test"] = {**scores, "data_report": test_report}
            if validated:
                scores = evaluate_docs(model, validated, batch_size=batch_size)
                baseline[VALIDATED_EVAL_CHANNEL] = {**scores, "docs": len(validated)}
        except Exception as exc:
            frames = traceback.extract_tb(exc.__traceback__)
            log.error("traceback:\n%s", "".join(traceback.format_list(frames)))
            raise TrainJobError(
                f"scoring the production model on the candidate's data failed: "
                f"{failure_reason(exc)}"
            ) from None
    scored = {k: v for k, v in baseline.items() if isinstance(v, dict)}
    log.info(
        "production baseline: model %s (labels %s) F1 %s",
        model.version,
        ",".join(model.labels),
        ", ".join(f"{split} {scores['ents_f']:.4f}" for split, scores in scored.items()),
    )
    return baseline


def run(root: Path) -> dict[str, object]:
    """Train from the channels under `root` and fill `root/model`; return metrics."""
    from clinical_ner.model import drift
    from clinical_ner.model.contracts import METRICS_FILE, write_metrics
    from clinical_ner.model.dictionaries import public_lexicon
    from clinical_ner.model.inference import NerModel
    from clinical_ner.model.readers import parse_label_map
    from clinical_ner.model.scoring import evaluate_docs
    from clinical_ner.model.training import TrainingInputs, split_by_hash, train_model
    from clinical_ner.pipeline.tracking import log_training_run, run_record

    started = time.perf_counter()
    paths = JobPaths(root)
    raw_hp: dict[str, object] = {}
    if paths.hyperparameters.is_file():
        try:
            raw_hp = json.loads(paths.hyperparameters.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TrainJobError(f"hyperparameters.json is not valid JSON ({exc.msg})") from None
    hp = parse_hyperparameters(raw_hp)
    label_map = parse_label_map(hp.labels)
    log.info("hyperparameters: %s", json.dumps(hp.as_params(), default=str))

    train = _read_channel(paths, "train", hp, label_map)
    if train is None:
        raise TrainJobError(f"required channel 'train' not found at {paths.channel('train')}")
    train_docs, train_report, data_files = train
    dev = _read_channel(paths, "dev", hp, label_map)
    if dev is None:
        train_docs, dev_docs = split_by_hash(train_docs, hp.dev_fraction)
        dev_report: dict[str, object] = {"split_of_train": hp.dev_fraction, "docs": len(dev_docs)}
        if not dev_docs or not train_docs:
            raise TrainJobError(
                "no dev channel and the hash split left train or dev empty; add a dev channel "
                "or more training data"
            )
    else:
        dev_docs, dev_report, dev_files = dev
        data_files = {**data_files, **dev_files}
    test = _read_channel(paths, "test", hp, label_map)
    validated = _read_validated_eval(paths, hp, label_map)
    # Before training: an unusable production channel fails the job without a wasted run.
    baseline = production_baseline(
        paths,
        dev_docs,
        None if test is None else (test[0], test[1]),
        hp.batch_size,
        None if validated is None else validated[0],
    )

    inputs = TrainingInputs(
        train_docs=train_docs,
        dev_docs=dev_docs,
        data_files=data_files,
        data_reports={"train": train_report, "dev": dev_report},
        dev_is_split_of_train=dev is None,
        label_map=label_map,
    )
    paths.model.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="clinical-ner-model-") as tmp:
        staged = Path(tmp) / "model"
        metrics = train_model(
            inputs,
            staged,
            seed=hp.seed,
            overrides=hp.overrides,
            batch_size=hp.batch_size,
            log=lambda line: log.info("%s", line),
        )
        model = NerModel.load(staged, enrich=False)  # evaluated on spans and labels only
        if test is not None:
            test_docs, test_report, test_files = test
            test_scores = evaluate_docs(model, test_docs, batch_size=hp.batch_size)
            test_scores["data_report"] = test_report
            metrics["test"] = test_scores
            metrics["training_data"] = {**data_files, **test_files}
        if validated is not None:
            v_docs, v_report, v_files = validated
            v_scores = evaluate_docs(model, v_docs, batch_size=hp.batch_size)
            metrics[VALIDATED_EVAL_CHANNEL] = {
                **v_scores,
                "docs": len(v_docs),
                "data_report": v_report,
                "files": v_files,
            }
        texts = [d.text for d in train_docs]
        predictions = list(model.predict(texts, batch_size=hp.batch_size))
        profile = drift.build_profile(
            texts,
            predictions,
            labels=model.labels,
            model_version=model.version,
            lexicon=public_lexicon(model.nlp),  # no word only the training notes contain
        )
        drift.save_profile(profile, staged / drift.BASELINE_FILE)
        metrics["drift_baseline"] = {
            "file": drift.BASELINE_FILE,
            "notes": profile["notes"],
            "vocabulary_size": profile["vocabulary"]["size"],
            "oov_rate_held_out": profile["oov"]["rate"],
        }
        metrics["hyperparameters"] = hp.as_params()
        if baseline is not None:
            metrics["production_baseline"] = baseline
        _replace_contents(paths.model, staged)

    dev_scores = metrics["dev"]
    assert isinstance(dev_scores, dict)
    summary = {
        "dev_f1": dev_scores["ents_f"],
        "dev_precision": dev_scores["ents_p"],
        "dev_recall": dev_scores["ents_r"],
    }
    for label, scores in dev_scores["per_label"].items():
        summary[f"dev_f1_{label}"] = scores["f"]
    summary.update(min_label_f1("dev", dev_scores["per_label"]))
    if test is not None:
        test_scores = metrics["test"]
        assert isinstance(test_scores, dict)
        summary.update(
            test_f1=test_scores["ents_f"],
            test_precision=test_scores["ents_p"],
            test_recall=test_scores["ents_r"],
        )
        for label, scores in test_scores["per_label"].items():
            summary[f"test_f1_{label}"] = scores["f"]
        summary.update(min_label_f1("test", test_scores["per_label"]))
    if validated is not None:
        summary["validated_eval_f1"] = metrics[VALIDATED_EVAL_CHANNEL]["ents_f"]  # type: ignore[index]
    if baseline is not None:
        for split in ("dev", "test", VALIDATED_EVAL_CHANNEL):
            if split in baseline:
                summary[f"production_{split}_f1"] = baseline[split]["ents_f"]  # type: ignore[index]
    total_seconds = time.perf_counter() - started
    summary["job_seconds"] = round(total_seconds, 1)

    metrics["summary"] = summary
    extra_tags = {"entry_point": "clinical_ner.runtime.sagemaker_train"}
    if os.environ.get("TRAINING_JOB_ARN"):
        extra_tags["sagemaker.training_job_arn"] = os.environ["TRAINING_JOB_ARN"]
    record = run_record(
        metrics,
        job_name=os.environ.get("TRAINING_JOB_NAME", ""),
        artifact_uri=os.environ.get("MODEL_ARTIFACT_URI") or paths.model.resolve().as_uri(),
        extra_tags=extra_tags,
    )
    metrics["tracking"] = log_training_run(
        params=record.params,
        metrics=record.metrics,
        tags=record.tags,
        run_name=record.run_name,
        documents={METRICS_FILE: metrics},
    )
    write_metrics(metrics, paths.model / METRICS_FILE)  # already stamped by train_model
    for name, value in summary.items():
        print(f"METRIC {name}={value}", flush=True)
    return metrics


def min_label_f1(split: str, per_label: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``{"<split>_min_label_f1": worst per-label F1}`` ({} without labels).

    The per-label ``<split>_f1_<LABEL>`` names depend on the model's labels; this one does not,
    so a training job's fixed MetricDefinitions can still follow the weakest label.
    """
    scores = [float(s["f"]) for s in per_label.values()]
    return {f"{split}_min_label_f1": min(scores)} if scores else {}


def write_model_archive(model_dir: Path, fileobj: BinaryIO) -> None:
    """Pack `model_dir` as the ``model.tar.gz`` SageMaker uploads (members at the top level).

    SageMaker tars ``/opt/ml/model`` itself; local mode and tests use this to get the same
    archive. It holds exactly the model directory, which carries no training text (see
    `clinical_ner.model.training.strip_training_strings`).
    """
    with tarfile.open(fileobj=fileobj, mode="w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=path.name)


def _replace_contents(target: Path, source: Path) -> None:
    """Make `target` hold exactly `source`'s files, keeping `target` itself (a mount point)."""
    for child in target.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    shutil.copytree(source, target, dirs_exist_ok=True)


def failure_reason(exc: BaseException) -> str:
    """A reason safe to write to ``output/failure`` and the log: never an unvetted message."""
    from confection import ConfigValidationError

    from clinical_ner.model.readers import AnnotationFormatError

    if isinstance(exc, TrainJobError | AnnotationFormatError):
        return str(exc)
    if isinstance(exc, ConfigValidationError):  # names config keys and hyperparameter values
        return f"invalid spaCy config override: {str(exc)[:800]}"
    if isinstance(exc, FileNotFoundError):
        return f"file not found: {exc.filename}"
    frames = traceback.extract_tb(exc.__traceback__)
    where = ""
    if frames:
        last = frames[-1]
        where = f" at {Path(last.filename).name}:{last.lineno} in {last.name}"
    return f"internal error: {type(exc).__name__}{where} (message withheld: it may quote data)"


def write_failure(paths: JobPaths, reason: str) -> None:
    paths.failure.parent.mkdir(parents=True, exist_ok=True)
    paths.failure.write_text(reason[:FAILURE_REASON_MAX] + "\n", encoding="utf-8")


def resolve_root(cli_root: str | None) -> Path:
    return Path(cli_root or os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="train", description="SageMaker training entry point for the clinical NER model"
    )
    parser.add_argument(
        "--root", default=None, help=f"job root (default: ${ROOT_ENV} or {DEFAULT_ROOT})"
    )
    # SageMaker runs the image as `<image> train`: tolerate that word as the first argument.
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != "train"]
    if extra:
        parser.error(f"unexpected arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    os.environ.setdefault("ANSI_COLORS_DISABLED", "1")  # plain spaCy tables in CloudWatch
    logging.getLogger("spacy").propagate = False  # spaCy logs through its own handler
    paths = JobPaths(resolve_root(args.root))
    from clinical_ner.model.training import sigterm_as_exit

    try:
        # StopTrainingJob sends SIGTERM: unwind so temp directories are removed.
        with sigterm_as_exit():
            metrics = run(paths.root)
    except Exception as exc:
        reason = failure_reason(exc)
        if not isinstance(exc, TrainJobError):
            # Frames (file, line, function) only: exception messages and locals stay out.
            frames = traceback.extract_tb(exc.__traceback__)
            log.error("traceback:\n%s", "".join(traceback.format_list(frames)))
        log.error("training failed: %s", reason)
        write_failure(paths, reason)
        return 1
    log.info("model %s written to %s", metrics["model_version"], paths.model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
