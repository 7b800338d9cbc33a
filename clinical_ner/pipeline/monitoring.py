"""Drift decisions, the CloudWatch metrics the monitor publishes, and the JSON drift report.

`clinical_ner.model.drift` profiles windows and turns a (reference, window) pair into raw statistics
(`drift.compare`). This module decides what they mean, with the stage's thresholds
(`pipeline.stage_config.DriftThresholds`), and is what the ``drift_monitor`` Lambda, the
local runner and the tests call. docs/monitoring.md explains the choices; in short:

Reference. The model artifact's ``drift_baseline.json`` profiles the *training texts*, which
are annotated sentences or abstracts, while production windows are whole clinical notes. Note
length, the share of notes without an entity and (less) entity density depend on that unit, so
comparing a note window with a sentence baseline reports "drift" on day one. The monitor
therefore compares each window with a **production reference**: a baseline-kind profile
(`drift.build_profile` without ``reference=``: own length quantiles, own vocabulary, held-out
OOV) built from the first production window of a model version that has at least
``reference_min_notes`` notes, stored under ``monitoring/reference/<model_version>.json`` (an
operator may pin one there instead). The training baseline is still used, for the
unit-independent signals only (OOV rate, label mix, confidence, entity density per 100
tokens), as an informational ``training_gap`` section of the report: how far production text
is from what the model was trained on.

Signals (one `SignalSpec` each in `SIGNALS`: its extractor computes it from the reference and
window profiles with `drift`'s statistics, its threshold fields band it; one CloudWatch
metric each), grouped in three classes:

=================  ====================  =========================================  ==========
class              signal                value                                      bands
=================  ====================  =========================================  ==========
input              note_length_psi       PSI of note length, minus sampling noise   PSI
input              oov_rate_increase     window OOV rate minus reference OOV rate   oov
output             label_mix_psi         PSI of the label mix, minus noise          PSI
output             entity_density_change max over labels |relative change| of       density
                                         entities per 100 tokens
output             no_entity_share_change|window - reference| share of notes with    no_entity
                                         no entity
confidence         confidence_psi        PSI of the entity confidences, minus noise PSI
=================  ====================  =========================================  ==========

PSI noise: two samples of the same distribution over K bins have an expected PSI of about
``(K - 1) * (1/n + 1/m)`` (n, m = observations on each side; PSI is, to second order, the
chi-square divergence). With 50 notes and 10 length bins that is 0.19, above the usual 0.1
"moderate" line, so raw PSI would alarm on small windows of unchanged data. The decision (and
the published metric) uses ``max(0, PSI - (K - 1) * (1/n + 1/m))``; the raw PSI is in the report.

Levels: a signal is ``severe`` at or above its severe band, ``moderate`` at or above its
moderate band, else ``none``; an undefined signal (e.g. confidence PSI of a window with no
entity) is ``none`` and listed in ``undefined``. A class takes the worst level of its signals,
the window the worst class. Windows with fewer than ``min_window_notes`` notes are
``insufficient_data``: reported, never acted on. Action: none -> nothing, moderate -> retrain
(the moderate alarm starts the retraining Lambda), severe -> alert (e-mail; back to
experimentation, no automatic retraining).

PHI: reports and metrics hold counts, rates and model versions only; never note text or ids.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from clinical_ner.model import drift
from clinical_ner.model.contracts import DriftProfile
from clinical_ner.pipeline.stage_config import DriftThresholds

REPORT_SCHEMA_VERSION = 1
NAMESPACE = "ClinicalNER"
DIM_STAGE = "Stage"
DIM_MODEL_VERSION = "ModelVersion"
DIM_SIGNAL_CLASS = "SignalClass"
LEVEL_METRIC = "DriftLevel"
REFERENCE_DIR = "reference/"
REPORTS_DIR = "reports/"


class Level(StrEnum):
    NONE = "none"
    MODERATE = "moderate"
    SEVERE = "severe"


LEVEL_VALUE = {Level.NONE: 0, Level.MODERATE: 1, Level.SEVERE: 2}


class Decision(StrEnum):
    NONE = "none"
    MODERATE = "moderate"
    SEVERE = "severe"
    INSUFFICIENT_DATA = "insufficient_data"
    REFERENCE_ESTABLISHED = "reference_established"


ACTIONS = {
    Decision.NONE: "none",
    Decision.MODERATE: "retrain",
    Decision.SEVERE: "alert",
    Decision.INSUFFICIENT_DATA: "none",
    Decision.REFERENCE_ESTABLISHED: "none",
}


class SignalClass(StrEnum):
    INPUT = "input"
    OUTPUT = "output"
    CONFIDENCE = "confidence"


# (decision value, raw value) of a signal from a (reference, window) pair of profiles.
Extractor = Callable[[DriftProfile, DriftProfile], tuple[float | None, float | None]]


@dataclass(frozen=True)
class SignalSpec:
    """Everything about one drift signal: adding a signal is adding one entry to `SIGNALS`."""

    name: str  # key in the report
    metric: str  # CloudWatch metric name
    signal_class: SignalClass
    band: str  # key of its thresholds in the report's ``thresholds`` block
    threshold_fields: tuple[str, str]  # the DriftThresholds fields (moderate, severe)
    description: str
    extract: Extractor  # how the signal is computed from the two profiles
    unit_independent: bool  # comparable with the training baseline (sentences, not notes)

    def thresholds(self, t: DriftThresholds) -> tuple[float, float]:
        moderate, severe = self.threshold_fields
        return float(getattr(t, moderate)), float(getattr(t, severe))


def expected_psi_noise(bins: int, n: float, m: float) -> float:
    """Expected PSI of two samples (sizes n, m) of one distribution over `bins` bins."""
    if n <= 0 or m <= 0:
        return 0.0
    return (bins - 1) * (1.0 / n + 1.0 / m)


def psi_excess(value: float | None, bins: int, n: float, m: float) -> float | None:
    """PSI above its sampling noise, floored at 0; None when PSI is undefined."""
    if value is None:
        return None
    if math.isinf(value):
        return value
    return max(0.0, value - expected_psi_noise(bins, n, m))


def _max_abs(values: Iterable[float | None]) -> float | None:
    present = [abs(v) for v in values if v is not None]
    return max(present) if present else None


# The extractors: n = window, m = reference sample sizes (notes, or entities for the
# entity-level PSIs), as in `expected_psi_noise`.


def _note_length_psi(ref: DriftProfile, win: DriftProfile) -> tuple[float | None, float | None]:
    raw = drift.note_length_psi(ref, win)
    bins = len(win["note_length"]["counts"])
    return psi_excess(raw, bins, win["notes"], ref["notes"]), raw


def _oov_rate_increase(ref: DriftProfile, win: DriftProfile) -> tuple[float | None, float | None]:
    raw = drift.oov_rate_delta(ref, win)
    # Only an increase of unknown words is a risk; fewer unknown words is not drift.
    return (None if raw is None else max(0.0, raw)), raw


def _label_mix_psi(ref: DriftProfile, win: DriftProfile) -> tuple[float | None, float | None]:
    raw = drift.label_mix_psi(ref, win)
    bins = len(drift.profile_labels(ref, win))
    return psi_excess(raw, bins, win["entities"]["total"], ref["entities"]["total"]), raw


def _entity_density_change(
    ref: DriftProfile, win: DriftProfile
) -> tuple[float | None, float | None]:
    raw = _max_abs(drift.entity_density_rel_changes(ref, win).values())
    return raw, raw


def _no_entity_share_change(
    ref: DriftProfile, win: DriftProfile
) -> tuple[float | None, float | None]:
    raw = drift.no_entity_share_delta(ref, win)
    return (None if raw is None else abs(raw)), raw


def _confidence_psi(ref: DriftProfile, win: DriftProfile) -> tuple[float | None, float | None]:
    raw = drift.confidence_psi(ref, win)
    bins = len(win["entities"]["confidence"]["counts"])
    return psi_excess(raw, bins, win["entities"]["total"], ref["entities"]["total"]), raw


_PSI = ("moderate", "severe")

SIGNALS: tuple[SignalSpec, ...] = (
    SignalSpec(
        "note_length_psi",
        "NoteLengthPSI",
        SignalClass.INPUT,
        "psi",
        _PSI,
        "PSI of note length (characters) on the reference's decile bins, minus sampling noise",
        _note_length_psi,
        unit_independent=False,  # sentences are shorter than notes
    ),
    SignalSpec(
        "oov_rate_increase",
        "OOVRateIncrease",
        SignalClass.INPUT,
        "oov_increase",
        ("oov_increase_moderate", "oov_increase_severe"),
        "Out-of-vocabulary word rate of the window minus the reference's held-out OOV rate",
        _oov_rate_increase,
        unit_independent=True,
    ),
    SignalSpec(
        "label_mix_psi",
        "LabelMixPSI",
        SignalClass.OUTPUT,
        "psi",
        _PSI,
        "PSI of the share of each entity label, minus sampling noise",
        _label_mix_psi,
        unit_independent=True,
    ),
    SignalSpec(
        "entity_density_change",
        "EntityDensityChange",
        SignalClass.OUTPUT,
        "density_change",
        ("density_change_moderate", "density_change_severe"),
        "Largest absolute relative change of entities per 100 tokens over the labels",
        _entity_density_change,
        unit_independent=True,
    ),
    SignalSpec(
        "no_entity_share_change",
        "NoEntityShareChange",
        SignalClass.OUTPUT,
        "no_entity_share",
        ("no_entity_share_moderate", "no_entity_share_severe"),
        "Absolute change of the share of notes in which the model found no entity",
        _no_entity_share_change,
        unit_independent=False,  # a sentence has no entity far more often than a note
    ),
    SignalSpec(
        "confidence_psi",
        "ConfidencePSI",
        SignalClass.CONFIDENCE,
        "psi",
        _PSI,
        "PSI of entity confidences on 0.1-wide bins, minus sampling noise",
        _confidence_psi,
        unit_independent=True,
    ),
)
SIGNAL_BY_NAME = {s.name: s for s in SIGNALS}


def _check_specs() -> None:
    """Fail at import, not at the first alarm, if a spec names a missing threshold or repeats."""
    known = {f.name for f in fields(DriftThresholds)}
    for spec in SIGNALS:
        missing = [name for name in spec.threshold_fields if name not in known]
        if missing:
            raise TypeError(f"signal {spec.name} names unknown DriftThresholds fields {missing}")
    for attr in ("name", "metric"):
        values = [getattr(spec, attr) for spec in SIGNALS]
        if len(set(values)) != len(values):
            raise TypeError(f"two drift signals share a {attr}")
    bands: dict[str, tuple[str, str]] = {}
    for spec in SIGNALS:
        if bands.setdefault(spec.band, spec.threshold_fields) != spec.threshold_fields:
            raise TypeError(f"band {spec.band} names two different threshold pairs")


_check_specs()

# Signals that do not depend on the unit of text (sentence vs note): comparable with the
# training baseline, whose texts are annotated sentences.
UNIT_INDEPENDENT = tuple(s.name for s in SIGNALS if s.unit_independent)


def signal_values(
    reference: Mapping[str, Any],
    window: Mapping[str, Any],
    compared: Mapping[str, Any] | None = None,
) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """(decision values, raw values) of every signal, each from its spec's extractor.

    `compared` (a `drift.compare` result) is accepted for callers of the earlier signature
    and not needed: the extractors compute from the profiles with the same functions.
    """
    ref, win = drift.checked_pair(reference, window)
    values: dict[str, float | None] = {}
    raw: dict[str, float | None] = {}
    for spec in SIGNALS:
        values[spec.name], raw[spec.name] = spec.extract(ref, win)
    return values, raw


def level_of(value: float | None, moderate: float, severe: float) -> Level:
    if value is None:
        return Level.NONE
    if value >= severe:
        return Level.SEVERE
    if value >= moderate:
        return Level.MODERATE
    return Level.NONE


def _worst(levels: Iterable[Level]) -> Level:
    return max(levels, key=LEVEL_VALUE.__getitem__, default=Level.NONE)


def decide(
    values: Mapping[str, float | None],
    thresholds: DriftThresholds,
    *,
    window_notes: int,
) -> dict[str, Any]:
    """Per-signal, per-class and overall levels of signal `values` (see module doc)."""
    signals: dict[str, dict[str, Any]] = {}
    undefined: list[str] = []
    for spec in SIGNALS:
        moderate, severe = spec.thresholds(thresholds)
        value = values.get(spec.name)
        if value is None:
            undefined.append(spec.name)
        signals[spec.name] = {
            "class": spec.signal_class.value,
            "metric": spec.metric,
            "value": None if value is None else _round(value),
            "moderate": moderate,
            "severe": severe,
            "level": level_of(value, moderate, severe).value,
        }
    classes = {
        c.value: _worst(Level(s["level"]) for s in signals.values() if s["class"] == c.value).value
        for c in SignalClass
    }
    if window_notes < thresholds.min_window_notes:
        decision = Decision.INSUFFICIENT_DATA
    else:
        decision = Decision(_worst(Level(v) for v in classes.values()).value)
    return {
        "decision": decision.value,
        "action": ACTIONS[decision],
        "classes": classes,
        "signals": signals,
        "undefined": undefined,
    }


def _round(value: float) -> float:
    return value if math.isinf(value) else round(float(value), 6)


# --------------------------------------------------------------------------- the monitor run


@dataclass
class MonitorResult:
    report: dict[str, Any]
    new_reference: DriftProfile | None  # a production reference to store, if established


def window_id(texts_sha256: Iterable[str], model_version: str) -> str:
    """Deterministic id of a window: model version + the sorted note content hashes."""
    h = hashlib.sha256(f"model_version={model_version}\n".encode())
    for sha in sorted(texts_sha256):
        h.update(sha.encode() + b"\n")
    return h.hexdigest()[:16]


def run_monitor(
    texts: Sequence[str],
    entities: Sequence[Sequence[Any]],
    *,
    thresholds: DriftThresholds,
    model_version: str,
    reference: Mapping[str, Any] | None = None,
    training_baseline: Mapping[str, Any] | None = None,
    window: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> MonitorResult:
    """Profile a window (texts + the model's entities per note) and decide on drift.

    Without a `reference`, a window of at least ``thresholds.reference_min_notes`` notes
    becomes the production reference (returned in `new_reference`, decision
    ``reference_established``); a smaller one is ``insufficient_data``.
    """
    if len(texts) != len(entities):
        raise ValueError(f"{len(texts)} texts but {len(entities)} entity lists")
    if not texts:
        raise ValueError("cannot monitor an empty window")
    # Stored profiles of an older schema are migrated here, once (a newer one is refused).
    if reference is not None:
        reference = drift.read_profile(reference, "production reference")
    if training_baseline is not None:
        training_baseline = drift.read_profile(training_baseline, "training baseline")
    now = (now or datetime.now(UTC)).astimezone(UTC)
    created = now.isoformat(timespec="seconds")
    report: dict[str, Any] = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "kind": "drift_report",
        "created_at": created,
        "model_version": model_version,
        "window": {**(window or {}), "notes": len(texts)},
        "thresholds": _thresholds_dict(thresholds),
    }
    new_reference: DriftProfile | None = None
    if reference is None:
        report["window"]["entities"] = sum(len(e) for e in entities)
        if len(texts) >= thresholds.reference_min_notes:
            new_reference = drift.build_profile(
                texts, entities, model_version=model_version, created_at=created
            )
            decision = Decision.REFERENCE_ESTABLISHED
            report["reference"] = _reference_info(new_reference, "production_reference")
        else:
            decision = Decision.INSUFFICIENT_DATA
            report["reference"] = None
        report.update(
            decision=decision.value,
            action=ACTIONS[decision],
            classes={c.value: Level.NONE.value for c in SignalClass},
            signals={},
            undefined=[],
        )
    else:
        profile = drift.build_profile(
            texts, entities, reference=reference, model_version=model_version, created_at=created
        )
        compared = drift.compare(reference, profile)
        values, raw = signal_values(reference, profile)
        report["window"]["entities"] = profile["entities"]["total"]
        report["reference"] = _reference_info(reference, "production_reference")
        report.update(decide(values, thresholds, window_notes=len(texts)))
        for name, value in raw.items():
            report["signals"][name]["raw"] = None if value is None else _round(value)
        report["statistics"] = {k: _clean(v) for k, v in compared.items()}
    if training_baseline is not None:
        report["training_gap"] = training_gap(training_baseline, texts, entities)
    return MonitorResult(report, new_reference)


def training_gap(
    baseline: Mapping[str, Any], texts: Sequence[str], entities: Sequence[Sequence[Any]]
) -> dict[str, Any]:
    """Unit-independent signals of the window against the training baseline (informational)."""
    profile = drift.build_profile(texts, entities, reference=baseline)
    compared = drift.compare(baseline, profile)
    values, _raw = signal_values(baseline, profile)
    return {
        "reference": _reference_info(baseline, "training_baseline"),
        "signals": {
            name: None if (value := values[name]) is None else _round(value)
            for name in UNIT_INDEPENDENT
        },
        "oov_rate": _clean(compared["oov_rate"]),
        "oov_rate_baseline": _clean(compared["oov_rate_baseline"]),
    }


def _reference_info(profile: Mapping[str, Any], kind: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "reference_id": drift.reference_id(profile),
        "notes": profile["notes"],
        "entities": profile["entities"]["total"],
        "model_version": profile.get("model_version"),
        "created_at": profile.get("created_at"),
    }


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else _round(value)
    return value


def _thresholds_dict(t: DriftThresholds) -> dict[str, Any]:
    bands: dict[str, Any] = {}
    for spec in SIGNALS:
        moderate, severe = spec.threshold_fields
        bands[spec.band] = {"moderate": getattr(t, moderate), "severe": getattr(t, severe)}
    return {
        **bands,
        "min_window_notes": t.min_window_notes,
        "reference_min_notes": t.reference_min_notes,
    }


def report_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=1, sort_keys=True, allow_nan=False) + "\n"


# --------------------------------------------------------------------------- keys and metrics


def reference_key(monitoring_prefix: str, model_version: str) -> str:
    """Where the production reference of `model_version` lives in the lake."""
    return f"{monitoring_prefix}{REFERENCE_DIR}{_safe(model_version)}.json"


def report_key(monitoring_prefix: str, report: Mapping[str, Any]) -> str:
    """``monitoring/reports/dt=YYYY-MM-DD/<model_version>/<window_id>.json``."""
    dt = str(report["created_at"])[:10]
    wid = _safe(str(report["window"].get("id") or "window"))
    return f"{monitoring_prefix}{REPORTS_DIR}dt={dt}/{_safe(report['model_version'])}/{wid}.json"


def _safe(value: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in value)
    if not cleaned or cleaned.startswith("."):
        raise ValueError(f"unusable key component {value!r}")
    return cleaned


def _dimension_sets(stage: str, model_version: str) -> list[list[dict[str, str]]]:
    # Alarms need fixed dimensions, so every value is published per stage (alarmed) and per
    # stage + model version (dashboards, comparisons across versions).
    return [
        [{"Name": DIM_STAGE, "Value": stage}],
        [{"Name": DIM_STAGE, "Value": stage}, {"Name": DIM_MODEL_VERSION, "Value": model_version}],
    ]


def drift_metric_data(report: Mapping[str, Any], stage: str) -> list[dict[str, Any]]:
    """PutMetricData entries of a drift report (empty unless it has a decision to publish).

    Signals go out whenever they were computed; the per-class ``DriftLevel`` (0/1/2, what
    the alarms watch) only for windows large enough to judge.
    """
    model_version = str(report["model_version"])
    when = datetime.fromisoformat(str(report["created_at"]))
    data: list[dict[str, Any]] = []
    for dims in _dimension_sets(stage, model_version):
        for name, signal in report.get("signals", {}).items():
            value = signal.get("value")
            if value is None or not math.isfinite(value):
                continue
            data.append(_datum(SIGNAL_BY_NAME[name].metric, value, dims, when, "None"))
        data.append(_datum("WindowNotes", report["window"]["notes"], dims, when, "Count"))
        if report["decision"] in (Decision.NONE, Decision.MODERATE, Decision.SEVERE):
            for cls, level in report["classes"].items():
                data.append(
                    _datum(
                        LEVEL_METRIC,
                        LEVEL_VALUE[Level(level)],
                        [*dims, {"Name": DIM_SIGNAL_CLASS, "Value": cls}],
                        when,
                        "None",
                    )
                )
    return data


def pipeline_metric_data(
    stage: str, model_version: str | None, counts: Mapping[str, float], when: datetime
) -> list[dict[str, Any]]:
    """Volume metrics of a pipeline step (e.g. NotesIn, NotesQuarantined, EntitiesExtracted)."""
    dims_sets = (
        _dimension_sets(stage, model_version)
        if model_version
        else [[{"Name": DIM_STAGE, "Value": stage}]]
    )
    unit = {"QuarantineRate": "None"}
    return [
        _datum(name, value, dims, when, unit.get(name, "Count"))
        for dims in dims_sets
        for name, value in counts.items()
    ]


# Review KPIs (docs/review.md, "KPIs") -> CloudWatch metric name and unit.
REVIEW_METRICS = {
    "notes_reviewed": ("ReviewedNotes", "Count"),
    "production_precision": ("ProductionPrecision", "None"),
    "production_recall": ("ProductionRecall", "None"),
    "corrections_per_100_entities": ("CorrectionsPer100Entities", "None"),
    "median_review_seconds": ("MedianReviewSeconds", "Seconds"),
    "hours_saved": ("HoursSaved", "None"),
}


def review_metric_data(
    stage: str,
    model_version: str,
    version_kpis: Mapping[str, Any],
    stage_kpis: Mapping[str, Any],
    when: datetime,
) -> list[dict[str, Any]]:
    """The running day's review KPIs: per stage (all versions, alarmed) and stage + version."""
    data: list[dict[str, Any]] = []
    stage_dims, version_dims = _dimension_sets(stage, model_version)
    for dims, kpis in ((stage_dims, stage_kpis), (version_dims, version_kpis)):
        for key, (name, unit) in REVIEW_METRICS.items():
            value = kpis.get(key)
            if value is not None and math.isfinite(float(value)):
                data.append(_datum(name, value, dims, when, unit))
    return data


def _datum(
    name: str, value: float, dims: list[dict[str, str]], when: datetime, unit: str
) -> dict[str, Any]:
    return {
        "MetricName": name,
        "Dimensions": dims,
        "Timestamp": when,
        "Value": float(value),
        "Unit": unit,
    }


def chunks(data: Sequence[dict[str, Any]], size: int = 500) -> list[list[dict[str, Any]]]:
    """PutMetricData takes at most 1000 metrics per call; send in slices."""
    return [list(data[i : i + size]) for i in range(0, len(data), size)]
