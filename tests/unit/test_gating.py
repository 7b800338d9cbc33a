"""Gate policy (pipeline.gating): table-driven over the cases the pipeline must get right."""

from __future__ import annotations

import json

import pytest

from clinical_ner.pipeline import gating
from clinical_ner.pipeline.stage_config import GateThresholds, load_stage_config

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


# --------------------------------------------------------------------------- production baseline
# The training job re-scores the production model on the candidate's own data and writes
# metrics["production_baseline"]; the gate prefers it when it is of the production model's
# version (same data), and otherwise says it compared against production's own metrics.

PROD_V = "prod-v1"


def prod(micro: float, split: str = "test", version: str = PROD_V, **labels: float) -> dict:
    return {**metrics(micro, split, **labels), "model_version": version}


def with_baseline(candidate: dict, *blocks: dict, version: str = PROD_V) -> dict:
    """`candidate` plus a production_baseline made of the split blocks of `blocks`."""
    baseline: dict = {"model_version": version}
    for block in blocks:
        baseline.update({k: v for k, v in block.items() if k in gating.SPLITS_BY_PREFERENCE})
    return {**candidate, "production_baseline": baseline}


# Candidate 0.72 vs production 0.70 on production's own (easier or harder) test set...
CAND = metrics(0.72, DISEASE=0.74, TREATMENT=0.68)
PROD_OWN = prod(0.70, DISEASE=0.72, TREATMENT=0.66)
# ...but on the candidate's test set, production scores 0.78: the candidate is worse.
HARDER_FOR_CAND = metrics(0.78, DISEASE=0.80, TREATMENT=0.75)
# A weaker candidate (0.65) that loses on own data but wins on its own, harder data.
WEAK_CAND = metrics(0.65, DISEASE=0.66, TREATMENT=0.60)
HARDER_DATA = metrics(0.60, DISEASE=0.62, TREATMENT=0.55)

COMPARISON_CASES = [
    # id, candidate, production, passed, failed, comparison, production_f1
    ("own-data-passes", CAND, PROD_OWN, True, [], "own_data", 0.70),
    (
        "same-data-fails-where-own-data-passes",
        with_baseline(CAND, HARDER_FOR_CAND),
        PROD_OWN,
        False,
        ["beats_production", "label_regression"],
        "same_data",
        0.78,
    ),
    (
        "own-data-fails",
        WEAK_CAND,
        PROD_OWN,
        False,
        ["beats_production", "label_regression"],
        "own_data",
        0.70,
    ),
    (
        "same-data-passes-where-own-data-fails",
        with_baseline(WEAK_CAND, HARDER_DATA),
        PROD_OWN,
        True,
        [],
        "same_data",
        0.60,
    ),
    (
        "baseline-of-another-version-falls-back-to-own-data",
        with_baseline(CAND, HARDER_FOR_CAND, version="prod-v0"),
        PROD_OWN,
        True,
        [],
        "own_data",
        0.70,
    ),
    (
        "production-without-version-falls-back-to-own-data",
        with_baseline(CAND, HARDER_FOR_CAND),
        {k: v for k, v in PROD_OWN.items() if k != "model_version"},
        True,
        [],
        "own_data",
        0.70,
    ),
    (
        "same-data-ignores-productions-own-unreadable-scores",
        with_baseline(WEAK_CAND, HARDER_DATA),
        {"model_version": PROD_V, "test": {"oops": 1}},
        True,
        [],
        "same_data",
        0.60,
    ),
    (
        "first-model-ignores-baseline",
        with_baseline(WEAK_CAND, HARDER_FOR_CAND),
        None,
        True,
        [],
        None,
        None,
    ),
    (
        "first-model-ignores-even-a-malformed-baseline",
        {**WEAK_CAND, "production_baseline": "junk"},
        None,
        True,
        [],
        None,
        None,
    ),
]


@pytest.mark.parametrize(
    ("candidate", "production", "passed", "failed", "comparison", "production_f1"),
    [c[1:] for c in COMPARISON_CASES],
    ids=[c[0] for c in COMPARISON_CASES],
)
def test_production_scores_come_from_the_matching_baseline(
    candidate, production, passed, failed, comparison, production_f1
):
    d = gating.decide(candidate, production, T)
    assert (d.passed, d.failed, d.comparison) == (passed, failed, comparison)
    assert d.production_f1 == production_f1
    out = d.to_dict()
    assert json.loads(json.dumps(out)) == out
    assert out["comparison"] == comparison
    codes = [c["code"] for c in out["checks"]]
    if comparison is None:
        assert "first_model" in codes
        assert not {"comparison_same_data", "comparison_own_data"} & set(codes)
    else:
        # Exactly one passing check records where the production scores came from.
        (check,) = [c for c in out["checks"] if c["code"].startswith("comparison_")]
        assert check["code"] == f"comparison_{comparison}" and check["passed"]
        assert check["detail"]


def test_own_data_comparison_says_why_in_the_summary():
    no_baseline = gating.decide(CAND, PROD_OWN, T)
    assert "production scored on its own training run's test split" in no_baseline.summary()
    assert "no production_baseline" in no_baseline.summary()
    stale = gating.decide(with_baseline(CAND, HARDER_FOR_CAND, version="prod-v0"), PROD_OWN, T)
    (check,) = [c for c in stale.checks if c.code == gating.COMPARISON_OWN_DATA]
    assert "prod-v0" in check.detail and PROD_V in check.detail
    assert check.detail in stale.summary()
    same = gating.decide(with_baseline(CAND, HARDER_FOR_CAND), PROD_OWN, T)
    assert "re-scored on the candidate's data" in same.summary()
    (check,) = [c for c in same.checks if c.code == gating.COMPARISON_SAME_DATA]
    assert PROD_V in check.detail


def test_same_data_split_is_the_preferred_one_candidate_and_baseline_share():
    cand_both = {**CAND, **metrics(0.5, "dev", DISEASE=0.5, TREATMENT=0.5)}
    base_dev = metrics(0.45, "dev", DISEASE=0.45, TREATMENT=0.45)
    base_test = metrics(0.6, DISEASE=0.6, TREATMENT=0.6)
    # Both splits in both: test. Production's own metrics have dev only: irrelevant.
    prod_dev_only = prod(0.9, "dev", DISEASE=0.9, TREATMENT=0.9)
    d = gating.decide(with_baseline(cand_both, base_dev, base_test), prod_dev_only, T)
    assert (d.split, d.production_f1, d.comparison) == ("test", 0.6, "same_data")
    # The baseline has dev only (e.g. a hand-made one): dev.
    d = gating.decide(with_baseline(cand_both, base_dev), PROD_OWN, T)
    assert (d.split, d.candidate_f1, d.production_f1) == ("dev", 0.5, 0.45)
    # No split in common: the candidate's metrics are inconsistent.
    d = gating.decide(with_baseline(CAND, base_dev), PROD_OWN, T)
    assert not d.passed and d.failed == ["invalid_metrics"] and d.comparison is None


@pytest.mark.parametrize(
    "baseline",
    [
        None,
        "prod-v1",
        [],
        {},
        {"test": HARDER_DATA["test"]},  # no model_version
        {"model_version": 1, "test": HARDER_DATA["test"]},
        {"model_version": "", "test": HARDER_DATA["test"]},
        {"model_version": PROD_V},  # no split
        {"model_version": PROD_V, "test": [0.6]},
        {"model_version": PROD_V, "test": {"per_label": {}}},
        {"model_version": PROD_V, "test": {"ents_f": 1.5, "per_label": {}}},
        {"model_version": PROD_V, "test": {"ents_f": 0.6, "per_label": {"DISEASE": {"p": 1}}}},
        {"model_version": PROD_V, "test": {"ents_f": 0.6, "per_label": {"D": {"f": "0.6"}}}},
        # Valid test block, broken dev block: every block present must be valid.
        {"model_version": PROD_V, **HARDER_DATA, "dev": {"ents_f": float("nan"), "per_label": {}}},
        # Malformed even though its version does not match: still the candidate's bad metrics.
        {"model_version": "prod-v0", "test": {"ents_f": 0.6}},
    ],
)
def test_malformed_baseline_fails_the_gate_as_invalid_metrics(baseline):
    d = gating.decide({**CAND, "production_baseline": baseline}, PROD_OWN, T)
    assert not d.passed and d.failed == ["invalid_metrics"]
    assert "production_baseline" in d.summary()
    assert d.to_dict()["comparison"] is None


def test_evaluate_rejects_unknown_comparison():
    c = gating.scores_from_metrics(CAND, "test")
    with pytest.raises(ValueError, match="comparison"):
        gating.evaluate(c, c, T, comparison="vibes")
