"""Reliability of `clinical-ner train` and the training job (issue F).

The output directory is never wiped, the model version follows every training setting, the
saved model carries no training text, bad arguments fail up front, a killed run leaves no temp
directory, and the CLI reports its version. Training runs are a few steps on a slice of the
bundled synthetic annotations, so each takes seconds.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from importlib.metadata import version as package_version
from pathlib import Path

import pytest
import spacy

from clinical_ner.cli import main
from clinical_ner.model import training
from clinical_ner.model.inference import MODEL_CARD_FILE, NerModel
from clinical_ner.model.readers import read_annotations
from clinical_ner.model.training import TrainingInputs, split_by_hash, train_model
from clinical_ner.runtime import sagemaker_train

REPO = Path(__file__).resolve().parents[2]
ANNOTATIONS = REPO / "clinical_ner" / "samples" / "synthetic_annotations.jsonl"
STEPS = 6
PREDICTING_STEPS = 40  # enough for a model that finds entities

# A patient name and MRN planted in the training data; neither may reach any model artifact.
NAME = "Zyxwarblefrob"
MRN = "8675309"
MARKERS = (NAME.lower().encode(), MRN.encode())


def _planted_records() -> list[str]:
    """The first 120 synthetic records plus 30 notes about one patient (name, MRN, entities).

    30 visits: enough that the name recurs in more than the drift baseline's minimum number of
    distinct notes (5), which alone would let it into the baseline vocabulary.
    """
    lines = ANNOTATIONS.read_text(encoding="utf-8").splitlines()[:120]
    pairs = [("pneumonia", "amoxicillin"), ("asthma", "albuterol"), ("gout", "allopurinol")]
    for number in range(30):
        disease, drug = pairs[number % len(pairs)]
        text = f"Patient {NAME} Quillfeather, MRN {MRN}, visit {number}: {disease}, on {drug}."
        start = text.index(disease)
        drug_start = text.index(drug)
        lines.append(
            json.dumps(
                {
                    "text": text,
                    "label": [
                        [start, start + len(disease), "DISEASE"],
                        [drug_start, drug_start + len(drug), "TREATMENT"],
                    ],
                }
            )
        )
    return lines


def _write_planted(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(_planted_records()) + "\n", encoding="utf-8")
    return path


def _inputs(data: Path, fraction: float = 0.15) -> TrainingInputs:
    docs, report = read_annotations([data])
    train, dev = split_by_hash(docs, fraction)
    return TrainingInputs(train, dev, {str(data): "sha"}, {"train": report.as_dict()})


def _train(data: Path, out: Path, **kwargs: object) -> dict:
    overrides = kwargs.pop("overrides", {"training.max_steps": STEPS})
    fraction = kwargs.pop("fraction", 0.15)
    return train_model(
        _inputs(data, fraction),  # type: ignore[arg-type]
        out,
        seed=int(kwargs.pop("seed", 3)),  # type: ignore[call-overload]
        overrides=overrides,  # type: ignore[arg-type]
        log=lambda _: None,
    )


def _markers_in(blob: bytes) -> list[bytes]:
    lowered = blob.lower()
    return [m for m in MARKERS if m in lowered]


def _files_with_markers(directory: Path) -> dict[str, list[bytes]]:
    found = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and (hits := _markers_in(path.read_bytes())):
            found[str(path.relative_to(directory))] = hits
    return found


def _predictions(model_dir: Path, texts: list[str]) -> list[list[tuple]]:
    model = NerModel.load(model_dir)
    return [
        [(e.start, e.end, e.label, e.raw_score, e.confidence) for e in entities]
        for entities in model.predict(texts)
    ]


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_planted(tmp_path_factory.mktemp("planted") / "train.jsonl")


# ------------------------------------------------ defect 1: the output directory is not wiped


def _cli_train(data: Path, output: Path | str, *extra: str) -> int:
    return main(
        ["train", "--train", str(data), "--output", str(output), "--max-steps", "2", *extra]
    )


def test_train_refuses_a_non_empty_directory_that_is_not_a_model(planted, tmp_path, capsys):
    target = tmp_path / "work"
    (target / "src").mkdir(parents=True)
    (target / "thesis.tex").write_text("years of work")
    (target / "src" / "main.py").write_text("print('hi')")
    assert _cli_train(planted, target) == 2
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err and str(target) in err
    assert (target / "thesis.tex").read_text() == "years of work"
    assert (target / "src" / "main.py").read_text() == "print('hi')"
    assert sorted(p.name for p in target.iterdir()) == ["src", "thesis.tex"]


def test_train_output_dot_does_not_delete_the_working_directory(
    planted, tmp_path, monkeypatch, capsys
):
    cwd = tmp_path / "project"
    cwd.mkdir()
    (cwd / "notes.md").write_text("keep me")
    monkeypatch.chdir(cwd)
    assert _cli_train(planted, ".") == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (cwd / "notes.md").read_text() == "keep me"


def test_train_refuses_a_file_as_output(planted, tmp_path, capsys):
    target = tmp_path / "model.txt"
    target.write_text("not a directory")
    assert _cli_train(planted, target) == 2
    assert "not a directory" in capsys.readouterr().err
    assert target.read_text() == "not a directory"


def test_train_replaces_its_own_model_dir_but_not_files_a_user_added(planted, tmp_path, capsys):
    target = tmp_path / "model"
    assert _cli_train(planted, target) == 0
    first = json.loads((target / MODEL_CARD_FILE).read_text())["model_version"]
    # Our own model directory is replaced by a new run (here: other settings, other version).
    assert _cli_train(planted, target, "--seed", "1") == 0
    second = json.loads((target / MODEL_CARD_FILE).read_text())["model_version"]
    assert second != first
    assert NerModel.load(target).version == second
    # ...but not once a user has put their own file in it.
    (target / "my-notes.txt").write_text("mine")
    capsys.readouterr()
    assert _cli_train(planted, target, "--seed", "2") == 2
    assert "other entry" in capsys.readouterr().err
    assert (target / "my-notes.txt").read_text() == "mine"
    assert json.loads((target / MODEL_CARD_FILE).read_text())["model_version"] == second
    # Nothing is left beside it either.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# ------------------------------------- defect 2: the version follows every training setting


def test_model_version_changes_with_max_steps_overrides_and_dev_split(planted, tmp_path):
    base = _train(planted, tmp_path / "base")
    again = _train(planted, tmp_path / "again")
    assert again["model_version"] == base["model_version"]  # same settings, same version
    variants = {
        "max_steps": _train(planted, tmp_path / "steps", overrides={"training.max_steps": 12}),
        "dropout": _train(
            planted,
            tmp_path / "dropout",
            overrides={"training.max_steps": STEPS, "training.dropout": 0.3},
        ),
        "width": _train(
            planted,
            tmp_path / "width",
            overrides={"training.max_steps": STEPS, "components.ner.model.hidden_width": 32},
        ),
        "dev_split": _train(planted, tmp_path / "split", fraction=0.3),
    }
    versions = {name: m["model_version"] for name, m in variants.items()}
    assert base["model_version"] not in versions.values(), versions
    assert len(set(versions.values())) == len(versions), versions
    assert base["effective_config_sha256"] != variants["dropout"]["effective_config_sha256"]


def _sagemaker_job(root: Path, data: Path, hyperparameters: dict[str, str]) -> dict:
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (root / "input" / "data" / "train").mkdir(parents=True)
    (root / "input" / "data" / "train" / "part-0.jsonl").write_bytes(data.read_bytes())
    return sagemaker_train.run(root)


@pytest.fixture(scope="module")
def sagemaker_jobs(planted, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two training jobs on the planted data that differ only in `max_steps`."""
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        roots = {}
        for steps in ("3", "9"):
            root = tmp_path_factory.mktemp(f"job-{steps}") / "opt-ml"
            _sagemaker_job(root, planted, {"seed": "0", "max_steps": steps})
            roots[steps] = root
    finally:
        mp.undo()
    return roots


def test_sagemaker_hyperparameters_change_the_model_version(sagemaker_jobs):
    versions = {
        steps: json.loads((root / "model" / "metrics.json").read_text())["model_version"]
        for steps, root in sagemaker_jobs.items()
    }
    assert versions["3"] != versions["9"]
    for steps, root in sagemaker_jobs.items():
        assert NerModel.load(root / "model").version == versions[steps]


# --------------------------------------- defect 6: no training text in the model artifacts


def test_saved_model_has_no_training_text_and_predicts_as_before(planted, tmp_path, monkeypatch):
    steps = {"overrides": {"training.max_steps": PREDICTING_STEPS}}
    stripped = tmp_path / "stripped"
    _train(planted, stripped, **steps)
    # The same run without stripping: what the model directory held before the fix.
    monkeypatch.setattr(training, "strip_training_strings", lambda nlp: None)
    unstripped = tmp_path / "unstripped"
    _train(planted, unstripped, **steps)
    monkeypatch.undo()

    assert "vocab/strings.json" in _files_with_markers(unstripped)  # the leak this guards
    assert _files_with_markers(stripped) == {}
    strings = json.loads((stripped / "vocab" / "strings.json").read_text())
    assert strings == ["DISEASE", "TREATMENT"]

    # Loads with spaCy and NerModel; predictions and scores are exactly those of the full vocab.
    nlp = spacy.load(stripped)
    assert nlp.pipe_names == ["tok2vec", "ner"]
    assert [t.text for t in nlp.make_doc("short-term use")] == ["short", "-", "term", "use"]
    assert sorted(nlp.get_pipe("ner").labels) == ["DISEASE", "TREATMENT"]
    texts = [json.loads(line)["text"] for line in _planted_records()]
    texts += [
        "She was admitted with pneumonia and received amoxicillin.",
        "New patient Brontwhistle, MRN 1234567, has gout; started colchicine.",
    ]
    before = _predictions(unstripped, texts)
    after = _predictions(stripped, texts)
    assert sum(map(len, after)) > 0
    assert after == before
    plain = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in nlp.pipe(texts)]
    assert plain == [[(s, e, label) for s, e, label, _, _ in ents] for ents in after]


def test_training_job_model_dir_and_archive_have_no_training_text(sagemaker_jobs):
    model_dir = sagemaker_jobs["9"] / "model"
    names = {p.name for p in model_dir.iterdir()}
    assert {"metrics.json", MODEL_CARD_FILE, "drift_baseline.json", "vocab"} <= names
    assert _files_with_markers(model_dir) == {}

    buffer = io.BytesIO()
    sagemaker_train.write_model_archive(model_dir, buffer)  # the model.tar.gz local mode uploads
    archive = buffer.getvalue()
    assert _markers_in(archive) == []
    assert _markers_in(gzip.decompress(archive)) == []
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        assert "vocab/strings.json" in {m.name for m in members}
        for member in members:
            handle = tar.extractfile(member)
            assert handle is not None
            assert _markers_in(handle.read()) == [], member.name
    # The training texts did reach the job: they are in its input channel.
    channel = sagemaker_jobs["9"] / "input" / "data" / "train" / "part-0.jsonl"
    assert _markers_in(channel.read_bytes()) == list(MARKERS)


# -------------------------------------------- defect 10: arguments, kills, --version


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--max-steps", "-5", "must be >= 1"),
        ("--max-steps", "0", "must be >= 1"),
        ("--max-steps", "many", "must be an integer"),
        ("--dev-fraction", "0", "strictly between 0 and 1"),
        ("--dev-fraction", "1.5", "strictly between 0 and 1"),
        ("--seed", "-1", "must be in 0.."),
        ("--init-tok2vec", "/nonexistent/model1.bin", "no such file"),
    ],
)
def test_train_rejects_bad_arguments_before_doing_anything(
    planted, tmp_path, capsys, flag, value, message
):
    out = tmp_path / "model"
    argv = ["train", "--train", str(planted), "--output", str(out), flag, value]
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and message in err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_train_model_rejects_negative_max_steps(planted, tmp_path):
    with pytest.raises(ValueError, match="max_steps must be >= 1"):
        _train(planted, tmp_path / "m", overrides={"training.max_steps": -5})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_killed_train_leaves_no_temp_directory(planted, tmp_path, signum):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    parent = tmp_path / "models"
    parent.mkdir()
    out = parent / "model"
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONUNBUFFERED": "1"}
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    argv = ["train", "--train", str(planted), "--output", str(out), "--max-steps", "100000"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "clinical_ner.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,  # `-m` puts the cwd first on sys.path: import the installed package
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        for line in proc.stdout:  # wait until the training loop runs (temp files written)
            if line.startswith("training on") or time.monotonic() > deadline:
                break
        time.sleep(1.0)
        assert proc.poll() is None, "train ended before it could be killed"
        leftovers = list(tmpdir.iterdir()) + [p for p in parent.iterdir() if p != out]
        assert leftovers, "expected the run's temp directory to exist while training"
        proc.send_signal(signum)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code != 0
    assert list(tmpdir.iterdir()) == []
    assert list(parent.iterdir()) == []
    assert not out.exists()


def test_cli_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"clinical-ner {package_version('clinical-ner')}"
