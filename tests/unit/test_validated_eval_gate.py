"""The gate on the users' own notes: the validated evaluation set scored for both models.

Policy (rule 5 of `clinical_ner.pipeline.gating`): refused when the candidate is worse than
production there by more than ``validated_eval_tolerance``; passed when equal or better;
not applied without the set. The training job test runs the `train` entry with a tiny
validated channel and the session's tiny model as production.
"""

from __future__ import annotations

import json
import shutil

import pytest
from test_production_baseline import channel_docs, data_lines, job_root, production_channel

from clinical_ner.model.inference import NerModel
from clinical_ner.model.scoring import evaluate_docs
from clinical_ner.pipeline import gating
from clinical_ner.pipeline.stage_config import GateThresholds
from clinical_ner.runtime.sagemaker_train import main as train_main

THRESHOLDS = GateThresholds(0.5, 0.05, 0.0, validated_eval_tolerance=0.02)


def _scores(f1: float, docs: int = 40) -> dict:
    return {"ents_f": f1, "per_label": {"DISEASE": {"f": f1}}, "docs": docs}


def _metrics(candidate_validated: float | None, production_validated: float | None) -> tuple:
    candidate = {"model_version": "c", "test": _scores(0.80)}
    baseline = {"model_version": "p", "test": _scores(0.80)}
    if candidate_validated is not None:
        candidate["validated_eval"] = _scores(candidate_validated, 12)
    if production_validated is not None:
        baseline["validated_eval"] = _scores(production_validated, 12)
    candidate["production_baseline"] = baseline
    return candidate, {"model_version": "p", "test": _scores(0.80)}


@pytest.mark.parametrize(
    ("cand", "prod", "passed"),
    [
        (0.70, 0.75, False),  # 0.05 worse: beyond the 0.02 tolerance
        (0.7399, 0.76, False),  # just beyond
        (0.74, 0.76, True),  # exactly the tolerance
        (0.75, 0.75, True),  # equal
        (0.80, 0.75, True),  # better
    ],
)
def test_validated_set_rule(cand, prod, passed):
    candidate, production = _metrics(cand, prod)
    decision = gating.decide(candidate, production, THRESHOLDS)
    assert decision.comparison == "same_data"
    assert decision.passed is passed
    assert ("validated_eval" in decision.failed) is (not passed)
    out = decision.to_dict()
    assert out["validated_eval"] == {
        "docs": 12,
        "candidate_f1": cand,
        "production_f1": prod,
        "tolerance": 0.02,
        "passed": passed,
    }
    assert "validated set (12 notes)" in decision.summary()
    if not passed:  # the reject step's approval description says why
        assert "below production's" in decision.summary()


def test_without_the_set_the_rule_is_not_applied():
    candidate, production = _metrics(None, None)
    decision = gating.decide(candidate, production, THRESHOLDS)
    assert decision.passed and decision.to_dict()["validated_eval"] is None
    assert "validated_eval" not in {c.code for c in decision.checks}


@pytest.mark.parametrize(("cand", "prod"), [(0.7, None), (None, 0.7), ("x", 0.7)])
def test_a_half_or_malformed_validated_block_fails_the_gate(cand, prod):
    candidate, production = _metrics(0.7 if cand == "x" else cand, prod)
    if cand == "x":
        candidate["validated_eval"]["ents_f"] = "high"
    decision = gating.decide(candidate, production, THRESHOLDS)
    assert not decision.passed and decision.failed == ["invalid_metrics"]


def test_stage_config_round_trips_the_tolerance():
    from clinical_ner.pipeline.stage_config import StageConfig, load_stage_config

    cfg = load_stage_config("prod")
    assert StageConfig.from_json(cfg.to_json()).gate.validated_eval_tolerance == 0.02


def test_training_job_scores_both_models_on_the_validated_set(
    tmp_path, monkeypatch, tiny_model_dir
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SM_ROOT", raising=False)
    root = job_root(tmp_path)
    shutil.copytree(tiny_model_dir, production_channel(root), dirs_exist_ok=True)
    validated = root / "input" / "data" / "validated_eval"
    validated.mkdir()
    # Reviewed notes as the review loop writes them: one doccano JSONL file per note.
    for i, line in enumerate(data_lines()[200:206]):
        (validated / f"{i:064x}.jsonl").write_text(line + "\n")
    (validated / ".keep").write_text("")
    assert train_main(["--root", str(root)]) == 0
    metrics = json.loads((root / "model" / "metrics.json").read_text())
    docs = []
    for path in sorted(validated.glob("*.jsonl")):
        from clinical_ner.model.readers import read_annotations

        docs += read_annotations([path])[0]
    production = NerModel.load(tiny_model_dir)
    expected = evaluate_docs(production, docs)
    block = metrics["validated_eval"]
    assert block["docs"] == 6 and len(block["files"]) == 6
    assert metrics["production_baseline"]["validated_eval"]["docs"] == 6
    assert metrics["production_baseline"]["validated_eval"]["ents_f"] == expected["ents_f"]
    candidate = NerModel.load(root / "model")
    assert block["ents_f"] == evaluate_docs(candidate, docs)["ents_f"]
    assert metrics["summary"]["validated_eval_f1"] == block["ents_f"]
    assert metrics["summary"]["production_validated_eval_f1"] == expected["ents_f"]
    # never trained on: the validated docs are not among the job's training data
    assert not any("validated_eval" in f for f in metrics["training_data"])
    decision = gating.decide(
        metrics,
        json.loads((tiny_model_dir / "metrics.json").read_text()),
        GateThresholds(0.0, 1.0, -1.0, validated_eval_tolerance=1.0),
    )
    assert decision.to_dict()["validated_eval"]["production_f1"] == expected["ents_f"]
    assert channel_docs(root, "test")  # the regular channels are untouched


def test_an_empty_validated_channel_counts_as_absent(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = job_root(tmp_path)
    (root / "input" / "data" / "validated_eval").mkdir()
    assert train_main(["--root", str(root)]) == 0
    metrics = json.loads((root / "model" / "metrics.json").read_text())
    assert "validated_eval" not in metrics
