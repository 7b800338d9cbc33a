"""Typed, versioned contracts: metrics.json, the model card, drift profiles; one reader/writer each.

Three JSON documents travel between the training job, the model registry, the extraction
pipeline and the drift monitor:

- ``metrics.json`` (`Metrics`): written into the model directory by training (and completed
  by the SageMaker job), read by the registry, the gate, publishing and the local report.
- ``clinical_ner.json``, the model card (`ModelCard`): version, labels, calibration map.
- Drift profiles (`DriftProfile`): the training baseline (``drift_baseline.json`` in the model
  artifact), the production references stored under ``monitoring/reference/`` and the window
  profiles the monitor builds (`clinical_ner.model.drift`).

Each has a ``schema_version``. The one reader of each (`read_metrics`, `read_model_card`,
`read_profile`, and their ``*_file`` forms) upgrades an older document step by step through
explicit migration functions (``_METRICS_MIGRATIONS`` etc.: version n -> n + 1), so a stored
baseline or a model trained before a schema change still loads; a document from a *newer*
version than this code knows is refused with an error saying so (never guessed at). The one
writer of each (`write_metrics`, `write_model_card`, `dump_profile`/`save_profile`) stamps the
current version. Documents written before versioning (metrics.json and the model card had no
``schema_version``) are version 0.

Errors (`ContractError` and its subclasses) name the document and the reason, never its
content: a profile holds vocabulary words and a malformed file could hold anything.

This module imports only the standard library: the Lambda functions that read metrics.json
(registry, gate) load it without spaCy or NumPy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict, cast

METRICS_FILE = "metrics.json"
MODEL_CARD_FILE = "clinical_ner.json"
BASELINE_FILE = "drift_baseline.json"

METRICS_SCHEMA_VERSION = 1
MODEL_CARD_SCHEMA_VERSION = 1
PROFILE_SCHEMA_VERSION = 2
PROFILE_KIND_BASELINE = "baseline"
PROFILE_KIND_WINDOW = "window"
# The token rule of `clinical_ner.model.tokenization.TOKEN_PATTERN` when profile schema 1 was
# current: every v1 profile counted tokens and words with it (the v1 -> v2 migration says so).
V1_TOKEN_RULE = r"\w+|[^\w\s]"


class ContractError(ValueError):
    """A contract document is malformed, or of a schema version this code cannot read."""


class MetricsError(ContractError):
    """metrics.json is malformed or of an unknown schema version."""


class ModelCardError(ContractError):
    """The model card is malformed or of an unknown schema version."""


class ProfileError(ContractError):
    """A profile is malformed or does not match the baseline it is compared with."""


# --------------------------------------------------------------------------- the documents

Scores = dict[str, Any]  # `clinical_ner.model.scoring.evaluate_docs`: ents_p/r/f, per_label, ...


class CalibrationMap(TypedDict):
    x: list[float]
    y: list[float]


class ModelCard(TypedDict, total=False):
    """``clinical_ner.json``: what a loaded model needs besides the spaCy pipeline."""

    schema_version: int
    model_version: str
    labels: list[str]
    calibration: CalibrationMap
    created_at: str
    package_version: str
    spacy_version: str
    seed: int
    training_data: dict[str, str]  # file name -> sha256


class DriftBaselineInfo(TypedDict):
    file: str
    notes: int
    vocabulary_size: int
    oov_rate_held_out: float | None


class Metrics(TypedDict, total=False):
    """``metrics.json``. Training writes the first block; the SageMaker job adds the rest.

    Only ``schema_version`` is guaranteed by the reader: consumers check the keys they need
    (the gate's `GateInputError`, `clinical_ner.data.publish.model_labels`) and turn a missing
    one into their own clear error, as a malformed candidate must fail the gate, not crash it.
    """

    schema_version: int
    model_version: str
    labels: list[str]
    dev: Scores
    dev_source: str
    calibration: dict[str, Any]
    training_seconds: float
    seed: int
    train_docs: int
    dev_docs: int
    train_entities_realigned_to_tokens: int
    training_data: dict[str, str]
    data_reports: dict[str, Any]
    label_map: dict[str, str] | None
    config_sha256: str
    effective_config_sha256: str
    config_overrides: dict[str, Any]
    init_tok2vec: dict[str, str] | None
    # added by the SageMaker training job (`clinical_ner.runtime.sagemaker_train.run`)
    test: Scores
    drift_baseline: DriftBaselineInfo
    hyperparameters: dict[str, Any]
    production_baseline: dict[str, Any]  # may hold "validated_eval" (production's scores)
    # the candidate's scores on the validated evaluation set (reviewed notes never trained on):
    # Scores + "docs" + "files"; optional, so metrics without it need no migration
    validated_eval: dict[str, Any]
    summary: dict[str, float]
    tracking: dict[str, Any]


class NoteLengthStats(TypedDict):
    unit: str
    edges: list[float]  # inner bin edges
    counts: list[int]
    mean: float
    p50: float
    p95: float


class Vocabulary(TypedDict):
    """Baseline: the frequent public words (``tokens`` ...). Window: ``reference_id`` only."""

    tokens: NotRequired[list[str]]
    size: NotRequired[int]
    max_size: NotRequired[int]
    min_doc_freq: NotRequired[int]
    built_from_notes: NotRequired[int]
    eligible_tokens: NotRequired[int]
    lexicon_words: NotRequired[int | None]
    reference_id: NotRequired[str]  # window: the baseline it was built against


class OovStats(TypedDict):
    word_tokens: int
    oov_tokens: int
    rate: float | None
    measured_on: NotRequired[str]  # baseline: "held-out half"


class Histogram(TypedDict):
    edges: list[float]
    counts: list[int]


class EntityStats(TypedDict):
    total: int
    counts: dict[str, int]
    per_100_tokens: dict[str, float]
    label_mix: dict[str, float | None]
    confidence: Histogram
    notes_without_entity: int
    no_entity_share: float
    negated: int
    negated_share: float | None


class DriftProfile(TypedDict):
    """A drift profile (`clinical_ner.model.drift` documents each field)."""

    schema_version: int
    kind: Literal["baseline", "window"]
    created_at: str
    model_version: str | None
    token_rule: str  # v2: the regular expression that made the tokens and words counted
    notes: int
    tokens: int
    labels: list[str]
    note_length: NoteLengthStats
    vocabulary: Vocabulary
    oov: OovStats
    entities: EntityStats
    reference_id: NotRequired[str]  # baseline: its own fingerprint


# --------------------------------------------------------------------------- versions

Migration = Callable[[dict[str, Any]], dict[str, Any]]


def _metrics_v0_to_v1(doc: dict[str, Any]) -> dict[str, Any]:
    # Before versioning: same fields, no schema_version.
    return {**doc, "schema_version": 1}


def _card_v0_to_v1(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "schema_version": 1}


def _profile_v1_to_v2(doc: dict[str, Any]) -> dict[str, Any]:
    # v2 records the token rule; every v1 profile was counted with the one rule of its time.
    # The reference_id fingerprint does not include it, so a migrated baseline keeps its id.
    return {**doc, "schema_version": 2, "token_rule": V1_TOKEN_RULE}


# version n -> the function that turns a version-n document into version n + 1
_METRICS_MIGRATIONS: dict[int, Migration] = {0: _metrics_v0_to_v1}
_CARD_MIGRATIONS: dict[int, Migration] = {0: _card_v0_to_v1}
_PROFILE_MIGRATIONS: dict[int, Migration] = {1: _profile_v1_to_v2}


def upgrade(
    doc: object,
    *,
    what: str,
    current: int,
    migrations: Mapping[int, Migration],
    error: type[ContractError],
    unversioned: int | None,
) -> dict[str, Any]:
    """`doc` at schema `current`, migrated step by step; `error` when it cannot be.

    `unversioned` is the version of a document without ``schema_version`` (None: required).
    A current document is returned as is (not copied); migrations never modify their input.
    """
    if not isinstance(doc, dict):
        raise error(f"{what} is not a JSON object")
    if "schema_version" not in doc:
        if unversioned is None:
            raise error(f"{what} lacks schema_version")
        version: object = unversioned
    else:
        version = doc["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise error(f"{what}: schema_version is not an integer")
    if version > current:
        raise error(
            f"{what} has schema_version {version}, newer than this code reads ({current}); "
            "read it with a newer clinical-ner"
        )
    while version < current:
        step = migrations.get(version)
        if step is None:
            raise error(f"{what} has schema_version {version}; no migration to {current} exists")
        doc = step(doc)
        version += 1
        if doc.get("schema_version") != version:  # a migration must stamp its result
            raise AssertionError(f"migration of {what} to {version} did not set schema_version")
    return doc


def _parse_json(raw: bytes | str, what: str, error: type[ContractError]) -> object:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise error(f"{what} is not valid JSON") from None


def _read_bytes(path: Path, what: str, error: type[ContractError]) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise error(f"{what} is unreadable ({type(exc).__name__})") from None


def _stamped(doc: Mapping[str, Any], version: int) -> dict[str, Any]:
    """A copy of `doc` with ``schema_version`` = `version` as its first key."""
    return {"schema_version": version, **{k: v for k, v in doc.items() if k != "schema_version"}}


def _dump(doc: Mapping[str, Any], **kwargs: Any) -> str:
    return json.dumps(doc, **kwargs) + "\n"


# --------------------------------------------------------------------------- metrics.json


def read_metrics(doc: object, where: str = METRICS_FILE) -> Metrics:
    """The one reader of metrics.json: a parsed JSON value (or its bytes/text), migrated."""
    if isinstance(doc, bytes | str):
        doc = _parse_json(doc, where, MetricsError)
    upgraded = upgrade(
        doc,
        what=where,
        current=METRICS_SCHEMA_VERSION,
        migrations=_METRICS_MIGRATIONS,
        error=MetricsError,
        unversioned=0,
    )
    return cast(Metrics, upgraded)


def read_metrics_file(path: Path | str) -> Metrics:
    """metrics.json of a model directory (FileNotFoundError when it has none)."""
    path = Path(path)
    return read_metrics(_read_bytes(path, str(path), MetricsError), str(path))


def dump_metrics(metrics: Metrics | Mapping[str, Any]) -> str:
    """The one serialisation of metrics.json (model directory, and the registry's S3 copy)."""
    return _dump(_stamped(metrics, METRICS_SCHEMA_VERSION), indent=2)


def write_metrics(metrics: Metrics | Mapping[str, Any], path: Path | str) -> Metrics:
    """The one writer of metrics.json: stamps the current schema version; returns the document."""
    doc = cast(Metrics, _stamped(metrics, METRICS_SCHEMA_VERSION))
    Path(path).write_text(dump_metrics(doc))
    return doc


# --------------------------------------------------------------------------- model card


def read_model_card(doc: object, where: str = MODEL_CARD_FILE) -> ModelCard:
    """The one reader of the model card (parsed JSON value or bytes/text), migrated.

    Like `read_metrics` it guarantees the object and its version; readers check the fields
    they rely on (`NerModel.load` falls back when there is no calibration, the SageMaker job
    and `model_metadata_problem` refuse a card without ``model_version``).
    """
    if isinstance(doc, bytes | str):
        doc = _parse_json(doc, where, ModelCardError)
    card = upgrade(
        doc,
        what=where,
        current=MODEL_CARD_SCHEMA_VERSION,
        migrations=_CARD_MIGRATIONS,
        error=ModelCardError,
        unversioned=0,
    )
    return cast(ModelCard, card)


def read_model_card_file(path: Path | str) -> ModelCard:
    """The card of a model directory or card path (FileNotFoundError when there is none)."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_CARD_FILE
    return read_model_card(_read_bytes(path, str(path), ModelCardError), str(path))


def write_model_card(card: ModelCard | Mapping[str, Any], path: Path | str) -> ModelCard:
    """The one writer of the model card: stamps the current schema version."""
    doc = cast(ModelCard, _stamped(card, MODEL_CARD_SCHEMA_VERSION))
    Path(path).write_text(_dump(doc, indent=2))
    return doc


# --------------------------------------------------------------------------- drift profiles

_PROFILE_REQUIRED = (
    "schema_version",
    "kind",
    "token_rule",
    "notes",
    "tokens",
    "labels",
    "note_length",
    "oov",
    "entities",
    "vocabulary",
)


def validate_profile(profile: object, where: str = "profile") -> DriftProfile:
    """`profile` as a current-version `DriftProfile`, or `ProfileError` (no migration here)."""
    if not isinstance(profile, Mapping):
        raise ProfileError(f"{where}: a profile is a JSON object")
    missing = [k for k in _PROFILE_REQUIRED if k not in profile]
    if missing:
        raise ProfileError(f"{where} lacks {', '.join(missing)}")
    if profile["schema_version"] != PROFILE_SCHEMA_VERSION:
        raise ProfileError(
            f"{where}: profile schema_version is not {PROFILE_SCHEMA_VERSION} "
            "(read stored profiles with read_profile, which migrates them)"
        )
    if profile["kind"] not in (PROFILE_KIND_BASELINE, PROFILE_KIND_WINDOW):
        raise ProfileError(f"{where}: unknown profile kind")
    vocabulary = profile["vocabulary"]
    if not isinstance(vocabulary, Mapping):
        raise ProfileError(f"{where}: vocabulary is not an object")
    if profile["kind"] == PROFILE_KIND_BASELINE and "tokens" not in vocabulary:
        raise ProfileError(f"{where}: baseline profile lacks its vocabulary")
    if profile["kind"] == PROFILE_KIND_WINDOW and "reference_id" not in vocabulary:
        raise ProfileError(f"{where}: window profile lacks its reference_id")
    for key in ("note_length", "oov", "entities"):
        if not isinstance(profile[key], Mapping):
            raise ProfileError(f"{where}: {key} is not an object")
    return cast(DriftProfile, profile)


def read_profile(doc: object, where: str = "profile") -> DriftProfile:
    """The one reader of drift profiles (parsed JSON value or bytes/text): migrated, validated."""
    if isinstance(doc, bytes | str):
        doc = _parse_json(doc, where, ProfileError)
    upgraded = upgrade(
        doc,
        what=where,
        current=PROFILE_SCHEMA_VERSION,
        migrations=_PROFILE_MIGRATIONS,
        error=ProfileError,
        unversioned=None,
    )
    return validate_profile(upgraded, where)


def load_profile(path: Path | str) -> DriftProfile:
    """A profile file (e.g. ``drift_baseline.json``), migrated to the current schema."""
    path = Path(path)
    return read_profile(_read_bytes(path, str(path), ProfileError), str(path))


def dump_profile(profile: DriftProfile | Mapping[str, Any]) -> str:
    """The one writer of drift profiles: the JSON text of a current-version profile."""
    return _dump(validate_profile(profile), indent=1, sort_keys=True, allow_nan=False)


def save_profile(profile: DriftProfile | Mapping[str, Any], path: Path | str) -> Path:
    path = Path(path)
    path.write_text(dump_profile(profile))
    return path
