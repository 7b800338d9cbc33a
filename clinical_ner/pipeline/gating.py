"""The promotion gate: may a candidate model replace the production (current Approved) one?

Policy (thresholds from `clinical_ner.pipeline.stage_config.GateThresholds`, one set per stage):

1. **Floor**: the candidate's micro-F1 must reach ``f1_floor`` (absolute).
2. **No per-label regression**: for every label the production model is scored on, the
   candidate's F1 may drop by at most ``per_label_regression_tolerance``. A label the
   production model has and the candidate lacks fails (``missing_label``): a model that stops
   predicting TREATMENT must never pass because its DISEASE score went up.
3. **Beat or match production**: candidate micro-F1 - production micro-F1 must be
   >= ``min_improvement`` (0 = a tie passes).
4. **First model ever** (no Approved package in the group): rule 1 alone decides, and a
   ``production_baseline`` in the candidate's metrics is ignored.
5. **No worse on the users' own notes** (``validated_eval``): when the training job scored
   both models on the validated evaluation set (reviewed notes never trained on,
   docs/review.md) -- ``metrics["validated_eval"]`` (candidate) and
   ``metrics["production_baseline"]["validated_eval"]`` (production, same data) -- the
   candidate's micro-F1 there may be at most ``validated_eval_tolerance`` below production's.
   Without that set (or without a same-data baseline) the rule is not applied; the decision's
   ``validated_eval`` is then null.

Where the scores come from (`scores_from_metrics`, ``ents_f`` and ``per_label[label].f``):

* The candidate's: its own ``metrics.json``.
* The production model's, **same data** (``comparison = "same_data"``): when the training job
  had a ``production`` channel it re-scored the production model on exactly the candidate's
  dev/test docs and wrote ``metrics.json["production_baseline"] = {"model_version", "dev",
  "test"?}``. If that baseline's ``model_version`` equals the production metrics'
  ``model_version``, rules 2 and 3 use it, on the split both the candidate and the baseline
  have (``test`` over ``dev``); production's own metrics are then only read for its version.
* Otherwise, **own data** (``comparison = "own_data"``): production's own ``metrics.json``
  from its own training run, i.e. another dataset version's split (``test`` when both models
  have one, else ``dev``). This happens when the job had no production channel, or when
  another package was approved after the job started (the baseline is of another version).
  The decision says so: a passing ``comparison_own_data`` check whose detail names the reason
  (``comparison_same_data`` is recorded in the same-data case), and the summary states it.

A ``production_baseline`` that is present but malformed (not an object, no string
``model_version``, a split that is not a valid scores block, no split at all) makes the
candidate's metrics invalid: the gate fails with ``invalid_metrics``, it never silently falls
back. Comparisons allow a 1e-9 slack so a tie computed through different float paths stays a
tie.

The decision is data, not prose: `GateDecision.to_dict()` lists every check with a stable
``code``, pass/fail, the measured value, the threshold and (for per-label checks) the label;
``failed`` names the codes that failed; ``comparison`` says how production was scored
(``"same_data"``, ``"own_data"``, or null without a production model). The Step Functions
Choice state reads ``passed``; the reject step writes `GateDecision.summary()` into the model
package's approval description.

Pure Python, no third-party imports: the gate Lambda imports this without spaCy or numpy.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clinical_ner.pipeline.stage_config import GateThresholds

EPSILON = 1e-9
SPLITS_BY_PREFERENCE = ("test", "dev")

# Stable check codes (machine-readable reasons).
FIRST_MODEL = "first_model"
F1_FLOOR = "f1_floor"
LABEL_REGRESSION = "label_regression"
MISSING_LABEL = "missing_label"
NEW_LABEL = "new_label"
BEATS_PRODUCTION = "beats_production"
INVALID_METRICS = "invalid_metrics"
COMPARISON_SAME_DATA = "comparison_same_data"
COMPARISON_OWN_DATA = "comparison_own_data"
VALIDATED_EVAL = "validated_eval"

# How the production model was scored (GateDecision.comparison).
SAME_DATA = "same_data"
OWN_DATA = "own_data"
BASELINE_KEY = "production_baseline"
VALIDATED_EVAL_KEY = "validated_eval"  # metrics.json block and production_baseline sub-block


class MetricsError(ValueError):
    """metrics.json lacks the scores the gate needs (or they are not numbers in [0, 1])."""


@dataclass(frozen=True)
class ModelScores:
    """Micro-F1 and per-label F1 of one model on one evaluation split."""

    micro_f1: float
    per_label: Mapping[str, float]
    split: str

    def __post_init__(self) -> None:
        for name, value in [("micro_f1", self.micro_f1), *self.per_label.items()]:
            if not _is_score(value):
                raise MetricsError(f"{self.split} score {name!r} is not a number in [0, 1]")


@dataclass(frozen=True)
class Check:
    code: str
    passed: bool
    value: float | None = None
    threshold: float | None = None
    label: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "passed": self.passed}
        for key in ("value", "threshold", "label"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    checks: tuple[Check, ...]
    split: str | None
    candidate_f1: float | None
    production_f1: float | None
    thresholds: GateThresholds
    comparison: str | None = None  # SAME_DATA | OWN_DATA; None without a production model
    validated_eval: Mapping[str, Any] | None = None  # both scores on the users' notes, if any

    @property
    def failed(self) -> list[str]:
        return sorted({c.code for c in self.checks if not c.passed})

    def summary(self) -> str:
        """One line for humans (package approval description, e-mail subject line)."""
        verdict = "PASS" if self.passed else "FAIL"
        parts = [f"gate {verdict} on {self.split or 'no'} split"]
        if self.candidate_f1 is not None:
            parts.append(f"candidate micro-F1 {self.candidate_f1:.4f}")
        if self.production_f1 is not None:
            parts.append(f"production micro-F1 {self.production_f1:.4f}")
            if self.comparison == SAME_DATA:
                parts.append("production re-scored on the candidate's data")
            else:
                own = [c for c in self.checks if c.code == COMPARISON_OWN_DATA]
                parts.append(own[0].detail if own else "production scored on its own data")
        else:
            parts.append("no production model")
        if self.validated_eval is not None:
            v = self.validated_eval
            parts.append(
                f"validated set ({v['docs']} notes): candidate {v['candidate_f1']:.4f}, "
                f"production {v['production_f1']:.4f}"
            )
        for c in self.checks:
            if not c.passed:
                parts.append(c.detail or c.code)
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "decision": "pass" if self.passed else "fail",
            "failed": self.failed,
            "split": self.split,
            "candidate_f1": self.candidate_f1,
            "production_f1": self.production_f1,
            "comparison": self.comparison,
            "thresholds": {
                "f1_floor": self.thresholds.f1_floor,
                "per_label_regression_tolerance": self.thresholds.per_label_regression_tolerance,
                "min_improvement": self.thresholds.min_improvement,
                "validated_eval_tolerance": self.thresholds.validated_eval_tolerance,
            },
            "validated_eval": None if self.validated_eval is None else dict(self.validated_eval),
            "checks": [c.to_dict() for c in self.checks],
            "summary": self.summary(),
        }


def _is_score(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0.0 <= float(value) <= 1.0
    )


def available_splits(metrics: Mapping[str, Any]) -> list[str]:
    return [s for s in SPLITS_BY_PREFERENCE if isinstance(metrics.get(s), Mapping)]


def scores_from_metrics(metrics: Mapping[str, Any], split: str) -> ModelScores:
    """`ModelScores` of one split of a training job's metrics.json.

    Expects ``metrics[split] = {"ents_f": float, "per_label": {label: {"f": float, ...}}}``
    (`clinical_ner.model.evaluation.EntityScores.as_dict`).
    """
    block = metrics.get(split)
    if not isinstance(block, Mapping):
        raise MetricsError(f"metrics have no {split!r} scores")
    per_label_raw = block.get("per_label")
    if "ents_f" not in block or not isinstance(per_label_raw, Mapping):
        raise MetricsError(f"{split!r} scores lack ents_f or per_label")
    per_label: dict[str, float] = {}
    for label, scores in per_label_raw.items():
        if not isinstance(scores, Mapping) or "f" not in scores:
            raise MetricsError(f"{split!r} per-label scores of {label!r} lack 'f'")
        per_label[str(label)] = scores["f"]
    return ModelScores(micro_f1=block["ents_f"], per_label=per_label, split=split)


def choose_split(candidate: Mapping[str, Any], production: Mapping[str, Any] | None) -> str:
    """The preferred split both models were scored on (test over dev)."""
    cand = available_splits(candidate)
    if not cand:
        raise MetricsError("candidate metrics have neither test nor dev scores")
    if production is None:
        return cand[0]
    common = [s for s in cand if s in available_splits(production)]
    if not common:
        raise MetricsError("candidate and production metrics share no evaluation split")
    return common[0]


def evaluate(
    candidate: ModelScores,
    production: ModelScores | None,
    thresholds: GateThresholds,
    *,
    comparison: str = OWN_DATA,
    comparison_detail: str = "",
) -> GateDecision:
    """Apply the policy to already-extracted scores (see the module docstring).

    `comparison` (`SAME_DATA` or `OWN_DATA`) says where the production scores come from; it is
    recorded as a passing ``comparison_*`` check carrying `comparison_detail`. It is ignored
    without a production model.
    """
    if comparison not in (SAME_DATA, OWN_DATA):
        raise ValueError(f"comparison must be {SAME_DATA!r} or {OWN_DATA!r}")
    t = thresholds
    checks: list[Check] = []
    floor_ok = candidate.micro_f1 + EPSILON >= t.f1_floor
    checks.append(
        Check(
            F1_FLOOR,
            floor_ok,
            value=candidate.micro_f1,
            threshold=t.f1_floor,
            detail="" if floor_ok else f"micro-F1 {candidate.micro_f1:.4f} < floor {t.f1_floor}",
        )
    )
    if production is None:
        checks.append(Check(FIRST_MODEL, True, detail="no Approved package: floor alone decides"))
    else:
        if production.split != candidate.split:
            raise ValueError("candidate and production scores are from different splits")
        code = COMPARISON_SAME_DATA if comparison == SAME_DATA else COMPARISON_OWN_DATA
        checks.append(Check(code, True, detail=comparison_detail or comparison))
        for label in sorted(production.per_label):
            base = production.per_label[label]
            if label not in candidate.per_label:
                checks.append(
                    Check(
                        MISSING_LABEL,
                        False,
                        threshold=base,
                        label=label,
                        detail=f"label {label} missing from candidate",
                    )
                )
                continue
            value = candidate.per_label[label]
            drop = base - value
            ok = drop <= t.per_label_regression_tolerance + EPSILON
            checks.append(
                Check(
                    LABEL_REGRESSION,
                    ok,
                    value=value,
                    threshold=base - t.per_label_regression_tolerance,
                    label=label,
                    detail=""
                    if ok
                    else (
                        f"{label} F1 {value:.4f} dropped {drop:.4f} from {base:.4f} "
                        f"(tolerance {t.per_label_regression_tolerance})"
                    ),
                )
            )
        for label in sorted(set(candidate.per_label) - set(production.per_label)):
            checks.append(Check(NEW_LABEL, True, value=candidate.per_label[label], label=label))
        gain = candidate.micro_f1 - production.micro_f1
        ok = gain + EPSILON >= t.min_improvement
        checks.append(
            Check(
                BEATS_PRODUCTION,
                ok,
                value=candidate.micro_f1,
                threshold=production.micro_f1 + t.min_improvement,
                detail=""
                if ok
                else (
                    f"micro-F1 gain {gain:+.4f} over production {production.micro_f1:.4f} "
                    f"< required {t.min_improvement}"
                ),
            )
        )
    return GateDecision(
        passed=all(c.passed for c in checks),
        checks=tuple(checks),
        split=candidate.split,
        candidate_f1=candidate.micro_f1,
        production_f1=None if production is None else production.micro_f1,
        thresholds=t,
        comparison=None if production is None else comparison,
    )


def production_baseline(candidate_metrics: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The candidate's validated ``production_baseline`` block, or None when it has none.

    Raises `MetricsError` when the block is present but malformed.
    """
    if BASELINE_KEY not in candidate_metrics:
        return None
    block = candidate_metrics[BASELINE_KEY]
    if not isinstance(block, Mapping):
        raise MetricsError(f"{BASELINE_KEY} is not an object")
    version = block.get("model_version")
    if not isinstance(version, str) or not version:
        raise MetricsError(f"{BASELINE_KEY} lacks a model_version string")
    present = [s for s in SPLITS_BY_PREFERENCE if s in block]
    if not present:
        raise MetricsError(f"{BASELINE_KEY} has neither test nor dev scores")
    for split in present:
        try:
            scores_from_metrics(block, split)
        except MetricsError as exc:
            raise MetricsError(f"{BASELINE_KEY}: {exc}") from None
    return block


def decide(
    candidate_metrics: Mapping[str, Any],
    production_metrics: Mapping[str, Any] | None,
    thresholds: GateThresholds,
) -> GateDecision:
    """Gate two metrics.json documents; malformed candidate metrics fail the gate, never raise.

    With a production model, the candidate's ``production_baseline`` of the same
    ``model_version`` supplies the production scores (same data); otherwise production's own
    metrics do (own data), and the decision records why (see the module docstring).

    Production metrics that cannot be read raise `MetricsError` when they are needed (own-data
    comparison): the gate cannot judge a candidate against an unreadable production model, and
    must not treat it as "first model".
    """
    why = ""
    if production_metrics is not None:
        try:
            baseline = production_baseline(candidate_metrics)
        except MetricsError as exc:
            return _invalid(str(exc), thresholds)
        production_version = production_metrics.get("model_version")
        if baseline is not None and baseline["model_version"] == production_version:
            return _decide_same_data(candidate_metrics, baseline, thresholds)
        if baseline is None:
            why = f"candidate metrics have no {BASELINE_KEY}"
        else:
            why = (
                f"{BASELINE_KEY} scores model {baseline['model_version']} but production is "
                f"now {production_version}"
            )
    try:
        split = choose_split(candidate_metrics, production_metrics)
    except MetricsError as exc:
        if production_metrics is not None and available_splits(candidate_metrics):
            raise
        return _invalid(str(exc), thresholds)
    try:
        candidate = scores_from_metrics(candidate_metrics, split)
    except MetricsError as exc:
        return _invalid(str(exc), thresholds, split)
    if production_metrics is None:
        return evaluate(candidate, None, thresholds)
    production = scores_from_metrics(production_metrics, split)
    return evaluate(
        candidate,
        production,
        thresholds,
        comparison=OWN_DATA,
        comparison_detail=(
            f"production scored on its own training run's {split} split, not the candidate's "
            f"data ({why})"
        ),
    )


def _decide_same_data(
    candidate_metrics: Mapping[str, Any], baseline: Mapping[str, Any], thresholds: GateThresholds
) -> GateDecision:
    common = [
        s for s in available_splits(candidate_metrics) if isinstance(baseline.get(s), Mapping)
    ]
    if not common:
        return _invalid(f"candidate scores and {BASELINE_KEY} share no split", thresholds)
    split = common[0]
    try:
        candidate = scores_from_metrics(candidate_metrics, split)
        validated = validated_eval_scores(candidate_metrics, baseline)
    except MetricsError as exc:
        return _invalid(str(exc), thresholds, split)
    decision = evaluate(
        candidate,
        scores_from_metrics(baseline, split),  # validated by production_baseline()
        thresholds,
        comparison=SAME_DATA,
        comparison_detail=(
            f"production model {baseline['model_version']} scored on the candidate's {split} "
            "data in the training job"
        ),
    )
    if validated is None:
        return decision
    check = validated_eval_check(validated, thresholds)
    return dataclasses.replace(
        decision,
        checks=(*decision.checks, check),
        passed=decision.passed and check.passed,
        validated_eval={
            **validated,
            "tolerance": thresholds.validated_eval_tolerance,
            "passed": check.passed,
        },
    )


def validated_eval_scores(
    candidate_metrics: Mapping[str, Any], baseline: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Both models' micro-F1 on the validated evaluation set, or None when it was not scored.

    Needs the candidate's ``validated_eval`` block and the same-data baseline's; a block that
    is present but malformed raises `MetricsError` (the gate fails, never skips the rule).
    """
    cand, prod = candidate_metrics.get(VALIDATED_EVAL_KEY), baseline.get(VALIDATED_EVAL_KEY)
    if cand is None and prod is None:
        return None
    if not isinstance(cand, Mapping) or not isinstance(prod, Mapping):
        raise MetricsError(
            f"{VALIDATED_EVAL_KEY} scores must be present for both candidate and production"
        )
    docs = cand.get("docs")
    if isinstance(docs, bool) or not isinstance(docs, int) or docs < 1:
        raise MetricsError(f"{VALIDATED_EVAL_KEY}.docs must be a positive integer")
    scores = {}
    for who, block in (("candidate", cand), ("production", prod)):
        value = block.get("ents_f")
        if not _is_score(value):
            raise MetricsError(f"{who} {VALIDATED_EVAL_KEY}.ents_f is not a number in [0, 1]")
        scores[f"{who}_f1"] = float(value)
    return {"docs": docs, **scores}


def validated_eval_check(validated: Mapping[str, Any], thresholds: GateThresholds) -> Check:
    """Rule 5: the candidate may trail production on the users' notes by the tolerance only."""
    cand, prod = validated["candidate_f1"], validated["production_f1"]
    tolerance = thresholds.validated_eval_tolerance
    ok = prod - cand <= tolerance + EPSILON
    return Check(
        VALIDATED_EVAL,
        ok,
        value=cand,
        threshold=prod - tolerance,
        detail=""
        if ok
        else (
            f"validated-set micro-F1 {cand:.4f} is {prod - cand:.4f} below production's "
            f"{prod:.4f} on the same {validated['docs']} reviewed notes (tolerance {tolerance})"
        ),
    )


def _invalid(reason: str, thresholds: GateThresholds, split: str | None = None) -> GateDecision:
    return GateDecision(
        passed=False,
        checks=(Check(INVALID_METRICS, False, detail=f"candidate metrics unusable: {reason}"),),
        split=split,
        candidate_f1=None,
        production_f1=None,
        thresholds=thresholds,
    )
