"""The `production` channel of the `train` entry: the production model re-scored on the
candidate's own dev/test docs (metrics.json["production_baseline"]), and every way the channel
can be unusable failing the job with a clear reason.

The production model is the session's tiny model (conftest `tiny_model_dir`); candidate jobs
train for a handful of steps only, and failure cases stop before training starts.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
from sagemaker_job import SAMPLES, job_env, make_job_root, run_train

from clinical_ner.model.inference import MODEL_CARD_FILE, NerModel
from clinical_ner.model.readers import parse_label_map, read_annotations
from clinical_ner.model.scoring import evaluate_docs
from clinical_ner.pipeline import gating
from clinical_ner.pipeline.stage_config import GateThresholds
from clinical_ner.runtime.sagemaker_train import JobPaths, TrainJobError, production_baseline
from clinical_ner.runtime.sagemaker_train import main as train_main

SECRET = "Zelda Quokkaberg MRN-99417"
CANDIDATE_STEPS = "4"
TIMING_KEYS = {"seconds", "words_per_second"}  # the only keys that differ between two runs


def tar_model(model_dir: Path, archive: Path, prefix: str = "./") -> Path:
    """A model.tar.gz the way SageMaker packs /opt/ml/model (member names like ./config.cfg)."""
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(model_dir.rglob("*")):
            tar.add(path, arcname=prefix + path.relative_to(model_dir).as_posix(), recursive=False)
    return archive


@pytest.fixture(scope="session")
def production_archive(tiny_model_dir, tmp_path_factory) -> Path:
    return tar_model(tiny_model_dir, tmp_path_factory.mktemp("production") / "model.tar.gz")


@pytest.fixture(scope="session")
def production_model(tiny_model_dir) -> NerModel:
    return NerModel.load(tiny_model_dir)


def without_timing(scores: dict) -> dict:
    return {k: v for k, v in scores.items() if k not in TIMING_KEYS}


def data_lines() -> list[str]:
    return SAMPLES.read_text().splitlines()


def job_root(tmp_path: Path, hyperparameters: dict[str, str] | None = None) -> Path:
    """Train, dev and test channels from the synthetic samples (a few steps of training)."""
    root = make_job_root(
        tmp_path / "opt-ml", hyperparameters or {"training.max_steps": CANDIDATE_STEPS}
    )
    lines = data_lines()
    for channel, part in (("train", lines[:150]), ("dev", lines[150:200]), ("test", lines[200:])):
        (root / "input" / "data" / channel).mkdir()
        (root / "input" / "data" / channel / f"{channel}.jsonl").write_text("\n".join(part) + "\n")
    return root


def channel_docs(root: Path, channel: str, labels: dict[str, str] | None = None) -> list:
    docs, _ = read_annotations(
        [root / "input" / "data" / channel / f"{channel}.jsonl"], "auto", labels
    )
    return docs


def production_channel(root: Path) -> Path:
    channel = root / "input" / "data" / "production"
    channel.mkdir(parents=True)
    return channel


# --------------------------------------------------------------------------- real jobs


@pytest.mark.parametrize("form", ["archive", "directory"])
def test_job_scores_the_production_model_on_the_candidates_docs(
    tmp_path, capsys, monkeypatch, form, tiny_model_dir, production_archive, production_model
):
    root = job_root(tmp_path)
    channel = production_channel(root)
    mlruns = tmp_path / "mlruns"
    if form == "archive":
        # As SageMaker runs it: the container script in a fresh process, MLflow on.
        shutil.copy(production_archive, channel / "model.tar.gz")
        result = run_train(root, job_env(MLFLOW_TRACKING_URI=mlruns.as_uri()), timeout=300)
        assert result.returncode == 0, result.stdout[-3000:]
        stdout = result.stdout
    else:
        shutil.copytree(tiny_model_dir, channel, dirs_exist_ok=True)
        for key in ("MLFLOW_TRACKING_URI", "SM_ROOT"):
            monkeypatch.delenv(key, raising=False)
        assert train_main(["--root", str(root)]) == 0
        stdout = capsys.readouterr().out

    metrics = json.loads((root / "model" / "metrics.json").read_text())
    baseline = metrics["production_baseline"]
    assert set(baseline) == {"model_version", "dev", "test"}
    assert baseline["model_version"] == production_model.version != metrics["model_version"]
    # Same shape as the candidate's own blocks, so the gate reads both the same way.
    assert set(baseline["dev"]) == set(metrics["dev"])
    assert set(baseline["test"]) == set(metrics["test"])
    assert baseline["test"]["docs"] == metrics["test"]["docs"] == 40
    assert baseline["test"]["data_report"] == metrics["test"]["data_report"]
    # The numbers are the production model's on exactly the candidate's dev and test docs.
    for split in ("dev", "test"):
        expected = evaluate_docs(production_model, channel_docs(root, split))
        got = {k: v for k, v in baseline[split].items() if k != "data_report"}
        assert without_timing(got) == without_timing(expected), split
        assert got["model_version"] == production_model.version
        assert metrics[split]["docs"] == got["docs"]
    # Summary, METRIC lines (MetricDefinitions) and MLflow.
    summary = metrics["summary"]
    assert summary["production_dev_f1"] == baseline["dev"]["ents_f"]
    assert summary["production_test_f1"] == baseline["test"]["ents_f"]
    assert f"METRIC production_dev_f1={baseline['dev']['ents_f']}" in stdout
    assert f"METRIC production_test_f1={baseline['test']['ents_f']}" in stdout
    if form == "archive":
        from mlflow.tracking import MlflowClient

        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        run = MlflowClient(tracking_uri=mlruns.as_uri()).get_run(metrics["tracking"]["run_id"])
        assert run.data.metrics["production_test_f1"] == pytest.approx(baseline["test"]["ents_f"])
        assert run.data.metrics["production_dev_f1"] == pytest.approx(baseline["dev"]["ents_f"])
        assert run.data.tags["production_model_version"] == production_model.version
    # The production model is input, never part of the candidate's data or its model.
    assert not any("production" in f for f in metrics["training_data"])
    assert not (root / "model" / "model.tar.gz").exists()

    # End to end: the gate uses the baseline against production's own metrics.json.
    production_metrics = json.loads((tiny_model_dir / "metrics.json").read_text())
    decision = gating.decide(metrics, production_metrics, GateThresholds(0.0, 1.0, -1.0))
    assert decision.comparison == "same_data" and decision.split == "test"
    assert decision.production_f1 == baseline["test"]["ents_f"]


def test_job_without_production_channel_has_no_baseline(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = job_root(tmp_path)
    (root / "input" / "data" / "test" / "test.jsonl").unlink()
    (root / "input" / "data" / "test").rmdir()
    assert train_main(["--root", str(root)]) == 0
    metrics = json.loads((root / "model" / "metrics.json").read_text())
    assert "production_baseline" not in metrics
    assert not any(k.startswith("production_") for k in metrics["summary"])
    assert "METRIC production_" not in capsys.readouterr().out


# --------------------------------------------------------------------------- the baseline itself


@pytest.mark.parametrize("form", ["archive ./names", "archive plain names", "directory", "nested"])
def test_baseline_from_every_channel_form(tmp_path, form, tiny_model_dir, production_model):
    root = job_root(tmp_path)
    channel = production_channel(root)
    if form == "archive ./names":
        tar_model(tiny_model_dir, channel / "model.tar.gz")
    elif form == "archive plain names":
        tar_model(tiny_model_dir, channel / "model.tar.gz", prefix="")
    elif form == "directory":
        shutil.copytree(tiny_model_dir, channel, dirs_exist_ok=True)
    else:  # an extracted model in the channel's only subdirectory
        shutil.copytree(tiny_model_dir, channel / "model")
    (channel / ".sagemaker-manifest").write_text("hidden files are ignored\n")
    dev, test = channel_docs(root, "dev"), channel_docs(root, "test")
    baseline = production_baseline(JobPaths(root), dev, (test, {"docs": len(test)}), 64)
    assert baseline is not None
    assert baseline["model_version"] == production_model.version
    assert without_timing(baseline["dev"]) == without_timing(evaluate_docs(production_model, dev))
    assert baseline["test"]["data_report"] == {"docs": len(test)}
    assert baseline["test"]["ents_f"] == evaluate_docs(production_model, test)["ents_f"]
    assert list(channel.iterdir())  # the channel (read-only in SageMaker) is left as it was


def test_baseline_without_test_channel_has_dev_only(tmp_path, tiny_model_dir):
    root = job_root(tmp_path)
    shutil.copytree(tiny_model_dir, production_channel(root), dirs_exist_ok=True)
    baseline = production_baseline(JobPaths(root), channel_docs(root, "dev"), None, 64)
    assert baseline is not None and set(baseline) == {"model_version", "dev"}
    assert production_baseline(JobPaths(tmp_path / "no-channel"), [], None, 64) is None


def test_gold_labels_the_production_model_lacks_score_zero(tmp_path, tiny_model_dir):
    """The candidate's data renames TREATMENT to DRUG: production never predicts DRUG."""
    root = job_root(tmp_path)
    shutil.copytree(tiny_model_dir, production_channel(root), dirs_exist_ok=True)
    labels = parse_label_map("TREATMENT=DRUG")
    dev = channel_docs(root, "dev", labels)
    assert {e.label for d in dev for e in d.entities} == {"DISEASE", "DRUG"}
    baseline = production_baseline(JobPaths(root), dev, None, 64)
    assert baseline is not None
    per_label = baseline["dev"]["per_label"]
    assert per_label["DRUG"]["f"] == 0.0 and per_label["DRUG"]["fn"] > 0
    assert per_label["DISEASE"]["f"] > 0.0
    # Production's own label stays visible (its predictions are false positives here).
    assert per_label["TREATMENT"]["f"] == 0.0 and per_label["TREATMENT"]["support"] == 0
    assert baseline["dev"]["unknown_gold_labels"] == ["DRUG"]


# --------------------------------------------------------------------------- unusable channels


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes, **attrs: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data))


def evil_archive(channel: Path, kind: str, model_dir: Path) -> None:
    with tarfile.open(channel / "model.tar.gz", "w:gz") as tar:
        for path in sorted(model_dir.rglob("*")):  # a real model, plus one bad member
            tar.add(path, arcname="./" + path.relative_to(model_dir).as_posix(), recursive=False)
        if kind == "traversal":
            add_bytes(tar, f"../../{SECRET}.txt", b"escaped")
        elif kind == "absolute":
            add_bytes(tar, f"/tmp/{SECRET}.txt", b"escaped")
        elif kind == "symlink":
            add_bytes(tar, "./link", b"", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        elif kind == "hardlink":
            add_bytes(tar, "./hard", b"", type=tarfile.LNKTYPE, linkname="config.cfg")
        elif kind == "device":
            add_bytes(tar, "./dev", b"", type=tarfile.CHRTYPE)


def corrupt_model(channel: Path, kind: str, model_dir: Path, archive: Path) -> None:
    if kind == "truncated archive":
        data = archive.read_bytes()
        (channel / "model.tar.gz").write_bytes(data[: len(data) // 2])
    elif kind == "not an archive":
        (channel / "model.tar.gz").write_text(f"{SECRET}\n")
    elif kind.startswith("one flipped bit"):
        # Inside the weights: every member still reads, tarfile itself notices nothing; only
        # the gzip CRC does.
        data = bytearray(archive.read_bytes())
        data[len(data) * int(kind[-2:]) // 100] ^= 0x01
        (channel / "model.tar.gz").write_bytes(bytes(data))
    elif kind == "archive without model":
        with tarfile.open(channel / "model.tar.gz", "w:gz") as tar:
            add_bytes(tar, "./metrics.json", b"{}")
    elif kind == "two archives":
        shutil.copy(archive, channel / "model.tar.gz")
        shutil.copy(archive, channel / "older.tar.gz")
    elif kind == "empty channel":
        pass
    elif kind == "no model card":
        shutil.copytree(model_dir, channel, dirs_exist_ok=True)
        (channel / MODEL_CARD_FILE).unlink()
    elif kind == "unreadable model card":
        shutil.copytree(model_dir, channel, dirs_exist_ok=True)
        (channel / MODEL_CARD_FILE).write_text("{not json")
    elif kind == "model card without a version string":
        shutil.copytree(model_dir, channel, dirs_exist_ok=True)
        card = json.loads((channel / MODEL_CARD_FILE).read_text())
        (channel / MODEL_CARD_FILE).write_text(json.dumps({**card, "model_version": 7}))
    elif kind == "not a spaCy model":
        shutil.copytree(model_dir, channel, dirs_exist_ok=True)
        (channel / "config.cfg").write_text(f"[{SECRET}\n")
    elif kind == "unreadable label set":
        shutil.copytree(model_dir, channel, dirs_exist_ok=True)
        (channel / "ner" / "moves").write_bytes(b"\x00garbage")
    else:
        evil_archive(channel, kind, model_dir)


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("truncated archive", "model.tar.gz could not be read or extracted"),
        ("not an archive", "model.tar.gz could not be read or extracted"),
        ("one flipped bit at 50", "model.tar.gz could not be read or extracted"),
        ("one flipped bit at 90", "model.tar.gz could not be read or extracted"),
        ("traversal", "has an absolute or '..' path"),
        ("absolute", "has an absolute or '..' path"),
        ("symlink", "is a link; links are rejected"),
        ("hardlink", "is a link; links are rejected"),
        ("device", "is not a regular file or directory"),
        ("archive without model", "holds no spaCy model (no config.cfg)"),
        ("two archives", "holds 2 *.tar.gz files"),
        ("empty channel", "holds 0 *.tar.gz files"),
        ("no model card", f"production model has no {MODEL_CARD_FILE}"),
        ("unreadable model card", f"production model's {MODEL_CARD_FILE} is unreadable"),
        ("model card without a version string", f"{MODEL_CARD_FILE} has no model_version"),
        ("not a spaCy model", "production model could not be loaded"),
        ("unreadable label set", "production model could not be loaded"),
    ],
)
def test_unusable_production_channel_fails_the_job_before_training(
    tmp_path, capsys, caplog, kind, needle, tiny_model_dir, production_archive
):
    root = job_root(tmp_path / "job")
    channel = production_channel(root)
    corrupt_model(channel, kind, tiny_model_dir, production_archive)
    assert train_main(["--root", str(root)]) == 1
    failure = (root / "output" / "failure").read_text()
    assert needle in failure, failure
    assert "production" in failure
    captured = capsys.readouterr()
    for part in SECRET.split():
        assert part not in failure
        assert part not in captured.out + captured.err + caplog.text
    assert "training on" not in caplog.text  # failed fast: no training run was wasted
    assert not (root / "model" / "metrics.json").exists()
    for escaped in (Path("/") / f"{SECRET}.txt", Path("/tmp") / f"{SECRET}.txt"):
        assert not escaped.exists()  # nothing was extracted outside the temp dir


def test_archive_size_limit(tmp_path, monkeypatch, production_archive):
    monkeypatch.setattr("clinical_ner.runtime.sagemaker_train.PRODUCTION_ARCHIVE_MAX_BYTES", 1024)
    root = job_root(tmp_path)
    shutil.copy(production_archive, production_channel(root) / "model.tar.gz")
    with pytest.raises(TrainJobError, match="unpacks to more than 1024 bytes"):
        production_baseline(JobPaths(root), channel_docs(root, "dev"), None, 64)


def test_production_channel_that_is_a_file(tmp_path, production_archive):
    root = job_root(tmp_path)
    shutil.copy(production_archive, root / "input" / "data" / "production")
    with pytest.raises(TrainJobError, match="channel 'production' is not a directory"):
        production_baseline(JobPaths(root), channel_docs(root, "dev"), None, 64)
