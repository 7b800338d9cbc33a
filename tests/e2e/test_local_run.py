"""End to end: `clinical-ner local run` on the bundled SYNTHETIC samples, asserted on outcomes.

One run (module fixture) synthesizes the CDK app, runs the training state machine as
synthesized (Glue script on local Spark, `train` subprocess, real Lambdas against moto, the
`serve` process as endpoint), the extraction state machine three times (notes + reference
window, in-distribution window, shifted window), the named queries in DuckDB, the retraining
trigger and the retraining execution it starts (trained against the production model on the
same annotations: identical to production, so it is not registered). About 3 minutes on 2
cores; everything stays on 127.0.0.1.

The unsupported-construct check of the state-machine runner is
``tests/unit/test_asl.py::test_unsupported_constructs_fail_loudly`` (and
`test_runner_rejects_a_definition_it_cannot_run` below, through the runner's registry).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

pytest.importorskip("moto.server", reason="moto[server] missing: pip install '.[dev]'")
pytest.importorskip("pyspark", reason="pyspark missing: pip install '.[dev]'")
pytest.importorskip("duckdb", reason="duckdb missing")

from clinical_ner_local.asl import StateMachine, TaskRegistry, UnsupportedAslError  # noqa: E402
from clinical_ner_local.runner import RunOptions, run  # noqa: E402

MAX_STEPS = 150  # a short training job: scores are low, the loop is what is tested


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed (needed to synthesize the CDK app)")
    pytest.importorskip("aws_cdk", reason="aws-cdk-lib missing: pip install '.[infra]'")
    pytest.importorskip("matplotlib", reason="matplotlib missing")
    out = tmp_path_factory.mktemp("local-run")
    return run(RunOptions(output=out, max_steps=MAX_STEPS, progress=False))


def test_report_is_written_with_plots(local_run):
    assert local_run.report_path and local_run.report_path.is_file()
    text = local_run.report_path.read_text()
    for section in (
        "## Gate decision",
        "## Experiment tracking",
        "## Endpoint check",
        "## Named queries",
        "## Drift monitoring",
        "## Timings",
    ):
        assert section in text
    for png in ("per_label_prf.png", "confidence_hist.png", "drift_signals.png"):
        assert (local_run.output / png).stat().st_size > 1000
    json.loads((local_run.output / "report.json").read_text())


def test_training_pipeline_registers_approves_and_deploys(local_run):
    ex = local_run.training_execution
    assert ex["status"] == "SUCCEEDED", ex
    assert ex["states"][-1] == "Deployed"
    assert {
        "PrepareData",
        "Train",
        "Register",
        "Gate",
        "Approve",
        "Deploy",
        "VerifyDeployment",
    } <= set(ex["states"])
    assert local_run.gate["passed"] is True
    assert local_run.gate["comparison"] is None  # the first model: nothing to compare with
    first = next(p for p in local_run.registry if str(p["version"]) == "1")
    assert first["status"] == "Approved"
    assert first["model_data_url"].startswith("s3://clinical-ner-local-lake/models/")
    # the first deployment: the drift retraining is identical to production (no deploy); the
    # review loop's retraining may deploy a second model after it
    assert [m["message"]["event"] for m in local_run.sns_messages][:1] == ["model_deployed"]
    prepared = next(g for g in local_run.glue_reports if "dataset_version" in g)
    # synthetic_clinical_notes.jsonl: 90 notes, each in its own train/dev/test split
    assert prepared["docs_total"] == 90
    assert prepared["splits"] == _bundled_splits()


def test_register_step_logs_the_run_to_the_tracking_server(local_run):
    """The synthesized register Lambda, its env naming the tracking server's ARN, reaches the
    local mlflow server through the same SigV4 REST client it uses in AWS."""
    # The latest register step: the drift retraining's candidate, identical to production, so
    # the run is logged (the experiment keeps every training) but names no model package.
    t = local_run.retraining["tracking"]  # the drift retraining's register step
    assert t["status"] == "logged" and t["run_status"] == "FINISHED", t
    assert t["model_package_arn"] == "" and "sagemaker.model_package_arn" not in t["tags"]
    assert t["tags"]["trigger"] == "drift"
    assert t["tags"]["model_version"] == t["tags"]["production_model_version"]
    job = local_run.training_jobs[1]
    assert t["tags"]["model_artifact_uri"].endswith(f"/{job.job_name}/output/model.tar.gz")
    assert t["tags"]["dataset_version"].startswith("ds-")
    assert t["experiment"] == "clinical-ner-dev"
    assert t["metrics"]["dev_f1"] == job.metrics["summary"]["dev_f1"]
    assert t["metrics"]["production_test_f1"] == job.metrics["summary"]["production_test_f1"]
    assert t["params"] >= 5


def test_endpoint_answers(local_run):
    ep = local_run.endpoint
    assert ep["checked"] and ep["ping"] == 200 and ep["invocation_status"] == 200
    assert ep["status_in_emulator"] == "InService"
    labels = {e["label"] for e in ep["entities"]}
    assert labels <= _model_labels(local_run)
    for e in ep["entities"]:
        assert ep["request_text"][e["start_char"] : e["end_char"]] == e["text"]


def test_bad_records_are_quarantined_not_dropped(local_run):
    first = local_run.extraction_runs[0]["validate"]
    assert first["in"] == first["curated"] + first["quarantined"]
    assert first["quarantined"] == 7  # synthetic_notes_bad.jsonl: 7 of its 8 lines are bad
    assert set(first["quarantined_by_reason"]) >= {
        "malformed_json",
        "missing_field",
        "empty_text",
        "duplicate_note_id",
    }


def test_entity_rows_have_valid_offsets(local_run):
    rows = local_run.entity_rows
    assert len(rows) > 1000
    checked = 0
    for r in rows:
        assert 0 <= r["start_char"] < r["end_char"]
        assert r["label"] in _model_labels(local_run)
        text = local_run.notes_text.get(r["note_id"])
        if text is not None:
            assert text[r["start_char"] : r["end_char"]] == r["text"]
            checked += 1
    assert checked == len(rows)  # every note is a bundled synthetic note with known text


def test_every_named_query_returns_rows(local_run):
    from clinical_ner.data.analytics import QUERIES

    assert set(local_run.queries) == {q.name for q in QUERIES}
    for name, q in local_run.queries.items():
        assert q["rows"], f"named query {name} returned no rows"


def test_drift_decisions_on_the_windows(local_run):
    decisions = [(d["label"].split(" (")[0], d["decision"], d["action"]) for d in local_run.drift]
    # docs/local-mode.md: the first window establishes the production reference, the
    # in-distribution window shows no drift, the shifted window (some sections from another
    # clinic) moderate drift -> retrain.
    assert decisions == [
        ("sample notes + reference window", "reference_established", "none"),
        ("in-distribution window", "none", "none"),
        ("shifted window", "moderate", "retrain"),
    ]
    shifted = local_run.drift[-1]["report"]["signals"]
    assert shifted["oov_rate_increase"]["level"] == "moderate"


def test_moderate_drift_starts_one_retraining_execution(local_run):
    rt = local_run.retraining
    assert rt["invoked"] and rt["first_call"]["started"] is True
    assert rt["second_call"]["started"] is False  # debounced
    assert len(rt["executions"]) == 1
    assert rt["execution_input"]["trigger"] == "drift"


def test_a_retrain_identical_to_production_is_not_registered(local_run):
    """The drift execution trains against production on the same annotations, config and
    seed: the candidate is the production model (same version), so it is neither registered,
    gated nor deployed, and the run says so."""
    rt = local_run.retraining
    states = rt["execution"]["states"]
    assert rt["execution"]["status"] == "SUCCEEDED", rt["execution"]
    assert "TrainAgainstProduction" in states and "Train" not in states
    assert states[-1] == "NotRegisteredIdentical" and "Gate" not in states
    first_job, retrain_job = local_run.training_jobs[:2]
    assert retrain_job.metrics["model_version"] == first_job.metrics["model_version"]
    assert (
        retrain_job.metrics["production_baseline"]["model_version"]
        == (first_job.metrics["model_version"])
    )
    statuses = {str(p["version"]): p["status"] for p in local_run.registry}
    assert statuses["1"] == "Approved"
    assert set(statuses) <= {"1", "2"}  # "2": the review loop's candidate, if any


def test_review_loop_reviews_retrains_and_reports_kpis(local_run):
    """The scripted reviewer's SYNTHETIC corrections through the workbench API start one
    reviewed_annotations retraining that trains against production with the validated set."""
    review = local_run.review
    before = review["before"]
    assert before["submitted"] == 40 and before["statuses"] == {"submit 200": 40}
    assert {"accepted", "added"} <= set(before["decisions"])
    kpis = before["kpis"]
    assert kpis["notes_reviewed"] == 40 and 0 < kpis["production_precision"] <= 1
    started = [c for c in review["trigger_calls"] if c.get("started")]
    assert len(started) == 1 and started[0]["trigger"] == "reviewed_annotations"
    rt = review["retraining"]
    assert rt["input"]["trigger"] == "reviewed_annotations"
    assert "TrainAgainstProductionValidated" in rt["execution"]["states"]
    assert rt["validated_eval"]["docs"] >= 1
    assert rt["gate"]["validated_eval"]["docs"] == rt["validated_eval"]["docs"]
    assert "ReviewedNotes" in review["metrics_published"]
    if rt["execution"]["states"][-1] == "Deployed":  # held-back notes, read by the new model
        after = review["after"]
        assert after["model_version"] == rt["candidate_version"] != before["model_version"]
        assert after["statuses"] == {"submit 200": 20}
        assert after["kpis"]["notes_reviewed"] == 20
    text = local_run.report_path.read_text()
    assert "## Review loop" in text and "| production precision |" in text
    assert "Validated evaluation set" in text
    assert (local_run.output / "review_kpis.png").stat().st_size > 1000


def test_report_shows_support_and_what_the_scores_mean(local_run):
    text = local_run.report_path.read_text()
    assert "| label | dev P | dev R | dev F1 | dev support | test P |" in text
    for split in ("dev", "test"):
        per_label = local_run.metrics[split]["per_label"]
        for label in _model_labels(local_run):
            support = per_label.get(label, {}).get("support", 0)
            assert f"| {label} |" in text and support >= 0
    assert "Strict scores" in text and "SYNTHETIC" in text
    # realistic notes: the held-out test split is not trivially perfect
    assert local_run.metrics["test"]["ents_f"] < 1.0


def _model_labels(local_run) -> set[str]:
    return set(local_run.training_jobs[0].metrics["labels"])


def _bundled_splits() -> dict[str, int]:
    path = REPO_ROOT / "clinical_ner" / "samples" / "synthetic_clinical_notes.jsonl"
    counts: dict[str, int] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        split = json.loads(line)["split"]
        counts[split] = counts.get(split, 0) + 1
    return counts


def test_runner_rejects_a_definition_it_cannot_run():
    definition = {
        "StartAt": "Everything",
        "States": {
            "Everything": {
                "Type": "Map",
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                    "StartAt": "One",
                    "States": {"One": {"Type": "Pass", "End": True}},
                },
                "End": True,
            }
        },
    }
    with pytest.raises(UnsupportedAslError) as info:
        StateMachine(definition, TaskRegistry())
    assert "Everything" in str(info.value)
