"""Drift profiles and statistics: exact PSI values, binning, held-out OOV, PHI limits."""

from __future__ import annotations

import json
import math

import pytest

from clinical_ner.model.context import TraitEvidence
from clinical_ner.model.drift import (
    CONFIDENCE_EDGES,
    DENSITY_FLOOR,
    ProfileError,
    build_profile,
    compare,
    histogram,
    load_profile,
    psi,
    quantile_edges,
    save_profile,
    word_tokens,
)
from clinical_ner.model.enrichment import EntityDetails
from clinical_ner.model.inference import PredictedEntity


def ent(label: str = "DISEASE", confidence: float = 0.95, negated: bool = False) -> dict:
    return {"label": label, "confidence": confidence, "negated": negated}


def smoothed(counts: list[float], eps: float) -> list[float]:
    total = sum(counts)
    return [(c / total + eps) / (1 + len(counts) * eps) for c in counts]


def psi_by_hand(expected: list[float], actual: list[float], eps: float) -> float:
    e, a = smoothed(expected, eps), smoothed(actual, eps)
    return sum((ai - ei) * math.log(ai / ei) for ei, ai in zip(e, a, strict=True))


# --------------------------------------------------------------------------- PSI


def test_psi_closed_forms_without_smoothing():
    # (0.25-0.5) ln(0.5) + (0.75-0.5) ln(1.5) = 0.25 ln 3
    assert psi([50, 50], [25, 75], epsilon=0) == pytest.approx(0.25 * math.log(3), abs=1e-12)
    # (-0.3) ln(0.4) + 0 + 0.3 ln(2.5) = 0.6 ln 2.5
    assert psi([5, 3, 2], [2, 3, 5], epsilon=0) == pytest.approx(0.6 * math.log(2.5), abs=1e-12)
    # Counts, not proportions: scale does not matter.
    assert psi([1, 1], [1, 3], epsilon=0) == pytest.approx(0.25 * math.log(3), abs=1e-12)


def test_psi_epsilon_keeps_empty_bins_finite_and_exact():
    # e = [1.01, 0.01]/1.02, a = [0.01, 1.01]/1.02: each bin gives (1/1.02) ln 101.
    assert psi([10, 0], [0, 10], epsilon=0.01) == pytest.approx(2 / 1.02 * math.log(101), abs=1e-12)
    assert psi([10, 0], [0, 10], epsilon=0) == math.inf


def test_psi_default_epsilon_matches_the_documented_formula():
    expected, actual = [30, 10, 0], [10, 10, 5]
    assert psi(expected, actual) == pytest.approx(psi_by_hand(expected, actual, 1e-4), rel=1e-12)


def test_psi_is_zero_for_identical_distributions_and_symmetric():
    assert psi([3, 7, 0, 1], [30, 70, 0, 10]) == pytest.approx(0.0, abs=1e-15)
    assert psi([1, 4], [4, 1]) == pytest.approx(psi([4, 1], [1, 4]), rel=1e-12)


def test_psi_undefined_or_invalid_inputs():
    assert psi([0, 0], [1, 1]) is None
    assert psi([1, 1], [0, 0]) is None
    with pytest.raises(ValueError):
        psi([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        psi([1, -1], [1, 1])
    with pytest.raises(ValueError):
        psi([], [])


# --------------------------------------------------------------------------- binning


def test_histogram_bin_convention_lower_edge_inclusive():
    assert histogram([9.99, 10, 19, 20, 1000, -5], [10, 20]) == [2, 2, 2]
    assert histogram([], [10, 20]) == [0, 0, 0]
    # Confidence 1.0 lands in the last bin, 0.0 in the first.
    counts = histogram([0.0, 0.05, 0.1, 0.95, 1.0], CONFIDENCE_EDGES)
    assert counts[0] == 2 and counts[1] == 1 and counts[-1] == 2 and sum(counts) == 5


def test_quantile_edges_are_deciles_without_duplicates():
    assert quantile_edges(list(range(1, 11)), 10) == pytest.approx(
        [1.9, 2.8, 3.7, 4.6, 5.5, 6.4, 7.3, 8.2, 9.1]
    )
    assert quantile_edges([5] * 50 + [9] * 50, 10) == [5.0, 7.0, 9.0]
    with pytest.raises(ValueError):
        quantile_edges([], 10)


# --------------------------------------------------------------------------- profiles


def test_word_tokens_are_lowercased_and_skip_numbers_and_punctuation():
    assert word_tokens("BP 120/80, Aspirin 81mg q.d.") == ["bp", "aspirin", "81mg", "q", "d"]


def common_notes(n: int, start: int = 0) -> list[str]:
    # Each note: two shared words and one word unique to it (3 word tokens, 4 model tokens).
    return [f"the patient u{i}x." for i in range(start, start + n)]


def test_baseline_oov_is_measured_on_the_held_out_half():
    texts = common_notes(200)
    profile = build_profile(texts, [[] for _ in texts])
    vocab = profile["vocabulary"]
    assert vocab["tokens"] == ["patient", "the"]  # unique words occur in one note each
    assert 0 < vocab["built_from_notes"] < 200
    oov = profile["oov"]
    # Half B only: 3 word tokens per note, the unique one out of vocabulary.
    assert oov["word_tokens"] == 3 * (200 - vocab["built_from_notes"])
    assert oov["rate"] == pytest.approx(1 / 3)


def test_vocabulary_needs_k_distinct_notes_and_is_bounded():
    rare = "zelda quokkaberg"  # a name: in 4 distinct notes, and one note duplicated 30 times
    texts = common_notes(400)
    texts += [f"seen by {rare} today {i}" for i in range(4)]
    texts += [f"{rare} {rare} mrn secret"] * 30
    profile = build_profile(texts, [[] for _ in texts], vocab_size=1)
    dumped = json.dumps(profile)
    assert "zelda" not in dumped and "quokkaberg" not in dumped and "secret" not in dumped
    assert profile["vocabulary"]["tokens"] == ["patient"] or profile["vocabulary"]["tokens"] == [
        "the"
    ]
    assert profile["vocabulary"]["size"] == 1
    with pytest.raises(ValueError, match="min_doc_freq"):
        build_profile(texts, [[] for _ in texts], min_doc_freq=4)
    with pytest.raises(ValueError, match="vocab_size"):
        build_profile(texts, [[] for _ in texts], vocab_size=10**6)


def test_profile_contents_are_exact_for_a_constructed_window():
    texts = ["no asthma.", "aspirin for asthma.", "ok"]
    preds = [
        [
            PredictedEntity(
                3,
                9,
                "DISEASE",
                "asthma",
                0.85,
                0.9,
                EntityDetails(traits=(TraitEvidence("negated", "no", 0, 2, "rule"),)),
            )
        ],
        [ent("TREATMENT", 0.55), ent("DISEASE", 0.95)],
        [],
    ]
    profile = build_profile(texts, preds, labels=["DISEASE", "TREATMENT"], model_version="m1")
    assert profile["kind"] == "baseline" and profile["model_version"] == "m1"
    assert profile["notes"] == 3
    assert profile["tokens"] == 3 + 4 + 1
    entities = profile["entities"]
    assert entities["counts"] == {"DISEASE": 2, "TREATMENT": 1}
    assert entities["per_100_tokens"]["DISEASE"] == pytest.approx(25.0)
    assert entities["per_100_tokens"]["TREATMENT"] == pytest.approx(12.5)
    assert entities["label_mix"]["DISEASE"] == pytest.approx(2 / 3)
    assert entities["no_entity_share"] == pytest.approx(1 / 3)
    assert entities["negated_share"] == pytest.approx(1 / 3)
    conf = entities["confidence"]["counts"]
    assert conf[5] == 1 and conf[8] == 1 and conf[9] == 1 and sum(conf) == 3
    length = profile["note_length"]
    assert sum(length["counts"]) == 3 and length["unit"] == "characters"
    # Round trip through JSON (no NaN/inf, nothing non-serialisable).
    assert json.loads(json.dumps(profile, allow_nan=False)) == profile
    for text in texts:
        assert json.dumps(text) not in json.dumps(profile)


def test_empty_window_is_rejected():
    with pytest.raises(ValueError, match="empty"):
        build_profile([], [])
    with pytest.raises(ValueError):
        build_profile(["a"], [])  # texts and predictions must pair up


def test_save_and_load_round_trip(tmp_path):
    texts = common_notes(40)
    profile = build_profile(texts, [[ent()] for _ in texts])
    path = save_profile(profile, tmp_path / "p.json")
    assert load_profile(path) == profile
    (tmp_path / "bad.json").write_text(json.dumps({**profile, "schema_version": 99}))
    with pytest.raises(ProfileError, match="schema_version"):
        load_profile(tmp_path / "bad.json")


# --------------------------------------------------------------------------- compare


@pytest.fixture(scope="module")
def baseline() -> dict:
    # Lengths are spread over many values; one DISEASE per note, confidences across all bins.
    texts = [f"the patient u{i}x" + " word" * (i % 10) for i in range(200)]
    preds = [[ent("DISEASE", (i % 10) / 10 + 0.05)] for i in range(200)]
    preds[0].append(ent("TREATMENT", 0.5))  # one TREATMENT, so the label mix has both
    return build_profile(texts, preds, labels=["DISEASE", "TREATMENT"])


def test_same_distribution_window_shows_no_drift(baseline):
    texts = [f"the patient v{i}y" + " word" * (i % 10) for i in range(100)]
    preds = [[ent("DISEASE", (i % 10) / 10 + 0.05)] for i in range(100)]
    window = build_profile(texts, preds, reference=baseline)
    assert window["kind"] == "window" and "tokens" not in window["vocabulary"]
    signals = compare(baseline, window)
    assert signals["window_notes"] == 100 and signals["window_entities"] == 100
    assert signals["psi_note_length"] < 0.01
    assert signals["psi_confidence"] < 0.001  # the baseline's one extra entity
    # The baseline's single TREATMENT is absent here: smoothing keeps that small and finite.
    assert signals["psi_label_mix"] == pytest.approx(psi_by_hand([200, 1], [100, 0], 1e-4))
    assert signals["psi_label_mix"] < 0.05
    assert signals["no_entity_share_delta"] == 0.0
    assert signals["negated_share_delta"] == 0.0
    # "the patient word*" known, one unique token per note unknown -> same as the baseline.
    assert abs(signals["oov_rate_delta"]) < 0.05


def test_shifted_window_gives_exact_psi_and_deltas(baseline):
    texts = ["alpha beta gamma delta " * 20] * 10  # long, all words unseen
    preds = [[ent("TREATMENT", 0.99, negated=True)] * 2 for _ in texts]
    window = build_profile(texts, preds, reference=baseline)
    signals = compare(baseline, window)
    base_len = baseline["note_length"]["counts"]
    win_len = window["note_length"]["counts"]
    assert win_len[-1] == 10 and sum(win_len) == 10
    assert signals["psi_note_length"] == pytest.approx(
        psi_by_hand(base_len, win_len, 1e-4), rel=1e-12
    )
    assert signals["psi_confidence"] == pytest.approx(
        psi_by_hand(baseline["entities"]["confidence"]["counts"], [0] * 9 + [20], 1e-4),
        rel=1e-12,
    )
    assert signals["psi_label_mix"] == pytest.approx(psi_by_hand([200, 1], [0, 20], 1e-4))
    assert signals["oov_rate"] == 1.0
    assert signals["oov_rate_delta"] == pytest.approx(1.0 - baseline["oov"]["rate"])
    assert signals["negated_share_delta"] == pytest.approx(1.0)
    base_d = baseline["entities"]["per_100_tokens"]
    win_tokens = window["tokens"]
    assert win_tokens == 10 * 80
    assert signals["entity_density_rel_change.DISEASE"] == pytest.approx(-1.0)
    assert signals["entity_density_rel_change.TREATMENT"] == pytest.approx(
        (100 * 20 / win_tokens - base_d["TREATMENT"]) / max(base_d["TREATMENT"], DENSITY_FLOOR)
    )
    assert json.loads(json.dumps(signals, allow_nan=False)) == signals


def test_window_without_entities_has_undefined_entity_psis(baseline):
    window = build_profile(["the patient"], [[]], reference=baseline)
    signals = compare(baseline, window)
    assert signals["psi_confidence"] is None and signals["psi_label_mix"] is None
    assert signals["negated_share_delta"] is None
    assert signals["no_entity_share_delta"] == pytest.approx(1.0)


def test_compare_refuses_mismatched_profiles(baseline):
    other = build_profile(common_notes(50), [[] for _ in range(50)])
    window = build_profile(["the patient"], [[ent()]], reference=other)
    with pytest.raises(ProfileError, match="built against"):
        compare(baseline, window)
    own_window = build_profile(["the patient"], [[ent()]], reference=baseline)
    with pytest.raises(ProfileError, match="baseline"):
        compare(own_window, own_window)
    with pytest.raises(ProfileError, match="window"):
        compare(baseline, baseline)
    with pytest.raises(ProfileError):
        build_profile(["x"], [[]], reference=own_window)
