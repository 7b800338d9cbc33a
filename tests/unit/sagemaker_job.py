"""A tiny SageMaker training job, run once per test process and shared by the train/serve tests.

Not a conftest fixture on purpose: the result is cached at module level, so test modules that
each declare a fixture around `trained_job()` still train only once per session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "clinical_ner" / "samples" / "synthetic_annotations.jsonl"
TRAIN_SCRIPT = REPO / "sagemaker_src" / "train"
SERVE_SCRIPT = REPO / "sagemaker_src" / "serve"
STEPS = 60
EXPERIMENT = "clinical-ner-tests"
JOB_NAME = "clinical-ner-test-job"


@dataclass(frozen=True)
class TrainedJob:
    root: Path
    mlruns: Path
    result: subprocess.CompletedProcess

    @property
    def model(self) -> Path:
        return self.root / "model"


_CACHE: dict[str, TrainedJob] = {}


def make_job_root(root: Path, hyperparameters: dict[str, str]) -> Path:
    (root / "input" / "config").mkdir(parents=True, exist_ok=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (root / "input" / "data").mkdir(parents=True, exist_ok=True)
    return root


def job_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SM_"))}
    env.update(extra)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


def run_train(root: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the container's `train` script as SageMaker would, with `--root` instead of /opt/ml."""
    return subprocess.run(
        [sys.executable, str(TRAIN_SCRIPT), "--root", str(root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def trained_job() -> TrainedJob:
    if "job" in _CACHE:
        return _CACHE["job"]
    base = Path(tempfile.mkdtemp(prefix="clinical-ner-smjob-"))
    root = make_job_root(
        base / "opt-ml",
        {"seed": "0", "training.max_steps": str(STEPS), "labels": '{"D": "DISEASE"}'},
    )
    lines = SAMPLES.read_text().splitlines()
    train_dir = root / "input" / "data" / "train"
    test_dir = root / "input" / "data" / "test"
    train_dir.mkdir()
    test_dir.mkdir()
    # Train on the first 200 synthetic docs (dev is a hash split), test on the other 40.
    (train_dir / "part-0.jsonl").write_text("\n".join(lines[:200]) + "\n")
    (train_dir / ".hidden-manifest").write_text("not data\n")  # hidden files are skipped
    (test_dir / "test.jsonl").write_text("\n".join(lines[200:]) + "\n")
    mlruns = base / "mlruns"
    env = job_env(
        MLFLOW_TRACKING_URI=mlruns.as_uri(),
        MLFLOW_EXPERIMENT_NAME=EXPERIMENT,
        TRAINING_JOB_NAME=JOB_NAME,
        MODEL_ARTIFACT_URI="s3://example-bucket/models/test-job/output/model.tar.gz",
    )
    result = run_train(root, env)
    if result.returncode != 0:
        raise AssertionError(f"train failed ({result.returncode}):\n{result.stdout[-4000:]}")
    _CACHE["job"] = TrainedJob(root, mlruns, result)
    return _CACHE["job"]
