"""Drift decisions on constructed distributions with exact expected values."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest

from clinical_ner.model import drift
from clinical_ner.pipeline import monitoring
from clinical_ner.pipeline.monitoring import Decision, decide, expected_psi_noise, psi_excess
from clinical_ner.pipeline.stage_config import DriftThresholds, load_stage_config

T = DriftThresholds(moderate=0.10, severe=0.25, min_window_notes=4, reference_min_notes=4)
NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def values(**overrides):
    base = {s.name: 0.0 for s in monitoring.SIGNALS}
    base.update(overrides)
    return base


def test_expected_psi_noise_and_excess_exact():
    assert expected_psi_noise(10, 50, 1000) == pytest.approx(9 * (1 / 50 + 1 / 1000))
    assert expected_psi_noise(10, 0, 1000) == 0.0
    assert psi_excess(0.30, 10, 100, 100) == pytest.approx(0.30 - 0.18)
    assert psi_excess(0.05, 10, 100, 100) == 0.0  # below noise: floored
    assert psi_excess(None, 10, 100, 100) is None
    assert psi_excess(math.inf, 10, 100, 100) == math.inf


@pytest.mark.parametrize(
    ("value", "level"),
    [(0.0, "none"), (0.0999, "none"), (0.10, "moderate"), (0.2499, "moderate"), (0.25, "severe")],
)
def test_psi_band_edges_are_inclusive_at_the_threshold(value, level):
    out = decide(values(note_length_psi=value), T, window_notes=10)
    assert out["signals"]["note_length_psi"]["level"] == level
    assert out["classes"]["input"] == level
    assert out["decision"] == level


def test_each_signal_uses_its_own_band_and_class():
    t = load_stage_config("prod").drift
    out = decide(
        values(
            oov_rate_increase=t.oov_increase_moderate,  # moderate
            entity_density_change=t.density_change_severe,  # severe
            confidence_psi=0.05,  # none
        ),
        t,
        window_notes=500,
    )
    s = out["signals"]
    assert s["oov_rate_increase"]["level"] == "moderate"
    assert s["oov_rate_increase"]["moderate"] == t.oov_increase_moderate
    assert s["entity_density_change"]["level"] == "severe"
    assert out["classes"] == {"input": "moderate", "output": "severe", "confidence": "none"}
    assert out["decision"] == "severe" and out["action"] == "alert"


def test_moderate_means_retrain_and_none_means_nothing():
    assert decide(values(label_mix_psi=0.12), T, window_notes=10)["action"] == "retrain"
    assert decide(values(), T, window_notes=10)["action"] == "none"


def test_small_window_is_insufficient_data_even_when_signals_are_severe():
    out = decide(values(note_length_psi=5.0), T, window_notes=3)
    assert out["decision"] == "insufficient_data" and out["action"] == "none"
    assert out["signals"]["note_length_psi"]["level"] == "severe"  # still reported


def test_undefined_signals_are_listed_and_count_as_none():
    out = decide(values(confidence_psi=None), T, window_notes=10)
    assert out["undefined"] == ["confidence_psi"]
    assert out["signals"]["confidence_psi"]["level"] == "none"


def _ents(*labels_conf):
    return [{"label": lab, "confidence": c, "negated": False} for lab, c in labels_conf]


def _reference():
    # 8 notes; lengths 10..80 chars -> deciles; entities on fixed confidences.
    texts = [("word " * (2 * i + 2)).strip() for i in range(8)]
    ents = [_ents(("DISEASE", 0.95), ("TREATMENT", 0.85)) for _ in texts]
    return texts, ents


def test_signal_values_match_drift_compare_exactly():
    texts, ents = _reference()
    ref = drift.build_profile(texts, ents, labels=["DISEASE", "TREATMENT"], min_doc_freq=5)
    # Window: same texts, but every entity DISEASE at 0.35 -> label mix and confidence move.
    w_ents = [_ents(("DISEASE", 0.35), ("DISEASE", 0.35)) for _ in texts]
    window = drift.build_profile(texts, w_ents, reference=ref)
    compared = drift.compare(ref, window)
    vals, raw = monitoring.signal_values(ref, window, compared)
    assert raw["note_length_psi"] == pytest.approx(0.0)
    assert vals["note_length_psi"] == 0.0
    # label mix: reference 8/8 DISEASE/TREATMENT, window 16/0 -> PSI from drift.psi
    expected_mix = drift.psi([8, 8], [16, 0])
    assert raw["label_mix_psi"] == pytest.approx(expected_mix)
    assert vals["label_mix_psi"] == pytest.approx(expected_mix - 1 * (1 / 16 + 1 / 16))
    # density: DISEASE per 100 tokens doubles (+100%), TREATMENT vanishes (-100%)
    assert vals["entity_density_change"] == pytest.approx(1.0)
    expected_conf = drift.psi(
        ref["entities"]["confidence"]["counts"], window["entities"]["confidence"]["counts"]
    )
    assert raw["confidence_psi"] == pytest.approx(expected_conf)
    assert vals["confidence_psi"] == pytest.approx(expected_conf - 9 * (1 / 16 + 1 / 16))
    assert vals["no_entity_share_change"] == 0.0


def test_run_monitor_establishes_a_reference_then_detects_drift():
    texts, ents = _reference()
    first = monitoring.run_monitor(texts, ents, thresholds=T, model_version="m1", now=NOW)
    assert first.report["decision"] == Decision.REFERENCE_ESTABLISHED
    assert first.new_reference is not None and first.new_reference["kind"] == "baseline"
    same = monitoring.run_monitor(
        texts, ents, thresholds=T, model_version="m1", reference=first.new_reference, now=NOW
    )
    assert same.report["decision"] == "none" and same.new_reference is None
    shifted = monitoring.run_monitor(
        texts,
        [_ents(("DISEASE", 0.15)) for _ in texts],
        thresholds=T,
        model_version="m1",
        reference=first.new_reference,
        now=NOW,
    )
    assert shifted.report["decision"] == "severe"
    assert shifted.report["classes"]["output"] == "severe"
    assert shifted.report["classes"]["confidence"] == "severe"


def test_small_first_window_does_not_become_the_reference():
    texts, ents = _reference()
    t = DriftThresholds(moderate=0.1, severe=0.25, min_window_notes=2, reference_min_notes=20)
    out = monitoring.run_monitor(texts, ents, thresholds=t, model_version="m1", now=NOW)
    assert out.report["decision"] == "insufficient_data" and out.new_reference is None


def test_report_and_metrics_carry_no_text_and_have_fixed_alarm_dimensions():
    secret = "Zyxwvutsrq"  # a word that must never leave the profile code
    texts = [f"patient {secret} has word {i} " * 3 for i in range(8)]
    ents = [_ents(("DISEASE", 0.9)) for _ in texts]
    first = monitoring.run_monitor(texts, ents, thresholds=T, model_version="m1", now=NOW)
    result = monitoring.run_monitor(
        texts,
        ents,
        thresholds=T,
        model_version="m1",
        reference=first.new_reference,
        training_baseline=first.new_reference,
        window={"id": "w1"},
        now=NOW,
    )
    text = monitoring.report_json(result.report)
    assert secret.lower() not in text.lower()
    data = monitoring.drift_metric_data(result.report, "dev")
    assert secret.lower() not in json.dumps(data, default=str).lower()
    levels = [d for d in data if d["MetricName"] == "DriftLevel"]
    assert len(levels) == 2 * 3  # per class, with and without the model version
    alarm_dims = [d["Dimensions"] for d in levels if len(d["Dimensions"]) == 2]
    assert {tuple(x["Name"] for x in dims) for dims in alarm_dims} == {("Stage", "SignalClass")}
    assert {d["MetricName"] for d in data} >= {s.metric for s in monitoring.SIGNALS}
    assert monitoring.report_key("monitoring/", result.report) == (
        "monitoring/reports/dt=2024-03-01/m1/w1.json"
    )


def test_insufficient_window_publishes_no_levels():
    report = {
        "model_version": "m",
        "created_at": NOW.isoformat(),
        "window": {"notes": 3},
        "decision": "insufficient_data",
        "classes": {"input": "none", "output": "none", "confidence": "none"},
        "signals": {},
    }
    names = {d["MetricName"] for d in monitoring.drift_metric_data(report, "dev")}
    assert names == {"WindowNotes"}


def test_stage_config_rejects_inverted_bands():
    import dataclasses

    cfg = load_stage_config("dev")
    with pytest.raises(ValueError, match="oov_increase"):
        dataclasses.replace(cfg, drift=dataclasses.replace(cfg.drift, oov_increase_moderate=0.2))
