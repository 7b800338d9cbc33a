"""Gate policy (clinical_ner.gating): table-driven over the cases the pipeline must get right."""

from __future__ import annotations

import json

import pytest

from clinical_ner import gating
from clinical_ner.stage_config import GateThresholds, load_stage_config

T = GateThresholds(f1_floor=0.60, per_label_regression_tolerance=0.02, min_improvement=0.0)


def metrics(micro: float, split: str = "test", **labels: float) -> dict:
    block = {"ents_f": micro, "ents_p": micro, "ents_r": micro, "per_label": {}}
    for label, f in labels.items():
        block["per_label"][label] = {"p": f, "r": f, "f": f, "support": 10}
    return {split: block, "model_version": "m"}


PROD = metrics(0.70, DISEASE=0.72, TREATMENT=0.66)

CASES = [
    # id, candidate, production, thresholds, passed, failed codes
    ("first-model-above-floor", metrics(0.61, DISEASE=0.7, TREATMENT=0.5), None, T, True, []),
    (
        "first-model-below-floor",
        metrics(0.59, DISEASE=0.7, TREATMENT=0.5),
        None,
        T,
        False,
        ["f1_floor"],
    ),
    ("first-model-exactly-on-floor", metrics(0.60, DISEASE=0.6), None, T, True, []),
    ("better-everywhere", metrics(0.75, DISEASE=0.76, TREATMENT=0.70), PROD, T, True, []),
    (
        "tie-passes-with-zero-min-improvement",
        metrics(0.70, DISEASE=0.72, TREATMENT=0.66),
        PROD,
        T,
        True,
        [],
    ),
    (
        "tie-fails-when-improvement-required",
        metrics(0.70, DISEASE=0.72, TREATMENT=0.66),
        PROD,
        GateThresholds(0.6, 0.02, 0.01),
        False,
        ["beats_production"],
    ),
    (
        "float-noise-tie",
        metrics(0.1 + 0.6, DISEASE=0.72, TREATMENT=0.66),
        metrics(0.7000000000000001, DISEASE=0.72, TREATMENT=0.66),
        T,
        True,
        [],
    ),
    (
        "worse-than-production",
        metrics(0.69, DISEASE=0.72, TREATMENT=0.66),
        PROD,
        T,
        False,
        ["beats_production"],
    ),
    (
        "regression-on-one-label",
        metrics(0.74, DISEASE=0.85, TREATMENT=0.60),
        PROD,
        T,
        False,
        ["label_regression"],
    ),
    (
        "label-drop-within-tolerance",
        metrics(0.71, DISEASE=0.75, TREATMENT=0.645),
        PROD,
        T,
        True,
        [],
    ),
    (
        "label-drop-exactly-tolerance",
        metrics(0.71, DISEASE=0.75, TREATMENT=0.64),
        PROD,
        T,
        True,
        [],
    ),
    ("missing-label-in-candidate", metrics(0.80, DISEASE=0.80), PROD, T, False, ["missing_label"]),
    (
        "new-label-in-candidate-is-fine",
        metrics(0.71, DISEASE=0.72, TREATMENT=0.66, DRUG=0.1),
        PROD,
        T,
        True,
        [],
    ),
    (
        "below-floor-and-worse",
        metrics(0.5, DISEASE=0.5, TREATMENT=0.5),
        PROD,
        T,
        False,
        ["beats_production", "f1_floor", "label_regression"],
    ),
    (
        "negative-min-improvement-allows-small-loss",
        metrics(0.69, DISEASE=0.72, TREATMENT=0.66),
        PROD,
        GateThresholds(0.6, 0.02, -0.02),
        True,
        [],
    ),
]


@pytest.mark.parametrize(
    ("candidate", "production", "thresholds", "passed", "failed"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_gate_policy(candidate, production, thresholds, passed, failed):
    decision = gating.decide(candidate, production, thresholds)
    assert decision.passed is passed
    assert decision.failed == failed
    out = decision.to_dict()
    assert json.loads(json.dumps(out)) == out  # machine-readable, JSON-safe
    assert out["decision"] == ("pass" if passed else "fail")
    assert {c["code"] for c in out["checks"] if not c["passed"]} == set(failed)


def test_first_model_records_why_it_passed():
    d = gating.decide(metrics(0.9, DISEASE=0.9), None, T)
    assert [c.code for c in d.checks] == ["f1_floor", "first_model"]
    assert d.production_f1 is None and "no production model" in d.summary()


def test_regression_names_the_label_and_the_numbers():
    d = gating.decide(metrics(0.74, DISEASE=0.85, TREATMENT=0.60), PROD, T)
    (bad,) = [c for c in d.checks if not c.passed]
    assert bad.label == "TREATMENT" and bad.value == 0.60
    assert bad.threshold == pytest.approx(0.64)
    assert "TREATMENT" in d.summary() and "FAIL" in d.summary()


def test_test_split_preferred_and_dev_used_when_a_side_lacks_test():
    cand = {**metrics(0.8, DISEASE=0.8), **metrics(0.5, "dev", DISEASE=0.5)}
    assert gating.decide(cand, None, T).split == "test"
    prod_dev_only = metrics(0.55, "dev", DISEASE=0.55)
    d = gating.decide(cand, prod_dev_only, T)
    assert d.split == "dev" and d.candidate_f1 == 0.5 and not d.passed


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"test": {"per_label": {}}},
        {"test": {"ents_f": "0.9", "per_label": {}}},
        {"test": {"ents_f": float("nan"), "per_label": {}}},
        {"test": {"ents_f": 1.5, "per_label": {}}},
        {"test": {"ents_f": 0.9, "per_label": {"DISEASE": {"p": 1}}}},
        {"test": {"ents_f": True, "per_label": {}}},
    ],
)
def test_unusable_candidate_metrics_fail_the_gate_without_raising(bad):
    d = gating.decide(bad, None, T)
    assert not d.passed and d.failed == ["invalid_metrics"]


def test_unreadable_production_metrics_raise_instead_of_passing_as_first_model():
    with pytest.raises(gating.MetricsError):
        gating.decide(metrics(0.9, DISEASE=0.9), {"test": {"oops": 1}}, T)
    with pytest.raises(gating.MetricsError):  # no common split
        gating.decide(metrics(0.9, DISEASE=0.9), metrics(0.9, "dev", DISEASE=0.9), T)


@pytest.mark.parametrize("stage", ["dev", "staging", "prod"])
def test_stage_thresholds_are_the_policy_inputs(stage):
    t = load_stage_config(stage).gate
    just_below = metrics(t.f1_floor - 0.001, DISEASE=0.9)
    assert not gating.decide(just_below, None, t).passed
    assert gating.decide(metrics(t.f1_floor, DISEASE=0.9), None, t).passed
