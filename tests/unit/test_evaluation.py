"""Unit tests for clinical_ner.model.evaluation: strict entity scores and calibration error.

Every expected number is worked out by hand in the test (exact fractions via pytest.approx).
"""

from __future__ import annotations

import math

import pytest

from clinical_ner.model.evaluation import (
    EntityScores,
    LabelCounts,
    expected_calibration_error,
    reliability_table,
    score_entities,
)

D, T, C = "DISEASE", "TREATMENT", "CHEMICAL"


def counts(scores: EntityScores, label: str | None = None) -> tuple[int, int, int]:
    c = scores.total if label is None else scores.per_label[label]
    return c.tp, c.fp, c.fn


# ------------------------------------------------------------------ entity scores


def test_perfect_match() -> None:
    gold = [[(0, 5, D), (10, 15, T)], [(3, 9, D)]]
    scores = score_entities(gold, [list(doc) for doc in gold])
    assert counts(scores) == (3, 0, 0)
    assert scores.total.precision == 1.0
    assert scores.total.recall == 1.0
    assert scores.total.f1 == 1.0
    assert counts(scores, D) == (2, 0, 0)
    assert counts(scores, T) == (1, 0, 0)


def test_order_within_a_document_does_not_matter() -> None:
    scores = score_entities([[(0, 5, D), (10, 15, T)]], [[(10, 15, T), (0, 5, D)]])
    assert counts(scores) == (2, 0, 0)


@pytest.mark.parametrize("predicted", [(0, 4, D), (1, 5, D), (0, 6, D), (2, 3, D)])
def test_boundary_error_is_both_fp_and_fn(predicted: tuple[int, int, str]) -> None:
    scores = score_entities([[(0, 5, D)]], [[predicted]])
    assert counts(scores) == (0, 1, 1)
    assert counts(scores, D) == (0, 1, 1)
    assert scores.total.precision == 0.0
    assert scores.total.recall == 0.0
    assert scores.total.f1 == 0.0


def test_label_error_is_fn_of_gold_label_and_fp_of_predicted_label() -> None:
    scores = score_entities([[(0, 5, D)]], [[(0, 5, T)]])
    assert counts(scores) == (0, 1, 1)
    assert counts(scores, D) == (0, 0, 1)
    assert counts(scores, T) == (0, 1, 0)


def test_label_the_model_lacks_counts_as_misses() -> None:
    # The model only knows DISEASE; gold CHEMICAL entities can never match.
    gold = [[(0, 7, C), (12, 20, D)], [(0, 9, C)]]
    pred = [[(12, 20, D)], []]
    scores = score_entities(gold, pred)
    assert counts(scores, C) == (0, 0, 2)
    assert counts(scores, D) == (1, 0, 0)
    assert counts(scores) == (1, 0, 2)
    assert scores.total.precision == 1.0
    assert scores.total.recall == pytest.approx(1 / 3)
    assert scores.total.f1 == pytest.approx(2 * 1 * (1 / 3) / (1 + 1 / 3))  # 1/2
    assert scores.total.f1 == pytest.approx(1 / 2)
    chem = scores.per_label[C].as_dict()
    assert chem == {"p": 0.0, "r": 0.0, "f": 0.0, "tp": 0, "fp": 0, "fn": 2, "support": 2}


def test_empty_predictions() -> None:
    scores = score_entities([[(0, 5, D)], [(1, 2, T), (4, 6, T)]], [[], []])
    assert counts(scores) == (0, 0, 3)
    assert scores.total.precision == 0.0  # nothing predicted: defined as 0, not an error
    assert scores.total.recall == 0.0
    assert scores.total.f1 == 0.0
    assert counts(scores, T) == (0, 0, 2)


def test_no_gold_and_no_predictions() -> None:
    scores = score_entities([[], []], [[], []])
    assert counts(scores) == (0, 0, 0)
    assert scores.per_label == {}
    assert scores.as_dict() == {
        "ents_p": 0.0,
        "ents_r": 0.0,
        "ents_f": 0.0,
        "tp": 0,
        "fp": 0,
        "fn": 0,
        "per_label": {},
    }
    assert score_entities([], []).total.f1 == 0.0


def test_predictions_without_gold_are_false_positives() -> None:
    scores = score_entities([[]], [[(0, 3, D)]])
    assert counts(scores) == (0, 1, 0)
    assert scores.total.recall == 0.0


def test_documents_are_scored_separately() -> None:
    # The same offsets in another document are a different entity.
    scores = score_entities([[(0, 3, D)], []], [[], [(0, 3, D)]])
    assert counts(scores) == (0, 1, 1)


def test_repeated_predictions_count_once() -> None:
    scores = score_entities([[(0, 3, D)]], [[(0, 3, D), (0, 3, D)]])
    assert counts(scores) == (1, 0, 0)


def test_micro_and_per_label_values_by_hand() -> None:
    gold = [
        [(0, 4, D), (10, 20, D), (30, 35, T)],
        [(0, 6, T), (8, 12, D)],
    ]
    pred = [
        [(0, 4, D), (10, 19, D), (30, 35, T), (40, 45, T)],
        [(0, 6, T), (8, 12, T)],
    ]
    # DISEASE:   tp (0,4); fp (10,19); fn (10,20), (8,12)        -> tp 1 fp 1 fn 2
    # TREATMENT: tp (30,35), (0,6); fp (40,45), (8,12,T)         -> tp 2 fp 2 fn 0
    scores = score_entities(gold, pred)
    assert counts(scores, D) == (1, 1, 2)
    assert counts(scores, T) == (2, 2, 0)
    assert counts(scores) == (3, 3, 2)

    disease, treatment = scores.per_label[D], scores.per_label[T]
    assert disease.precision == pytest.approx(1 / 2)
    assert disease.recall == pytest.approx(1 / 3)
    assert disease.f1 == pytest.approx(2 / 5)  # 2 * 1/6 / (5/6)
    assert treatment.precision == pytest.approx(1 / 2)
    assert treatment.recall == pytest.approx(1)
    assert treatment.f1 == pytest.approx(2 / 3)  # 2 * 1/2 / (3/2)

    # micro: P = 3/6, R = 3/5, F = 2 * (3/10) / (11/10) = 6/11
    assert scores.total.precision == pytest.approx(1 / 2)
    assert scores.total.recall == pytest.approx(3 / 5)
    assert scores.total.f1 == pytest.approx(6 / 11)
    macro_f1 = (disease.f1 + treatment.f1) / 2  # 8/15: not what ents_f reports
    assert macro_f1 == pytest.approx(8 / 15)
    assert scores.total.f1 != pytest.approx(macro_f1)

    data = scores.as_dict()
    assert data["ents_p"] == pytest.approx(1 / 2)
    assert data["ents_r"] == pytest.approx(3 / 5)
    assert data["ents_f"] == pytest.approx(6 / 11)
    assert (data["tp"], data["fp"], data["fn"]) == (3, 3, 2)
    per_label = data["per_label"]
    assert list(per_label) == [D, T]  # sorted
    assert per_label[D] == {
        "p": pytest.approx(1 / 2),
        "r": pytest.approx(1 / 3),
        "f": pytest.approx(2 / 5),
        "tp": 1,
        "fp": 1,
        "fn": 2,
        "support": 3,
    }
    assert per_label[T]["support"] == 2


def test_generators_per_document_are_accepted() -> None:
    gold = [iter([(0, 3, D)])]
    pred = [(span for span in [(0, 3, D)])]
    assert counts(score_entities(gold, pred)) == (1, 0, 0)


@pytest.mark.parametrize(("n_gold", "n_pred"), [(2, 1), (0, 1), (1, 0)])
def test_mismatched_lengths_raise(n_gold: int, n_pred: int) -> None:
    with pytest.raises(ValueError, match=f"{n_gold} gold documents but {n_pred} predictions"):
        score_entities([[]] * n_gold, [[]] * n_pred)


def test_label_counts_properties() -> None:
    c = LabelCounts(tp=3, fp=1, fn=2)
    assert c.precision == pytest.approx(3 / 4)
    assert c.recall == pytest.approx(3 / 5)
    assert c.f1 == pytest.approx(2 / 3)  # 2 * (9/20) / (27/20)
    assert LabelCounts().as_dict()["f"] == 0.0


# -------------------------------------------------------------------- calibration


def test_ece_two_bins_by_hand() -> None:
    # bin [0.9, 1.0): conf 0.9, 0.9, accuracy 1/2 -> |0.5 - 0.9| * 2/4 = 0.2
    # bin [0.1, 0.2): conf 0.1, 0.1, accuracy 0   -> |0.0 - 0.1| * 2/4 = 0.05
    ece = expected_calibration_error([0.9, 0.9, 0.1, 0.1], [True, False, False, False])
    assert ece == pytest.approx(0.25)


def test_ece_accepts_int_flags() -> None:
    assert expected_calibration_error([0.9, 0.9, 0.1, 0.1], [1, 0, 0, 0]) == pytest.approx(0.25)


def test_ece_with_custom_bins() -> None:
    # bins=2: [0, .5): 0.2, 0.4 mean 0.3, acc 1/2 -> 0.2 * 2/5
    #         [.5, 1]: 0.5, 0.6, 0.8 mean 19/30, acc 1 -> 11/30 * 3/5
    conf = [0.2, 0.4, 0.5, 0.6, 0.8]
    ok = [False, True, True, True, True]
    expected = 0.2 * 2 / 5 + (11 / 30) * 3 / 5  # 0.08 + 0.22
    assert expected_calibration_error(conf, ok, bins=2) == pytest.approx(expected)
    assert expected == pytest.approx(0.3)
    # one bin: mean confidence 2.5/5, accuracy 4/5 -> 0.3 as well
    assert expected_calibration_error(conf, ok, bins=1) == pytest.approx(0.3)


def test_ece_over_and_under_confidence_do_not_cancel_across_bins() -> None:
    # bin 0.8: acc 0 -> 0.8 * 1/2; bin 0.2: acc 1 -> 0.8 * 1/2
    assert expected_calibration_error([0.8, 0.2], [False, True]) == pytest.approx(0.8)
    # inside one bin [0.8, 0.9) they do cancel: mean confidence 0.825, accuracy 1/2
    assert expected_calibration_error([0.8, 0.85], [True, False]) == pytest.approx(0.325)


@pytest.mark.parametrize(
    ("conf", "ok", "expected"),
    [
        ([1.0, 1.0], [True, True], 0.0),  # 1.0 falls in the last bin
        ([0.0, 0.0], [False, False], 0.0),
        ([1.0], [False], 1.0),
        ([0.0], [True], 1.0),
        ([0.75] * 4, [True, True, True, False], 0.0),
    ],
)
def test_ece_extremes(conf: list[float], ok: list[bool], expected: float) -> None:
    assert expected_calibration_error(conf, ok) == pytest.approx(expected)


def test_ece_empty_is_zero() -> None:
    assert expected_calibration_error([], []) == 0.0


@pytest.mark.parametrize("bad", [1.01, -0.01, 2.0, math.nan, math.inf])
def test_ece_out_of_range_confidence_raises(bad: float) -> None:
    with pytest.raises(ValueError, match="outside"):
        expected_calibration_error([0.5, bad], [True, False])


def test_ece_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        expected_calibration_error([0.5, 0.6], [True])


def test_reliability_table_by_hand() -> None:
    table = reliability_table([0.9, 0.9, 0.1, 0.1], [True, False, False, False])
    assert table == [
        {
            "bin_low": pytest.approx(0.1),
            "bin_high": pytest.approx(0.2),
            "count": 2,
            "mean_confidence": pytest.approx(0.1),
            "accuracy": 0.0,
        },
        {
            "bin_low": pytest.approx(0.9),
            "bin_high": pytest.approx(1.0),
            "count": 2,
            "mean_confidence": pytest.approx(0.9),
            "accuracy": 0.5,
        },
    ]


def test_reliability_table_edges_and_empty() -> None:
    table = reliability_table([0.0, 0.5, 1.0, 0.95], [False, True, True, False], bins=2)
    assert [(row["bin_low"], row["bin_high"], row["count"]) for row in table] == [
        (0.0, 0.5, 1),
        (0.5, 1.0, 3),  # 0.5 opens the upper bin, 1.0 is in the last bin
    ]
    assert table[1]["mean_confidence"] == pytest.approx(2.45 / 3)
    assert table[1]["accuracy"] == pytest.approx(2 / 3)
    assert reliability_table([], []) == []


def test_reliability_table_agrees_with_ece() -> None:
    # Every bin edge i/10 plus values in between: the table's rows reproduce the ECE.
    conf = [i / 10 for i in range(11)] + [0.05, 0.15, 0.33, 0.61, 0.99, 0.999]
    ok = [i % 3 == 0 for i in range(len(conf))]
    table = reliability_table(conf, ok)
    assert sum(row["count"] for row in table) == len(conf)
    from_table = sum(
        row["count"] / len(conf) * abs(row["accuracy"] - row["mean_confidence"]) for row in table
    )
    assert expected_calibration_error(conf, ok) == pytest.approx(from_table)
