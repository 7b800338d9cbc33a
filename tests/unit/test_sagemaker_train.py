"""The container's `train` entry: SageMaker layout in, model + metrics + baseline out, failures."""

from __future__ import annotations

import json
import sys

import pytest
from sagemaker_job import (
    EXPERIMENT,
    JOB_NAME,
    SAMPLES,
    STEPS,
    job_env,
    make_job_root,
    run_train,
    trained_job,
)

from clinical_ner.model import drift
from clinical_ner.model.inference import MODEL_CARD_FILE, NerModel
from clinical_ner.pipeline.tracking import log_training_run, redact_uri
from clinical_ner.runtime.sagemaker_train import (
    TrainJobError,
    channel_files,
    failure_reason,
    parse_hyperparameters,
    resolve_root,
)
from clinical_ner.runtime.sagemaker_train import main as train_main

SECRET = "Zelda Quokkaberg MRN-99417"


@pytest.fixture(scope="session")
def job():
    return trained_job()


# --------------------------------------------------------------------------- a real job


def test_train_writes_a_loadable_model_metrics_and_baseline(job):
    model_dir = job.model
    for name in ("config.cfg", "meta.json", MODEL_CARD_FILE, "metrics.json", drift.BASELINE_FILE):
        assert (model_dir / name).is_file(), name
    assert not (job.root / "output" / "failure").exists()
    model = NerModel.load(model_dir)
    [entities] = list(model.predict(["Metformin was started for asthma."]))
    assert all(e.label in {"DISEASE", "TREATMENT"} for e in entities)

    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["model_version"] == model.version
    assert metrics["dev_source"] == "hash split of train"
    assert 0.0 <= metrics["dev"]["ents_f"] <= 1.0
    assert metrics["test"]["docs"] == 40  # the test channel is scored
    assert set(metrics["test"]["per_label"]) >= {"DISEASE", "TREATMENT"}
    assert metrics["hyperparameters"]["override.training.max_steps"] == STEPS
    assert metrics["label_map"]["D"] == "DISEASE"
    # Channel files are recorded relative to the root, hidden files are not data.
    assert set(metrics["training_data"]) == {
        "input/data/train/part-0.jsonl",
        "input/data/test/test.jsonl",
    }
    # SageMaker MetricDefinitions read these lines from the log.
    assert f"METRIC dev_f1={metrics['dev']['ents_f']}" in job.result.stdout
    assert f"METRIC test_f1={metrics['test']['ents_f']}" in job.result.stdout
    # The label-independent name the state machine's MetricDefinitions use (weakest label).
    worst = min(s["f"] for s in metrics["test"]["per_label"].values())
    assert f"METRIC test_min_label_f1={worst}" in job.result.stdout


def test_drift_baseline_profiles_the_training_texts(job):
    profile = drift.load_profile(job.model / drift.BASELINE_FILE)
    metrics = json.loads((job.model / "metrics.json").read_text())
    assert profile["kind"] == "baseline"
    assert profile["model_version"] == metrics["model_version"]
    assert profile["notes"] == metrics["train_docs"]
    assert set(profile["labels"]) == {"DISEASE", "TREATMENT"}
    assert profile["entities"]["total"] > 0
    assert profile["vocabulary"]["min_doc_freq"] >= 5
    assert metrics["drift_baseline"]["notes"] == profile["notes"]
    # A window of training-like notes compares cleanly against it.
    texts = [json.loads(line)["text"] for line in SAMPLES.read_text().splitlines()[:60]]
    model = NerModel.load(job.model)
    window = drift.build_profile(texts, list(model.predict(texts)), reference=profile)
    signals = drift.compare(profile, window)
    assert signals["psi_label_mix"] is not None and signals["psi_label_mix"] < 0.1


def test_training_run_is_recorded_in_mlflow(job, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 opt-in for file stores
    metrics = json.loads((job.model / "metrics.json").read_text())
    tracking = metrics["tracking"]
    assert tracking["status"] == "logged", tracking
    client = MlflowClient(tracking_uri=job.mlruns.as_uri())
    run = client.get_run(tracking["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == EXPERIMENT
    assert run.info.run_name == JOB_NAME
    assert run.data.params["seed"] == "0"
    assert run.data.params["override.training.max_steps"] == str(STEPS)
    assert run.data.metrics["dev_f1"] == pytest.approx(metrics["dev"]["ents_f"])
    assert run.data.metrics["test_f1"] == pytest.approx(metrics["test"]["ents_f"])
    assert run.data.tags["model_version"] == metrics["model_version"]
    assert run.data.tags["model_artifact_uri"].endswith("model.tar.gz")
    assert run.data.tags["sagemaker.training_job_name"] == JOB_NAME
    # The register step rebuilds this run from metrics.json alone (the deployed job is
    # network-isolated): same params and metrics as the job logged itself.
    from clinical_ner.pipeline.tracking import run_record

    rebuilt = run_record(
        metrics, job_name=JOB_NAME, artifact_uri=run.data.tags["model_artifact_uri"]
    )
    assert run.data.params == {k: v[:500] for k, v in rebuilt.params.items()}
    assert run.data.metrics == pytest.approx(rebuilt.metrics)
    assert rebuilt.tags.items() <= run.data.tags.items()


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("channel_file", "content", "expected"),
    [
        # Invalid JSON in the middle of a JSONL file: named by file and line.
        ("bad.jsonl", '{"text": "ok", "label": []}\n{"text": "' + SECRET + '", "label": [\n', ":2"),
        # A span past the end of its text.
        ("span.jsonl", json.dumps({"text": SECRET, "label": [[0, 999, "DISEASE"]]}), ":1"),
        # A tag column that is not a tag.
        ("bad.tsv", f"{SECRET.split()[0]}\tB-NOT A TAG\n", ":1"),
    ],
)
def test_bad_channel_writes_failure_without_data_text(
    tmp_path, capsys, caplog, channel_file, content, expected
):
    root = make_job_root(tmp_path / "opt-ml", {"training.max_steps": "5"})
    (root / "input" / "data" / "train").mkdir()
    (root / "input" / "data" / "train" / channel_file).write_text(content)
    assert train_main(["--root", str(root)]) == 1
    failure = (root / "output" / "failure").read_text()
    assert channel_file in failure and expected in failure
    captured = capsys.readouterr()
    for part in SECRET.split():
        assert part not in failure
        assert part not in captured.out + captured.err + caplog.text
    assert not (root / "model" / "metrics.json").exists()


@pytest.mark.parametrize(
    ("hyperparameters", "setup", "needle"),
    [
        ({"max_step": "5"}, "train", "unknown hyperparameter(s): max_step"),
        ({"seed": "zero"}, "train", "'seed' must be an integer"),
        ({"dev_fraction": "0.9"}, "train", "dev_fraction"),
        ({}, None, "required channel 'train' not found"),
        ({}, "empty", "channel 'train' has no data files"),
    ],
)
def test_bad_configuration_fails_fast_with_a_clear_reason(tmp_path, hyperparameters, setup, needle):
    root = make_job_root(tmp_path / "opt-ml", hyperparameters)
    if setup:
        (root / "input" / "data" / "train").mkdir()
    if setup == "train":
        (root / "input" / "data" / "train" / "a.jsonl").write_text(SAMPLES.read_text())
    assert train_main(["--root", str(root)]) == 1
    assert needle in (root / "output" / "failure").read_text()


def test_malformed_hyperparameters_file_via_the_container_script(tmp_path):
    root = make_job_root(tmp_path / "opt-ml", {})
    (root / "input" / "config" / "hyperparameters.json").write_text("{not json")
    result = run_train(root, job_env(), timeout=120)
    assert result.returncode == 1
    assert "hyperparameters.json is not valid JSON" in (root / "output" / "failure").read_text()


def test_unexpected_errors_report_type_and_place_not_message():
    try:
        raise RuntimeError(f"spaCy said something about {SECRET}")
    except RuntimeError as exc:
        reason = failure_reason(exc)
    assert "RuntimeError" in reason and "test_sagemaker_train.py" in reason
    assert SECRET not in reason


# --------------------------------------------------------------------------- parsing


def test_hyperparameters_arrive_as_strings_and_are_typed():
    hp = parse_hyperparameters(
        {
            "seed": "7",
            "max_steps": "40",
            "format": "jsonl",
            "labels": '{"D": "DISEASE", "Chemical": "O"}',
            "dev_fraction": "0.2",
            "training.dropout": "0.2",
            "components.ner.model.hidden_width": "32",
            "sagemaker_program": "ignored",
        }
    )
    assert hp.seed == 7 and hp.fmt == "jsonl" and hp.dev_fraction == 0.2
    assert hp.labels == "D=DISEASE,Chemical=O"
    assert hp.overrides == {
        "training.max_steps": 40,
        "training.dropout": 0.2,
        "components.ner.model.hidden_width": 32,
    }
    assert parse_hyperparameters({"labels": "T=TREATMENT"}).labels == "T=TREATMENT"
    for bad in (
        {"format": "xml"},
        {"labels": "{oops"},
        {"labels": "novalue"},
        {"max_steps": "0"},
        {"batch_size": "-1"},
    ):
        with pytest.raises(TrainJobError):
            parse_hyperparameters(bad)


def test_channel_files_pair_sent_label_and_skip_hidden(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("train_sent", "train_label", "sub/b.jsonl", ".manifest", "a.tsv"):
        (tmp_path / name).write_text("x")
    assert [p.relative_to(tmp_path).as_posix() for p in channel_files(tmp_path)] == [
        "a.tsv",
        "sub/b.jsonl",
        "train_sent",
    ]


def test_root_resolution(monkeypatch):
    monkeypatch.delenv("SM_ROOT", raising=False)
    assert str(resolve_root(None)) == "/opt/ml"
    monkeypatch.setenv("SM_ROOT", "/tmp/x")
    assert str(resolve_root(None)) == "/tmp/x"
    assert str(resolve_root("/tmp/y")) == "/tmp/y"


# --------------------------------------------------------------------------- tracking


def test_tracking_is_disabled_without_uri_or_client(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    kwargs = {"params": {}, "metrics": {}, "tags": {}, "run_name": "r"}
    assert log_training_run(**kwargs)["status"] == "disabled"
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    outcome = log_training_run(**kwargs, tracking_uri="file:/nonexistent")
    assert outcome == {"status": "disabled", "reason": "mlflow client not installed"}


def test_tracking_errors_never_fail_training(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store should be")
    outcome = log_training_run(
        params={"a": 1}, metrics={"m": 1.0}, tags={}, run_name="r", tracking_uri=blocker.as_uri()
    )
    assert outcome["status"] == "failed"


def test_redact_uri():
    assert redact_uri("https://user:pw@mlflow.example/x") == "https://***@mlflow.example/x"
    assert redact_uri("file:///tmp/mlruns") == "file:///tmp/mlruns"
