"""Typed contracts: round trips, migrations of older files, refusal of newer ones, signal specs."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from clinical_ner.data.extraction import model_metadata_problem
from clinical_ner.model import contracts, drift
from clinical_ner.model.contracts import (
    METRICS_FILE,
    MODEL_CARD_FILE,
    PROFILE_SCHEMA_VERSION,
    V1_TOKEN_RULE,
    ContractError,
    MetricsError,
    ModelCardError,
    ProfileError,
)
from clinical_ner.model.tokenization import TOKEN_PATTERN
from clinical_ner.pipeline import monitoring, registry
from clinical_ner.pipeline.aws_runtime import PipelineStepError
from clinical_ner.pipeline.stage_config import DriftThresholds

SECRET = "Quillfeather-MRN-4417"  # stands for note text: never in an error message
NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
T = DriftThresholds(moderate=0.10, severe=0.25, min_window_notes=4, reference_min_notes=4)

METRICS_V0 = {  # a metrics.json written before versioning (no schema_version)
    "model_version": "clinical-ner-0123456789ab",
    "labels": ["DISEASE", "TREATMENT"],
    "dev": {"ents_f": 0.8, "ents_p": 0.8, "ents_r": 0.8, "per_label": {}},
    "seed": 0,
}
CARD_V0 = {
    "model_version": "clinical-ner-0123456789ab",
    "labels": ["DISEASE", "TREATMENT"],
    "calibration": {"x": [0.0, 1.0], "y": [0.1, 0.9]},
    "seed": 0,
}


def _ents(*labels_conf: tuple[str, float]) -> list[dict[str, object]]:
    return [{"label": lab, "confidence": c, "negated": False} for lab, c in labels_conf]


def _texts(n: int = 12) -> list[str]:
    return [("the patient has fever " * (i + 1)).strip() for i in range(n)]


def _baseline() -> contracts.DriftProfile:
    texts = _texts()
    ents = [_ents(("DISEASE", 0.95), ("TREATMENT", 0.85)) for _ in texts]
    return drift.build_profile(texts, ents, labels=["DISEASE", "TREATMENT"], created_at="t")


def _as_v1(profile: contracts.DriftProfile) -> dict[str, object]:
    """The same profile as schema 1 wrote it: no token_rule."""
    old = {k: v for k, v in copy.deepcopy(profile).items() if k != "token_rule"}
    old["schema_version"] = 1
    return old


# --------------------------------------------------------------------------- metrics.json


def test_metrics_round_trip_stamps_the_version(tmp_path: Path) -> None:
    written = contracts.write_metrics(METRICS_V0, tmp_path / METRICS_FILE)
    assert written["schema_version"] == contracts.METRICS_SCHEMA_VERSION
    assert next(iter(written)) == "schema_version"
    assert contracts.read_metrics_file(tmp_path / METRICS_FILE) == written
    assert contracts.read_metrics(contracts.dump_metrics(written).encode()) == written


def test_metrics_without_version_migrate_and_the_input_is_untouched() -> None:
    original = copy.deepcopy(METRICS_V0)
    metrics = contracts.read_metrics(METRICS_V0)
    assert metrics == {**METRICS_V0, "schema_version": 1}
    assert original == METRICS_V0


def test_metrics_of_a_newer_version_are_refused_also_by_the_registry() -> None:
    newer = {**METRICS_V0, "schema_version": contracts.METRICS_SCHEMA_VERSION + 1}
    with pytest.raises(MetricsError, match="newer than this code reads"):
        contracts.read_metrics(newer)

    class S3:
        def get_object(self, Bucket: str, Key: str) -> dict[str, object]:
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:gz") as tar:
                body = json.dumps(newer).encode()
                info = tarfile.TarInfo(METRICS_FILE)
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
            return {"Body": io.BytesIO(buf.getvalue())}

    with pytest.raises(PipelineStepError, match="newer"):
        registry.metrics_from_model_tarball(S3(), "s3://lake/models/job/output/model.tar.gz")


@pytest.mark.parametrize(
    "raw",
    [
        f"{{not json {SECRET}",
        json.dumps([SECRET]),
        json.dumps({**METRICS_V0, "schema_version": SECRET}),
        json.dumps({**METRICS_V0, "schema_version": True}),
    ],
)
def test_malformed_metrics_give_a_clear_error_without_their_content(raw: str) -> None:
    with pytest.raises(MetricsError) as err:
        contracts.read_metrics(raw.encode(), "metrics.json of job-1")
    message = str(err.value)
    assert "metrics.json of job-1" in message
    assert SECRET not in message
    assert any(w in message for w in ("not valid JSON", "not a JSON object", "not an integer"))


# --------------------------------------------------------------------------- model card


def test_model_card_round_trip_and_old_card_migrates(tmp_path: Path) -> None:
    written = contracts.write_model_card(CARD_V0, tmp_path / MODEL_CARD_FILE)
    assert written["schema_version"] == contracts.MODEL_CARD_SCHEMA_VERSION
    assert contracts.read_model_card_file(tmp_path) == written  # a model directory works too
    (tmp_path / MODEL_CARD_FILE).write_text(json.dumps(CARD_V0))
    assert contracts.read_model_card_file(tmp_path / MODEL_CARD_FILE) == {
        **CARD_V0,
        "schema_version": 1,
    }


def test_model_card_of_a_newer_version_is_refused_where_models_are_checked(
    tmp_path: Path,
) -> None:
    newer = {**CARD_V0, "schema_version": contracts.MODEL_CARD_SCHEMA_VERSION + 1}
    (tmp_path / MODEL_CARD_FILE).write_text(json.dumps(newer))
    with pytest.raises(ModelCardError, match="newer than this code reads"):
        contracts.read_model_card_file(tmp_path)
    problem = model_metadata_problem(tmp_path)
    assert problem is not None and "newer than this code reads" in problem
    (tmp_path / MODEL_CARD_FILE).write_text(f'{{"model_version": "{SECRET}"')
    problem = model_metadata_problem(tmp_path)
    assert problem is not None and "not valid JSON" in problem and SECRET not in problem


# --------------------------------------------------------------------------- drift profiles


def test_profile_round_trip(tmp_path: Path) -> None:
    profile = _baseline()
    assert profile["schema_version"] == PROFILE_SCHEMA_VERSION == 2
    assert profile["token_rule"] == TOKEN_PATTERN.pattern
    path = contracts.save_profile(profile, tmp_path / contracts.BASELINE_FILE)
    assert contracts.load_profile(path) == profile
    assert contracts.read_profile(contracts.dump_profile(profile)) == profile


def test_v1_baseline_file_loads_migrated_with_its_reference_id(tmp_path: Path) -> None:
    profile = _baseline()
    old = _as_v1(profile)
    path = tmp_path / contracts.BASELINE_FILE
    path.write_text(json.dumps(old))
    loaded = drift.load_profile(path)
    assert loaded["schema_version"] == PROFILE_SCHEMA_VERSION
    assert loaded["token_rule"] == V1_TOKEN_RULE == TOKEN_PATTERN.pattern
    assert loaded == profile  # v1 + migration == what the current code writes
    assert drift.reference_id(loaded) == old["reference_id"]
    assert "token_rule" not in old  # the migration copies, never edits the stored document


def test_v1_stored_reference_and_training_baseline_still_judge_windows() -> None:
    """Before: bumping the schema made every stored reference unreadable (ProfileError)."""
    current = _baseline()
    old = _as_v1(current)
    texts = _texts()
    shifted = [_ents(("DISEASE", 0.15)) for _ in texts]
    reports = [
        monitoring.run_monitor(
            texts,
            shifted,
            thresholds=T,
            model_version="m1",
            reference=ref,
            training_baseline=ref,
            now=NOW,
        ).report
        for ref in (current, old)
    ]
    assert reports[0]["decision"] == "severe"
    assert reports[1] == reports[0]


def test_profile_of_a_newer_version_is_refused(tmp_path: Path) -> None:
    newer = {**_baseline(), "schema_version": PROFILE_SCHEMA_VERSION + 1}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(newer))
    with pytest.raises(ProfileError, match="newer than this code reads"):
        drift.load_profile(path)
    with pytest.raises(ProfileError, match=r"production reference .*newer"):
        monitoring.run_monitor(
            _texts(), [[] for _ in _texts()], thresholds=T, model_version="m1", reference=newer
        )


@pytest.mark.parametrize(
    "doc",
    [
        f"[1, 2, {SECRET}",  # not JSON
        json.dumps(SECRET),  # not an object
        json.dumps({"kind": "baseline", "notes": SECRET}),  # no schema_version
        json.dumps({"schema_version": 2, "kind": SECRET}),  # missing fields
    ],
)
def test_malformed_profile_gives_a_clear_error_without_content(doc: str) -> None:
    with pytest.raises(ProfileError) as err:
        contracts.read_profile(doc, "monitoring/reference/m1.json")
    assert str(err.value).startswith("monitoring/reference/m1.json")
    assert SECRET not in str(err.value)


def test_a_profile_of_an_unknown_kind_is_refused_without_echoing_it() -> None:
    bad = {**_baseline(), "kind": SECRET}
    with pytest.raises(ProfileError, match="unknown profile kind") as err:
        contracts.read_profile(bad)
    assert SECRET not in str(err.value)


def test_window_counted_with_another_token_rule_is_refused() -> None:
    base = _baseline()
    window = drift.build_profile(_texts(), [[] for _ in _texts()], reference=base)
    with pytest.raises(ProfileError, match="token rule"):
        drift.compare(base, {**window, "token_rule": r"\S+"})


def test_errors_are_value_errors_for_existing_callers() -> None:
    for cls in (MetricsError, ModelCardError, ProfileError):
        assert issubclass(cls, ContractError) and issubclass(cls, ValueError)
    assert drift.ProfileError is ProfileError


# --------------------------------------------------------------------------- signal specs

# How each signal's raw value reads in the statistics of `drift.compare` (independent of the
# spec's own extractor, which computes it from the profiles).
RAW_FROM_COMPARE = {
    "note_length_psi": lambda c: c["psi_note_length"],
    "oov_rate_increase": lambda c: c["oov_rate_delta"],
    "label_mix_psi": lambda c: c["psi_label_mix"],
    "entity_density_change": lambda c: max(
        abs(v) for k, v in c.items() if k.startswith("entity_density_rel_change.")
    ),
    "no_entity_share_change": lambda c: c["no_entity_share_delta"],
    "confidence_psi": lambda c: c["psi_confidence"],
}


def _pair() -> tuple[contracts.DriftProfile, contracts.DriftProfile]:
    base = _baseline()
    texts = [*_texts(6), *("x" * 400 for _ in range(6))]  # longer notes, new words
    ents = [_ents(("DISEASE", 0.35), ("DISEASE", 0.55)) if i % 3 else [] for i in range(12)]
    return base, drift.build_profile(texts, ents, reference=base)


def test_every_signal_is_covered_here() -> None:
    assert {s.name for s in monitoring.SIGNALS} == set(RAW_FROM_COMPARE)


@pytest.mark.parametrize("spec", monitoring.SIGNALS, ids=lambda s: s.name)
def test_each_spec_extracts_its_signal_from_the_profiles(spec: monitoring.SignalSpec) -> None:
    base, window = _pair()
    compared = drift.compare(base, window)
    value, raw = spec.extract(base, window)
    assert raw == pytest.approx(RAW_FROM_COMPARE[spec.name](compared))
    assert raw is not None and raw != 0.0  # the pair moves every signal
    assert value is not None and 0.0 <= value <= abs(raw)  # noise-corrected / floored / abs
    values, raws = monitoring.signal_values(base, window)
    assert (values[spec.name], raws[spec.name]) == (value, raw)


@pytest.mark.parametrize("spec", monitoring.SIGNALS, ids=lambda s: s.name)
def test_each_spec_names_its_threshold_fields(spec: monitoring.SignalSpec) -> None:
    moderate_field, severe_field = spec.threshold_fields
    names = {f.name for f in dataclasses.fields(DriftThresholds)}
    assert {moderate_field, severe_field} <= names
    t = dataclasses.replace(T, **{moderate_field: 0.0123, severe_field: 0.987})
    assert spec.thresholds(t) == (0.0123, 0.987)
    report_block = monitoring._thresholds_dict(t)[spec.band]
    assert report_block == {"moderate": 0.0123, "severe": 0.987}


def test_report_thresholds_block_keeps_its_shape() -> None:
    block = monitoring._thresholds_dict(T)
    assert set(block) == {
        "psi",
        "oov_increase",
        "density_change",
        "no_entity_share",
        "min_window_notes",
        "reference_min_notes",
    }
    assert block["psi"] == {"moderate": T.moderate, "severe": T.severe}


def test_unit_independent_signals_come_from_the_specs() -> None:
    assert monitoring.UNIT_INDEPENDENT == (
        "oov_rate_increase",
        "label_mix_psi",
        "entity_density_change",
        "confidence_psi",
    )


def test_a_spec_naming_an_unknown_threshold_fails_at_import(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad = dataclasses.replace(
        monitoring.SIGNALS[0], name="x", metric="X", threshold_fields=("x_moderate", "x_severe")
    )
    monkeypatch.setattr(monitoring, "SIGNALS", (*monitoring.SIGNALS, bad))
    with pytest.raises(TypeError, match="unknown DriftThresholds fields"):
        monitoring._check_specs()
