"""`clinical-ner local run`: the whole loop on this machine, without an AWS account.

What runs, in order (docs/local-mode.md has the full list of what is real and what is emulated):

1. An embedded AWS API emulator (moto server on 127.0.0.1, `clinical_ner_local.emulator`) and
   the data lake's buckets; the CDK app is synthesized (or a ``cdk.out`` is read) and the SNS
   topics, the model package group and the state machines named in it are created in moto.
2. The bundled SYNTHETIC samples (or the user's ``--annotations``/``--notes`` files) go to
   ``raw/annotations/`` and ``raw/notes/``, plus a few deliberately bad note records.
3. The training state machine runs **as synthesized** on the local ASL interpreter
   (`clinical_ner_local.asl`), each Task dispatched by its Resource ARN:

   * ``glue:startJobRun.sync`` -> the Glue script named by the synthesized job
     (``glue_jobs/<script>.py``): its ``main`` with the job's DefaultArguments + the task's
     Arguments, on local Spark, over a local mirror of the lake (``--lake_root <dir>``; the
     mirror is pulled from and pushed back to the emulator's S3 around the run);
   * ``sagemaker:createTrainingJob.sync`` -> the container's ``train`` entry
     (``python -m clinical_ner.runtime.sagemaker_train --root <dir>``) as a subprocess, with the
     SageMaker layout: channels downloaded from S3, hyperparameters.json, ``model/`` packed to
     ``model.tar.gz`` under the job's S3OutputPath (``models/``);
   * Lambda tasks -> the real handler modules in process, with their synthesized environment,
     talking to moto (SageMaker model registry, S3, CloudWatch, Step Functions); a Lambda
     whose ``MLFLOW_TRACKING_URI`` is the synthesized MLflow tracking server's ARN talks to a
     real local ``mlflow server`` (`clinical_ner_local.mlflow_server`) instead;
   * ``sns:publish`` -> moto SNS (messages are recorded for the report);
   * the deploy Lambda's endpoint -> the container's ``serve`` entry as a local HTTP process
     on 127.0.0.1 (the "endpoint"), started when the deploy step creates the endpoint and
     health-checked on ``/ping``.
4. The extraction state machine, as synthesized: the validate Glue job, the real Lambdas, and
   ``sagemaker:createTransformJob.sync`` -> the model's ``serve`` process, fed the transform
   input as JSON Lines batches (SplitType=Line, MULTI_RECORD), output assembled by line. It
   runs three times: the notes (bundled, bad records included, plus a reference window), an
   in-distribution window and a shifted window, each followed by the real drift monitor.
5. The Athena named queries in DuckDB over the published Parquet; the retraining trigger Lambda
   against moto's Step Functions when the drift decision asks for retraining, then the
   execution it started, on the local interpreter: it trains against the production model
   (``TrainAgainstProduction``), gates like with like and redeploys.
6. With the bundled samples, the review loop without a person (`clinical_ner_local.review_demo`):
   the publish steps queued every note; a scripted reviewer applies the SYNTHETIC corrections
   through the workbench API; the reviewed annotations start a ``reviewed_annotations``
   retraining (gated on the validated evaluation set too); held-back notes are extracted by
   the new model and reviewed: KPIs before and after.
7. A report (`clinical_ner_local.report`): ``<output>/report.md`` + PNG plots.

PHI: nothing here logs note text; the report shows entities of the SYNTHETIC notes only (for
user data it shows counts, not text).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clinical_ner.model.contracts import METRICS_FILE, read_metrics_file
from clinical_ner.pipeline.stage_config import LAKE
from clinical_ner.pipeline.tracking import SAGEMAKER_ENDPOINT_ENV, is_tracking_server_arn
from clinical_ner.runtime.sagemaker_train import write_model_archive
from clinical_ner_local.asl import (
    ExecutionResult,
    HistoryEvent,
    LambdaContext,
    StateMachine,
    StatesError,
    TaskContext,
    TaskRegistry,
)
from clinical_ner_local.net import free_port

__all__ = [
    "SAMPLES_DIR",
    "LocalRunError",
    "LocalRunResult",
    "RunOptions",
    "run",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES_DIR = REPO_ROOT / "clinical_ner" / "samples"
GLUE_SYNC = "arn:aws:states:::glue:startJobRun.sync"
TRAIN_SYNC = "arn:aws:states:::sagemaker:createTrainingJob.sync"
TRANSFORM_SYNC = "arn:aws:states:::sagemaker:createTransformJob.sync"
SNS_PUBLISH = "arn:aws:states:::sns:publish"
DEFAULT_MAX_STEPS = 300
SERVE_START_TIMEOUT = 180.0

# Bundled SYNTHETIC files (clinical_ner/samples/README.md, make_clinical_notes.py).
SAMPLE_ANNOTATIONS = ("synthetic_clinical_notes.jsonl",)
# The notes dropped into raw/notes: the held-out test notes of SAMPLE_ANNOTATIONS as plain
# {note_id, text} records (written into the run's output), plus deliberately bad records. Test
# only: with the dev notes too, the reference's note lengths differ from the in-distribution
# window's enough to read as moderate drift (note_length_psi 0.13 > 0.10; 0.09 without them).
SAMPLE_NOTE_SPLITS = ("test",)
SAMPLE_NOTES_FILE = "synthetic_clinical_heldout_notes.jsonl"
SAMPLE_BAD_NOTES = "synthetic_notes_bad.jsonl"
REFERENCE_WINDOW = "synthetic_clinical_reference.jsonl"
IN_DISTRIBUTION_WINDOW = "synthetic_clinical_window.jsonl"
SHIFTED_WINDOW = "synthetic_clinical_shifted.jsonl"
NOTE_SUFFIXES = (".jsonl", ".json", ".csv", ".txt", ".parquet", ".ndjson")


class LocalRunError(RuntimeError):
    """The local run could not go on; the message says which step and why (no note text)."""


@dataclass
class RunOptions:
    output: Path
    annotations: Path | None = None  # a directory (or file) of annotated files
    notes: Path | None = None  # a directory (or file) of notes
    stage: str = "dev"
    max_steps: int = DEFAULT_MAX_STEPS
    cdk_out: Path | None = None  # read this cdk.out instead of synthesizing
    drift_windows: bool = True
    progress: bool = True
    review: bool = True  # the scripted-reviewer demo of the review loop (bundled samples only)
    retrain_after_reviewed_notes: int = 25  # the demo's threshold (stage default: 200)


# ============================================================================ progress


class Progress:
    """Step lines and in-place status updates on stderr (throttled lines when not a TTY)."""

    def __init__(self, enabled: bool = True, stream: Any = None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self._last_status = 0.0
        self._status_shown = False
        self._lock = threading.Lock()

    def _clock(self) -> str:
        s = int(time.monotonic() - self.started)
        return f"[{s // 60:02d}:{s % 60:02d}]"

    def step(self, message: str) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._end_status()
            print(f"{self._clock()} {message}", file=self.stream, flush=True)

    def status(self, message: str, *, force: bool = False) -> None:
        if not self.enabled:
            return
        with self._lock:
            now = time.monotonic()
            if self.tty:
                print(f"\r\033[K{self._clock()}   {message}", end="", file=self.stream, flush=True)
                self._status_shown = True
            elif force or now - self._last_status >= 5.0:
                print(f"{self._clock()}   {message}", file=self.stream, flush=True)
                self._last_status = now

    def _end_status(self) -> None:
        if self._status_shown:
            print(file=self.stream, flush=True)
            self._status_shown = False

    def done(self) -> None:
        with self._lock:
            self._end_status()


# ============================================================================ clock


class SkippingClock:
    """Wall-clock time in which Wait states and retry back-off pass instantly.

    `sleep` advances a virtual offset instead of sleeping, so a 10-minute bake wait costs no
    time while the execution history still shows it; `skipped` totals the skipped seconds.
    """

    def __init__(self) -> None:
        self.offset = 0.0
        self.skipped = 0.0

    def now(self) -> _dt.datetime:
        return _dt.datetime.now(_dt.UTC) + _dt.timedelta(seconds=self.offset)

    def sleep(self, seconds: float) -> None:
        self.offset += max(0.0, seconds)
        self.skipped += max(0.0, seconds)


# ============================================================================ S3 helpers


def parse_s3(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise LocalRunError(f"not an s3:// URI: {uri}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def list_keys(s3: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out.extend(page.get("Contents", []))
    return out


def download_prefix(s3: Any, uri: str, into: Path) -> list[Path]:
    """Every object under `uri` into `into`, keeping paths relative to the prefix."""
    bucket, prefix = parse_s3(uri)
    into.mkdir(parents=True, exist_ok=True)
    files = []
    base = prefix if prefix.endswith("/") or not prefix else prefix[: prefix.rfind("/") + 1]
    for obj in list_keys(s3, bucket, prefix):
        key = obj["Key"]
        if key.endswith("/"):
            continue
        target = into / key[len(base) :]
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, str(target))
        files.append(target)
    return files


class LakeMirror:
    """A local directory mirroring the lake bucket, for Spark (which has no S3 client here).

    `pull` downloads objects that are new or changed (by ETag) since the last pull; `push`
    uploads files the job created or modified, skipping Hadoop's ``.crc`` side files.
    """

    def __init__(self, s3: Any, bucket: str, root: Path) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._etags: dict[str, str] = {}
        self._stamps: dict[str, tuple[int, int]] = {}

    def pull(self) -> int:
        n = 0
        for obj in list_keys(self.s3, self.bucket, ""):
            key = obj["Key"]
            if key.endswith("/") or self._etags.get(key) == obj["ETag"]:
                continue
            target = self.root / key
            target.parent.mkdir(parents=True, exist_ok=True)
            self.s3.download_file(self.bucket, key, str(target))
            # Keep the object's LastModified: the validate job's ledger keys on it.
            ts = obj["LastModified"].timestamp()
            os.utime(target, (ts, ts))
            self._etags[key] = obj["ETag"]
            n += 1
        self._stamps = self._scan()
        return n

    def _scan(self) -> dict[str, tuple[int, int]]:
        out = {}
        for p in self.root.rglob("*"):
            if p.is_file() and not p.name.endswith(".crc"):
                st = p.stat()
                out[p.relative_to(self.root).as_posix()] = (st.st_size, st.st_mtime_ns)
        return out

    def push(self) -> list[str]:
        now = self._scan()
        changed = sorted(k for k, v in now.items() if self._stamps.get(k) != v)
        for key in changed:
            self.s3.upload_file(str(self.root / key), self.bucket, key)
            head = self.s3.head_object(Bucket=self.bucket, Key=key)
            self._etags[key] = head["ETag"]
        self._stamps = now
        return changed


# ============================================================================ endpoints


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(
    method: str, url: str, body: bytes | None = None, content_type: str | None = None
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method)
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with _opener().open(req, timeout=300) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class LocalEndpoint:
    """One ``serve`` process (the container's entry point) on 127.0.0.1."""

    model_data_url: str
    root: Path
    port: int
    process: subprocess.Popen
    log_path: Path
    started_seconds: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ping(self) -> int:
        try:
            return http("GET", f"{self.url}/ping")[0]
        except OSError:
            return 0

    def invoke(self, body: bytes, content_type: str) -> tuple[int, bytes]:
        return http("POST", f"{self.url}/invocations", body, content_type)


class Endpoints:
    """Serve processes keyed by model artifact: SageMaker endpoints and transform containers."""

    def __init__(self, s3: Any, workdir: Path, progress: Progress) -> None:
        self.s3 = s3
        self.workdir = workdir
        self.progress = progress
        self.by_model: dict[str, LocalEndpoint] = {}
        self.by_endpoint_name: dict[str, LocalEndpoint] = {}

    def for_model(self, model_data_url: str) -> LocalEndpoint:
        ep = self.by_model.get(model_data_url)
        if ep is not None and ep.process.poll() is None:
            return ep
        root = self.workdir / f"serve-{len(self.by_model) + 1}"
        model_dir = root / "model"
        model_dir.mkdir(parents=True, exist_ok=True)
        bucket, key = parse_s3(model_data_url)
        body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
            tar.extractall(model_dir, filter="data")
        port = free_port()
        log_path = root / "serve.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(SERVE_THREADS="2", PYTHONUNBUFFERED="1")
        started = time.monotonic()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "clinical_ner.runtime.serve",
                    "--root",
                    str(root),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        ep = LocalEndpoint(model_data_url, root, port, proc, log_path)
        self.by_model[model_data_url] = ep
        deadline = time.monotonic() + SERVE_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise LocalRunError(f"serve process exited with {proc.returncode}; see {log_path}")
            if ep.ping() == 200:
                break
            if time.monotonic() > deadline:
                raise LocalRunError(f"serve process did not answer /ping; see {log_path}")
            self.progress.status(f"starting serve on 127.0.0.1:{port} (model loading)")
            time.sleep(0.3)
        ep.started_seconds = round(time.monotonic() - started, 1)
        self.progress.step(f"serve process on {ep.url} answers /ping ({ep.started_seconds}s)")
        return ep

    def stop_all(self) -> None:
        for ep in self.by_model.values():
            if ep.process.poll() is None:
                ep.process.terminate()
        for ep in self.by_model.values():
            try:
                ep.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                ep.process.kill()


# ============================================================================ lambdas


@contextlib.contextmanager
def patched_environ(values: Mapping[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    try:
        os.environ.update(values)
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def load_handler(fn: Any) -> Callable[[Any, Any], Any]:
    """The handler function of a synthesized Lambda: the staged asset's module if cdk.out has
    it, else ``lambdas/<name>/`` of this checkout (the directory the stack bundles)."""
    module_name, _, func_name = fn.handler.rpartition(".")
    rel = module_name.replace(".", "/") + ".py"
    candidates: list[Path] = []
    if fn.asset_path is not None and Path(fn.asset_path).is_dir():
        candidates.append(Path(fn.asset_path) / rel)
    lambdas = REPO_ROOT / "lambdas"
    if lambdas.is_dir():
        for d in sorted(lambdas.iterdir(), key=lambda p: -len(p.name)):
            if fn.function_name.replace("-", "_").endswith(d.name):
                candidates.append(d / rel)
                break
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        raise LocalRunError(
            f"cannot find the code of Lambda {fn.function_name} (handler {fn.handler}); "
            f"looked at {[str(c) for c in candidates]}"
        )
    spec = importlib.util.spec_from_file_location(f"_local_lambda_{fn.logical_id}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = getattr(module, func_name, None)
    if not callable(handler):
        raise LocalRunError(f"{path} has no function {func_name!r}")
    return handler


# ============================================================================ the pipeline


@dataclass
class TrainingJobRecord:
    job_name: str
    model_data_url: str
    seconds: float
    metrics: dict[str, Any]
    log_path: Path
    steps_seen: int = 0


@dataclass
class TransformRecord:
    job_name: str
    records: int
    requests: int
    seconds: float
    model_data_url: str


@dataclass
class LocalRunResult:
    """Everything the report shows (JSON-able except paths)."""

    output: Path
    report_path: Path | None = None
    data_source: str = "bundled synthetic samples"
    synthetic: bool = True
    timings: dict[str, float] = field(default_factory=dict)
    uploads: dict[str, list[str]] = field(default_factory=dict)
    glue_reports: list[dict[str, Any]] = field(default_factory=list)
    training_execution: dict[str, Any] = field(default_factory=dict)
    training_jobs: list[TrainingJobRecord] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    registry: list[dict[str, Any]] = field(default_factory=list)
    endpoint: dict[str, Any] = field(default_factory=dict)
    extraction_runs: list[dict[str, Any]] = field(default_factory=list)
    transforms: list[TransformRecord] = field(default_factory=list)
    entities_sample: list[dict[str, Any]] = field(default_factory=list)
    entity_rows: list[dict[str, Any]] = field(default_factory=list)
    queries: dict[str, dict[str, Any]] = field(default_factory=dict)
    drift: list[dict[str, Any]] = field(default_factory=list)
    retraining: dict[str, Any] = field(default_factory=dict)
    review: dict[str, Any] = field(default_factory=dict)
    sns_messages: list[dict[str, Any]] = field(default_factory=list)
    tracking: dict[str, Any] = field(default_factory=dict)
    skipped_wait_seconds: float = 0.0
    missing: list[str] = field(default_factory=list)
    notes_text: dict[str, str] = field(default_factory=dict, repr=False)


class LocalPipeline:
    """Task handlers for the synthesized state machines, wired to the emulator and processes."""

    def __init__(
        self,
        aws: Any,
        assembly: Any,
        lake: Any,
        opts: RunOptions,
        workdir: Path,
        progress: Progress,
        result: LocalRunResult,
    ) -> None:
        self.aws = aws
        self.assembly = assembly
        self.lake = lake
        self.opts = opts
        self.workdir = workdir
        self.progress = progress
        self.result = result
        self.s3 = aws.client("s3")
        self.sm = aws.client("sagemaker")
        self.sns = aws.client("sns")
        self.mirror = LakeMirror(self.s3, lake.lake, workdir / "lake")
        self.endpoints = Endpoints(self.s3, workdir, progress)
        self.clock = SkippingClock()
        self.registry = TaskRegistry()
        self.registry.register(GLUE_SYNC, self.glue_job)
        self.registry.register(TRAIN_SYNC, self.training_job)
        self.registry.register(TRANSFORM_SYNC, self.transform_job)
        self.registry.register(SNS_PUBLISH, self.sns_publish)
        self.lambdas: dict[str, Any] = {}
        for fn in assembly.lambda_functions():
            self.lambdas[fn.function_name] = fn
            self.registry.register_lambda(fn.function_name, self._lambda(fn))
        self._spark: Any = None
        self.mlflow: Any = None  # LocalMlflowServer, started when a Lambda first needs it

    # ---------------------------------------------------------------- Lambda

    def _mlflow_url(self) -> str:
        """The local stand-in for the managed MLflow tracking server (started once)."""
        from clinical_ner_local.mlflow_server import LocalMlflowServer, MlflowServerError

        if self.mlflow is None:
            self.progress.status("starting the MLflow tracking server (stand-in for SageMaker's)")
            try:
                self.mlflow = LocalMlflowServer(self.workdir / "mlflow").start()
            except MlflowServerError as exc:
                raise LocalRunError(f"experiment tracking: {exc}") from None
            self.progress.step(
                f"MLflow tracking server on {self.mlflow.url} ({self.mlflow.started_seconds}s)"
            )
        return str(self.mlflow.url)

    def _lambda(self, fn: Any) -> Callable[[Any, LambdaContext], Any]:
        handler_cell: list[Callable[[Any, Any], Any]] = []

        def invoke(event: Any, ctx: LambdaContext) -> Any:
            if not handler_cell:
                handler_cell.append(load_handler(fn))
            env = {
                **fn.environment,
                "AWS_LAMBDA_FUNCTION_NAME": fn.function_name,
                **self.aws.environ(),  # the emulator's endpoint and dummy credentials win
            }
            if is_tracking_server_arn(fn.environment.get("MLFLOW_TRACKING_URI", "")):
                env[SAGEMAKER_ENDPOINT_ENV] = self._mlflow_url()
            with patched_environ(env):
                out = handler_cell[0](event, ctx)
            self._after_lambda(fn, event, out)
            return out

        return invoke

    def _after_lambda(self, fn: Any, event: Any, out: Any) -> None:
        """SageMaker's side of what the deploy Lambda asked for: run the endpoint process."""
        if not (isinstance(event, dict) and isinstance(out, dict)):
            return
        if isinstance(out.get("tracking"), dict):
            self._record_tracking(out["tracking"], str(out.get("model_package_arn", "")))
        if event.get("action") == "deploy" and out.get("endpoint_name"):
            model_url = self._endpoint_model_url(out["endpoint_name"])
            self.progress.step(f"endpoint {out['endpoint_name']}: starting the serve process")
            ep = self.endpoints.for_model(model_url)
            self.endpoints.by_endpoint_name[out["endpoint_name"]] = ep

    def _record_tracking(self, outcome: Mapping[str, Any], package_arn: str) -> None:
        """What the register step logged, read back from the tracking server."""
        from clinical_ner.pipeline.tracking import MlflowRestClient, RestEndpoint, TrackingError

        record: dict[str, Any] = {**outcome, "model_package_arn": package_arn}
        if self.mlflow is not None:
            record["backend_store"] = str((self.mlflow.workdir / "mlflow.db").resolve())
        if outcome.get("status") == "logged" and self.mlflow is not None:
            try:
                run = MlflowRestClient(RestEndpoint(self.mlflow.url, {})).get_run(
                    str(outcome["run_id"])
                )
            except TrackingError as exc:
                record["read_back_error"] = str(exc)
            else:
                data = run.get("data", {})
                record["run_status"] = run.get("info", {}).get("status")
                record["params"] = len(data.get("params", []))
                record["metrics"] = {m["key"]: m["value"] for m in data.get("metrics", [])}
                record["tags"] = {
                    t["key"]: t["value"]
                    for t in data.get("tags", [])
                    if not t["key"].startswith("mlflow.")
                }
        self.result.tracking = record

    def _endpoint_model_url(self, endpoint_name: str) -> str:
        ep = self.sm.describe_endpoint(EndpointName=endpoint_name)
        cfg = self.sm.describe_endpoint_config(EndpointConfigName=ep["EndpointConfigName"])
        model_name = cfg["ProductionVariants"][0]["ModelName"]
        return self._model_data_url(model_name)

    def _model_data_url(self, model_name: str) -> str:
        model = self.sm.describe_model(ModelName=model_name)
        containers = [model.get("PrimaryContainer"), *list(model.get("Containers") or [])]
        for c in containers:
            if not c:
                continue
            if c.get("ModelDataUrl"):
                return str(c["ModelDataUrl"])
            if c.get("ModelPackageName"):
                pkg = self.sm.describe_model_package(ModelPackageName=c["ModelPackageName"])
                return str(pkg["InferenceSpecification"]["Containers"][0]["ModelDataUrl"])
        raise LocalRunError(f"model {model_name} has no ModelDataUrl or ModelPackageName")

    # ---------------------------------------------------------------- Glue

    def _glue_job(self, job_name: str) -> tuple[Path, dict[str, str]]:
        for stack, tpl in self.assembly.templates.items():
            for logical, res in (tpl.get("Resources") or {}).items():
                if res.get("Type") != "AWS::Glue::Job":
                    continue
                r = self.assembly.resolver(stack)
                props = res.get("Properties", {})
                if str(r.resolve(props.get("Name", logical))) != job_name:
                    continue
                args = {
                    k: str(r.resolve(v)) for k, v in (props.get("DefaultArguments") or {}).items()
                }
                return self._glue_script(job_name, args), args
        raise StatesError("Glue.EntityNotFoundException", f"no Glue job named {job_name}")

    @staticmethod
    def _glue_script(job_name: str, args: Mapping[str, str]) -> Path:
        scripts = sorted((REPO_ROOT / "glue_jobs").glob("*.py"), key=lambda p: -len(p.stem))
        normalised = job_name.replace("-", "_")
        for script in scripts:
            if normalised.endswith(script.stem):
                return script
        raise LocalRunError(f"Glue job {job_name}: no glue_jobs/<script>.py matches its name")

    def spark(self) -> Any:
        if self._spark is None:
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            from pyspark.sql import SparkSession

            self.progress.status("starting local Spark", force=True)
            self._spark = (
                SparkSession.builder.master("local[2]")
                .appName("clinical-ner-local")
                .config("spark.ui.enabled", "false")
                .config("spark.sql.shuffle.partitions", "2")
                .config("spark.default.parallelism", "2")
                .config("spark.driver.memory", "1g")
                .config("spark.sql.session.timeZone", "UTC")
                .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
                .config("spark.ui.showConsoleProgress", "false")
                .getOrCreate()
            )
            self._spark.sparkContext.setLogLevel("ERROR")
        return self._spark

    def glue_job(self, params: Any, ctx: TaskContext) -> dict[str, Any]:
        job_name = params["JobName"]
        script, defaults = self._glue_job(job_name)
        args = {**defaults, **(params.get("Arguments") or {})}
        run_id = f"jr_{uuid.uuid4().hex}"
        args["--JOB_RUN_ID"] = run_id
        args["--lake_root"] = str(self.mirror.root)  # the local mirror of s3://<lake>
        argv: list[str] = []
        for k, v in args.items():
            argv += [k, v]
        self.progress.step(f"Glue {job_name}: {script.name} on local Spark")
        started = time.monotonic()
        self.spark()
        self.mirror.pull()
        spec = importlib.util.spec_from_file_location(f"_glue_{script.stem}", script)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        try:
            report = module.main(argv)
        except Exception as exc:  # the job failed: Glue reports FAILED with an error message
            raise StatesError(
                "States.TaskFailed",
                json.dumps(
                    {
                        "JobName": job_name,
                        "JobRunState": "FAILED",
                        "ErrorMessage": f"{type(exc).__name__}: {exc}"[:500],
                    }
                ),
            ) from exc
        pushed = self.mirror.push()
        seconds = round(time.monotonic() - started, 1)
        if isinstance(report, dict):
            self.result.glue_reports.append({"job": job_name, "seconds": seconds, **report})
        self.progress.step(f"Glue {job_name}: SUCCEEDED in {seconds}s ({len(pushed)} objects)")
        return {
            "Id": run_id,
            "JobName": job_name,
            "JobRunState": "SUCCEEDED",
            "Arguments": params.get("Arguments") or {},
            "ExecutionTime": int(seconds),
        }

    # ---------------------------------------------------------------- SageMaker training

    def training_job(self, params: Any, ctx: TaskContext) -> dict[str, Any]:
        job = params["TrainingJobName"]
        root = self.workdir / "training" / job
        if root.exists():
            shutil.rmtree(root)
        (root / "input" / "config").mkdir(parents=True)
        hp = dict(params.get("HyperParameters") or {})
        hp["max_steps"] = str(self.opts.max_steps)  # local mode: a short run (report says so)
        (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hp))
        self.progress.step(f"SageMaker training job {job}: downloading channels")
        for channel in params.get("InputDataConfig") or []:
            uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
            download_prefix(self.s3, uri, root / "input" / "data" / channel["ChannelName"])
        out_path = params["OutputDataConfig"]["S3OutputPath"].rstrip("/")
        model_url = f"{out_path}/{job}/output/model.tar.gz"
        log_path = root / "train.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            TRAINING_JOB_NAME=job,
            MODEL_ARTIFACT_URI=model_url,
            PYTHONUNBUFFERED="1",
            ANSI_COLORS_DISABLED="1",
        )
        env.pop("MLFLOW_TRACKING_URI", None)  # network isolation: no tracking server
        started = time.monotonic()
        step_re = re.compile(
            r"^\s*(\d+)\s+(\d+)\s+[\d.]+\s+[\d.]+\s+([\d.]+)\s+([\d.]+)\s+"
            r"([\d.]+)\s+([\d.]+)"
        )
        steps = 0
        self.progress.step(
            f"SageMaker training job {job}: `train` entry as a subprocess "
            f"(max_steps={self.opts.max_steps})"
        )
        with open(log_path, "w", encoding="utf-8") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "clinical_ner.runtime.sagemaker_train", "--root", str(root)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                text=True,
                bufsize=1,
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                m = step_re.match(line)
                if m:
                    epoch, steps = int(m.group(1)), int(m.group(2))
                    self.progress.status(
                        f"training: epoch {epoch}, step {steps}/{self.opts.max_steps}, "
                        f"dev F1 {float(m.group(5)):.2f}"
                    )
                    ctx.heartbeat()
            code = proc.wait()
        seconds = round(time.monotonic() - started, 1)
        if code != 0:
            failure = root / "output" / "failure"
            reason = failure.read_text().strip() if failure.is_file() else f"exit code {code}"
            self.progress.step(f"SageMaker training job {job}: FAILED ({reason}); see {log_path}")
            raise StatesError(
                "States.TaskFailed",
                json.dumps(
                    {"TrainingJobName": job, "TrainingJobStatus": "Failed", "FailureReason": reason}
                ),
            )
        buf = io.BytesIO()
        write_model_archive(root / "model", buf)
        bucket, key = parse_s3(model_url)
        self.s3.put_object(Bucket=bucket, Key=key, Body=buf.getvalue())
        metrics = read_metrics_file(root / "model" / METRICS_FILE)
        self.result.training_jobs.append(
            TrainingJobRecord(job, model_url, seconds, metrics, log_path, steps)
        )
        self.progress.step(f"SageMaker training job {job}: Completed in {seconds}s -> {model_url}")
        summary = metrics.get("summary", {})
        return {
            "TrainingJobName": job,
            "TrainingJobArn": f"arn:aws:sagemaker:{self.aws.region}:{self.aws.account}:"
            f"training-job/{job.lower()}",
            "TrainingJobStatus": "Completed",
            "SecondaryStatus": "Completed",
            "ModelArtifacts": {"S3ModelArtifacts": model_url},
            "AlgorithmSpecification": params["AlgorithmSpecification"],
            "HyperParameters": hp,
            "FinalMetricDataList": [
                {"MetricName": k, "Value": float(v)}
                for k, v in summary.items()
                if isinstance(v, int | float)
            ],
            "TrainingTimeInSeconds": int(seconds),
        }

    # ---------------------------------------------------------------- SageMaker transform

    def transform_job(self, params: Any, ctx: TaskContext) -> dict[str, Any]:
        job = params["TransformJobName"]
        model_url = self._model_data_url(params["ModelName"])
        ep = self.endpoints.for_model(model_url)
        tin = params["TransformInput"]
        source = tin["DataSource"]["S3DataSource"]["S3Uri"]
        content_type = tin.get("ContentType", "application/jsonlines")
        split = tin.get("SplitType", "None")
        out_uri = params["TransformOutput"]["S3OutputPath"].rstrip("/") + "/"
        joiner = "\n" if params["TransformOutput"].get("AssembleWith") == "Line" else ""
        max_bytes = int(params.get("MaxPayloadInMB", 6)) * 1024 * 1024
        multi = params.get("BatchStrategy", "MultiRecord") == "MultiRecord"
        bucket, prefix = parse_s3(source)
        base = prefix if prefix.endswith("/") else prefix[: prefix.rfind("/") + 1]
        out_bucket, out_prefix = parse_s3(out_uri)
        objs = [o for o in list_keys(self.s3, bucket, prefix) if not o["Key"].endswith("/")]
        records = (
            sum(
                len(self.s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read().splitlines())
                for o in objs
            )
            if split == "Line"
            else len(objs)
        )
        started = time.monotonic()
        done = requests = 0
        self.progress.step(f"Batch Transform {job}: {records} records -> {ep.url}/invocations")
        for obj in objs:
            body = self.s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            lines = [ln for ln in body.splitlines() if ln.strip()] if split == "Line" else [body]
            batches: list[list[bytes]] = []
            cur: list[bytes] = []
            size = 0
            for ln in lines:
                if cur and (not multi or size + len(ln) + 1 > max_bytes or len(cur) >= 64):
                    batches.append(cur)
                    cur, size = [], 0
                cur.append(ln)
                size += len(ln) + 1
            if cur:
                batches.append(cur)
            outputs: list[str] = []
            for batch in batches:
                status, answer = ep.invoke(b"\n".join(batch) + b"\n", content_type)
                requests += 1
                if status != 200:
                    raise StatesError(
                        "States.TaskFailed",
                        json.dumps(
                            {
                                "TransformJobName": job,
                                "TransformJobStatus": "Failed",
                                "FailureReason": f"ClientError: container answered HTTP {status}",
                            }
                        ),
                    )
                text = answer.decode("utf-8")
                got = [x for x in text.splitlines() if x.strip()] if split == "Line" else [text]
                if split == "Line" and len(got) != len(batch):
                    raise StatesError(
                        "States.TaskFailed",
                        json.dumps(
                            {
                                "TransformJobName": job,
                                "TransformJobStatus": "Failed",
                                "FailureReason": f"{len(batch)} records in, {len(got)} out",
                            }
                        ),
                    )
                outputs.extend(got)
                done += len(batch)
                self.progress.status(f"extraction: {done}/{records} notes")
                ctx.heartbeat()
            rel = obj["Key"][len(base) :]
            self.s3.put_object(
                Bucket=out_bucket,
                Key=f"{out_prefix}{rel}.out",
                Body=(joiner.join(outputs) + (joiner if joiner else "")).encode("utf-8"),
            )
        seconds = round(time.monotonic() - started, 1)
        self.result.transforms.append(TransformRecord(job, done, requests, seconds, model_url))
        self.progress.step(f"Batch Transform {job}: Completed, {done} records in {seconds}s")
        return {
            "TransformJobName": job,
            "TransformJobArn": f"arn:aws:sagemaker:{self.aws.region}:{self.aws.account}:"
            f"transform-job/{job.lower()}",
            "TransformJobStatus": "Completed",
            "ModelName": params["ModelName"],
            "TransformInput": tin,
            "TransformOutput": params["TransformOutput"],
            "TransformResources": params.get("TransformResources", {}),
        }

    # ---------------------------------------------------------------- SNS

    def sns_publish(self, params: Any, ctx: TaskContext) -> dict[str, Any]:
        message = params["Message"]
        text = message if isinstance(message, str) else json.dumps(message)
        kwargs: dict[str, Any] = {"TopicArn": params["TopicArn"], "Message": text}
        if params.get("Subject"):
            kwargs["Subject"] = params["Subject"]
        resp = self.sns.publish(**kwargs)
        self.result.sns_messages.append(
            {
                "state": ctx.state_name,
                "topic": params["TopicArn"].rsplit(":", 1)[-1],
                "subject": params.get("Subject", ""),
                "message": message,
            }
        )
        return {"MessageId": resp["MessageId"]}

    # ---------------------------------------------------------------- executions

    def execute(self, stack: str, execution_input: dict[str, Any], label: str) -> ExecutionResult:
        info = self.assembly.state_machine(stack)
        machine = StateMachine(
            info.definition, self.registry, clock=self.clock, name=info.name, arn=info.arn
        )

        def on_event(ev: HistoryEvent) -> None:
            if ev.type == "TaskStateEntered" or ev.type.endswith("StateEntered"):
                self.progress.status(f"{label}: {ev.state}")

        self.progress.step(f"{label}: executing {info.name} (synthesized definition)")
        return machine.execute(
            execution_input, name=f"local-{label}-{uuid.uuid4().hex[:8]}", on_event=on_event
        )

    def close(self) -> None:
        self.endpoints.stop_all()
        if self.mlflow is not None:
            self.mlflow.stop()
        if self._spark is not None:
            with contextlib.suppress(Exception):
                self._spark.stop()
            self._spark = None


# ============================================================================ setup helpers


def _input_files(path: Path, suffixes: tuple[str, ...] | None = None) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise LocalRunError(f"{path} is neither a file nor a directory")
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
        and (
            suffixes is None
            or p.suffix.lower() in suffixes
            or "_label" in p.name
            or "_sent" in p.name
        )
    )
    if not files:
        raise LocalRunError(f"{path} holds no input files")
    return files


def _upload(s3: Any, bucket: str, prefix: str, files: list[Path], base: Path | None) -> list[str]:
    keys = []
    for f in files:
        rel = f.relative_to(base).as_posix() if base and base.is_dir() else f.name
        key = prefix + rel
        s3.upload_file(str(f), bucket, key)
        keys.append(key)
    return keys


def _provision(aws: Any, assembly: Any) -> None:
    """Create in moto what the synthesized stacks own and the code expects to exist."""
    sns = aws.client("sns")
    sm = aws.client("sagemaker")
    sfn = aws.client("stepfunctions")
    for stack, tpl in assembly.templates.items():
        r = assembly.resolver(stack)
        for logical, res in (tpl.get("Resources") or {}).items():
            rtype = res.get("Type")
            if rtype == "AWS::SNS::Topic":
                sns.create_topic(Name=r.physical_name(logical))
            elif rtype == "AWS::SageMaker::ModelPackageGroup":
                sm.create_model_package_group(ModelPackageGroupName=r.physical_name(logical))
    for info in assembly.state_machines():
        sfn.create_state_machine(
            name=info.name,
            definition=json.dumps(info.definition),
            roleArn=info.role_arn or f"arn:aws:iam::{aws.account}:role/local-sfn",
        )


def _lake_overrides(assembly: Any, lake: Any) -> None:
    """Point the data lake stack's buckets/key at the emulator's (for every importer)."""
    stack = next((s for s in assembly.templates if s.endswith("DataLake")), None)
    if stack is None:
        raise LocalRunError(f"no DataLake stack in {list(assembly.templates)}")
    res = assembly.templates[stack]["Resources"]
    overrides: dict[str, Any] = {}
    for logical, r in res.items():
        if r.get("Type") != "AWS::S3::Bucket":
            continue
        name = None
        low = logical.lower()
        if low.startswith("lake"):
            name = lake.lake
        elif "athena" in low:
            name = lake.athena_results
        elif "log" in low:
            name = lake.access_logs
        if name:
            overrides[logical] = name
            overrides[f"{logical}.Arn"] = f"arn:aws:s3:::{name}"
    if not any(v == lake.lake for v in overrides.values()):
        raise LocalRunError(f"cannot find the lake bucket among {sorted(res)}")
    if lake.kms_key_arn:
        for logical, r in res.items():
            if r.get("Type") == "AWS::KMS::Key":
                overrides[logical] = lake.kms_key_arn.rsplit("/", 1)[-1]
                overrides[f"{logical}.Arn"] = lake.kms_key_arn
    assembly.set_overrides(stack, overrides)


# ============================================================================ the run


def run(opts: RunOptions) -> LocalRunResult:
    """Run the whole local loop; returns what the report shows (the report is written)."""
    from clinical_ner_local.emulator import LocalAws, create_data_lake
    from clinical_ner_local.report import write_report

    progress = Progress(opts.progress)
    output = opts.output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    workdir = output / "work"
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir()
    result = LocalRunResult(output=output)
    failure: LocalRunError | None = None
    t0 = time.monotonic()

    def mark(name: str, since: float) -> float:
        now = time.monotonic()
        result.timings[name] = round(now - since, 1)
        return now

    # ------------------------------------------------------------------ the CDK app
    if opts.cdk_out:
        from clinical_ner_local.cfn import CloudAssembly

        progress.step(f"reading the synthesized app from {opts.cdk_out}")
        assembly = CloudAssembly.from_directory(opts.cdk_out)
    else:
        from clinical_ner_local.cfn import synthesize_app

        progress.step(f"synthesizing the CDK app (stage {opts.stage}; ~20-60 s)")
        assembly = synthesize_app(opts.stage, outdir=workdir / "cdk.out")
    t = mark("synthesize", t0)

    with LocalAws() as aws, aws.activated(), _logs_to(workdir / "pipeline.log"):
        progress.step(f"AWS API emulator (moto) on {aws.endpoint_url}")
        lake = create_data_lake(aws)
        _lake_overrides(assembly, lake)
        _provision(aws, assembly)
        pipeline = LocalPipeline(aws, assembly, lake, opts, workdir, progress, result)
        try:
            review_table = None
            if opts.review and opts.drift_windows and not opts.notes:
                from clinical_ner_local.review_demo import prepare_review_table

                review_table = prepare_review_table(pipeline)
            t = mark("emulator_setup", t)
            _upload_inputs(pipeline, opts, result, progress)
            t = mark("upload", t)

            # -------------------------------------------------------------- training
            ex = pipeline.execute("Training", {"trigger": "new_annotations"}, "training")
            result.training_execution = _execution_summary(ex)
            t = mark("training_pipeline", t)
            if not ex.succeeded:
                raise LocalRunError(
                    f"the training state machine ended {ex.status}: {ex.error} ({ex.cause})"
                )
            output_doc = ex.output or {}
            result.gate = output_doc.get("gate") or {}
            if result.training_jobs:
                result.metrics = result.training_jobs[-1].metrics
            result.registry = _registry_status(aws, pipeline)
            result.endpoint = _endpoint_check(pipeline, output_doc.get("deployment") or {})
            t = mark("endpoint_check", t)

            # -------------------------------------------------------------- extraction
            deployed = ex.states_entered()[-1] == "Deployed"
            if not deployed:
                result.missing.append(
                    f"the training execution ended in {ex.states_entered()[-1]} (gate: "
                    f"{result.gate.get('summary', 'n/a')}): no Approved model, so extraction, "
                    "queries and drift monitoring were skipped; try more --max-steps"
                )
                progress.step(f"WARNING: {result.missing[-1]}")
            elif _has_stack(assembly, "Extraction"):
                _run_extractions(pipeline, opts, result, progress)
                t = mark("extraction_and_drift", t)
                _run_queries(pipeline, result, progress)
                t = mark("queries", t)
                _maybe_retrain(pipeline, result, progress)
                result.registry = _registry_status(aws, pipeline)
                t = mark("retraining", t)
                if review_table:
                    from clinical_ner_local.review_demo import run_review_demo

                    result.review = run_review_demo(
                        pipeline,
                        result,
                        progress,
                        table=review_table,
                        retrain_after=opts.retrain_after_reviewed_notes,
                        summarize=_execution_summary,
                        strip=_strip,
                    )
                    result.registry = _registry_status(aws, pipeline)
                    t = mark("review_loop", t)
            else:
                result.missing.append("no Extraction stack in the synthesized app")
        except LocalRunError as exc:
            result.missing.append(f"FAILED: {exc}")
            failure = exc
        finally:
            result.skipped_wait_seconds = round(pipeline.clock.skipped, 1)
            pipeline.close()
    result.timings["total"] = round(time.monotonic() - t0, 1)
    progress.step("writing the report")
    result.report_path = write_report(result)
    progress.done()
    if failure is not None:
        raise LocalRunError(f"{failure} (partial report: {result.report_path})") from failure
    return result


@contextlib.contextmanager
def _logs_to(path: Path) -> Iterator[None]:
    """Send every log record of the in-process code (Lambda handlers' JSON logs, botocore,
    py4j) to `path`, keeping stderr for the progress display; the Lambda edge writes its own
    lines to a root handler with its JSON formatter instead of stdout, so to this one."""
    import logging

    from clinical_ner.runtime.lambda_edge import JsonFormatter

    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        handler.close()
        root.handlers = saved_handlers
        root.setLevel(saved_level)


def _has_stack(assembly: Any, hint: str) -> bool:
    return any(s.endswith(hint) for s in assembly.templates)


def _upload_inputs(
    pipeline: LocalPipeline, opts: RunOptions, result: LocalRunResult, progress: Progress
) -> None:
    s3, bucket = pipeline.s3, pipeline.lake.lake
    if opts.annotations:
        ann_files = _input_files(opts.annotations)
        ann_base: Path | None = opts.annotations
        result.synthetic = False
    else:
        ann_files = [SAMPLES_DIR / n for n in SAMPLE_ANNOTATIONS]
        ann_base = None
    if opts.notes:
        note_files = _input_files(opts.notes)
        note_base: Path | None = opts.notes
        result.synthetic = False
    else:
        note_files = [_sample_notes(Path(opts.output)), SAMPLES_DIR / SAMPLE_BAD_NOTES]
        note_base = None
    if opts.annotations or opts.notes:
        result.data_source = (
            f"annotations: {opts.annotations or 'bundled synthetic'}; "
            f"notes: {opts.notes or 'bundled synthetic'}"
        )
    result.uploads["annotations"] = _upload(s3, bucket, LAKE.raw_annotations, ann_files, ann_base)
    result.uploads["notes"] = _upload(s3, bucket, LAKE.raw_notes, note_files, note_base)
    if not opts.notes:
        for f in note_files:
            _remember_notes(result, f)
    progress.step(
        f"uploaded {len(result.uploads['annotations'])} annotation file(s) to raw/annotations/ "
        f"and {len(result.uploads['notes'])} note file(s) to raw/notes/"
    )


def _sample_notes(output: Path) -> Path:
    """The bundled annotated notes of SAMPLE_NOTE_SPLITS as notes to extract ({note_id, text})."""
    path = output / "inputs" / SAMPLE_NOTES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for name in SAMPLE_ANNOTATIONS:
        for line in (SAMPLES_DIR / name).read_text(encoding="utf-8").splitlines():
            doc = json.loads(line)
            if doc.get("split") in SAMPLE_NOTE_SPLITS:
                lines.append(json.dumps({"note_id": doc["note_id"], "text": doc["text"]}))
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def _remember_notes(result: LocalRunResult, path: Path) -> None:
    """Texts of the bundled SYNTHETIC notes, to show entities in context in the report."""
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(Exception):
            doc = json.loads(line)
            if isinstance(doc, dict) and isinstance(doc.get("text"), str):
                result.notes_text.setdefault(str(doc.get("note_id")), doc["text"])


def _execution_summary(ex: ExecutionResult) -> dict[str, Any]:
    return {
        "name": ex.name,
        "status": ex.status,
        "error": ex.error,
        "cause": ex.cause,
        "states": ex.states_entered(),
        "durations": ex.state_durations(),
    }


def _registry_status(aws: Any, pipeline: LocalPipeline) -> list[dict[str, Any]]:
    sm = aws.client("sagemaker")
    out = []
    groups = sm.list_model_package_groups().get("ModelPackageGroupSummaryList", [])
    for g in groups:
        pkgs = sm.list_model_packages(ModelPackageGroupName=g["ModelPackageGroupName"]).get(
            "ModelPackageSummaryList", []
        )
        for p in pkgs:
            d = sm.describe_model_package(ModelPackageName=p["ModelPackageArn"])
            out.append(
                {
                    "group": g["ModelPackageGroupName"],
                    "arn": p["ModelPackageArn"],
                    "version": d.get("ModelPackageVersion"),
                    "status": d.get("ModelApprovalStatus"),
                    "description": d.get("ApprovalDescription", ""),
                    "model_data_url": d["InferenceSpecification"]["Containers"][0].get(
                        "ModelDataUrl"
                    ),
                    "metadata": (d.get("CustomerMetadataProperties") or {}),
                }
            )
    return out


def _endpoint_check(pipeline: LocalPipeline, deployment: Mapping[str, Any]) -> dict[str, Any]:
    name = deployment.get("endpoint_name")
    ep = pipeline.endpoints.by_endpoint_name.get(str(name)) if name else None
    if ep is None:
        return {"endpoint_name": name, "checked": False, "phase": deployment.get("phase")}
    described = pipeline.sm.describe_endpoint(EndpointName=name)
    note = {
        "note_id": "synthetic-check-1",
        "text": "Assessment: asthma. Plan: continue albuterol and follow up in 3 months.",
    }
    started = time.monotonic()
    status, body = ep.invoke(json.dumps(note).encode(), "application/json")
    latency = round((time.monotonic() - started) * 1000, 1)
    answer = json.loads(body) if status == 200 else {}
    results = answer if isinstance(answer, list) else answer.get("predictions", [answer])
    ents = []
    for r in results:
        for e in (r or {}).get("entities", []):
            ents.append(
                {
                    "text": e.get("text"),
                    "label": e.get("label"),
                    "start_char": e.get("start", e.get("start_char")),
                    "end_char": e.get("end", e.get("end_char")),
                    "confidence": e.get("confidence"),
                }
            )
    return {
        "endpoint_name": name,
        "checked": True,
        "phase": deployment.get("phase"),
        "status_in_emulator": described.get("EndpointStatus"),
        "endpoint_config": described.get("EndpointConfigName"),
        "url": ep.url,
        "ping": ep.ping(),
        "invocation_status": status,
        "latency_ms": latency,
        "startup_seconds": ep.started_seconds,
        "model_data_url": ep.model_data_url,
        "request_text": note["text"],
        "entities": ents,
    }


def _window_files() -> list[tuple[str, list[Path]]]:
    return [
        ("reference window (synthetic, in-distribution)", [SAMPLES_DIR / REFERENCE_WINDOW]),
        ("in-distribution window (synthetic)", [SAMPLES_DIR / IN_DISTRIBUTION_WINDOW]),
        ("shifted window (synthetic: other style and vocabulary)", [SAMPLES_DIR / SHIFTED_WINDOW]),
    ]


def _run_extractions(
    pipeline: LocalPipeline, opts: RunOptions, result: LocalRunResult, progress: Progress
) -> None:
    windows = _window_files() if opts.drift_windows else []
    if opts.notes is None and windows:
        # Bundled samples: the reference window is extracted with the sample notes, so the
        # first run establishes the production reference (>= reference_min_notes notes).
        first_label = "sample notes + reference window (synthetic)"
        batches: list[tuple[str, list[Path] | None]] = [(first_label, windows[0][1])]
        batches += windows[1:]
    else:
        batches = [("user notes" if opts.notes else "sample notes (synthetic)", None)]
        batches += windows
    s3, bucket = pipeline.s3, pipeline.lake.lake
    for i, (label, files) in enumerate(batches):
        if files is not None:
            keys = _upload(s3, bucket, f"{LAKE.raw_notes}local-window-{i}/", files, None)
            result.uploads.setdefault("windows", []).extend(keys)
            for f in files:
                _remember_notes(result, f)
        ex = pipeline.execute("Extraction", {}, f"extraction-{i}")
        summary = _execution_summary(ex)
        out = ex.output or {}
        summary.update(label=label, output=_strip(out))
        glue = next(
            (
                g
                for g in reversed(result.glue_reports)
                if g.get("run_id") == (out.get("run") or {}).get("run_id")
            ),
            None,
        )
        summary["validate"] = glue
        result.extraction_runs.append(summary)
        if not ex.succeeded:
            raise LocalRunError(
                f"extraction run {i} ({label}) ended {ex.status}: {ex.error} ({ex.cause})"
            )
        monitor = out.get("monitor") or out.get("drift") or {}
        if monitor:
            report = {}
            key = monitor.get("report_key")
            if key:
                report = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            result.drift.append(
                {
                    "label": label,
                    "decision": monitor.get("decision"),
                    "action": monitor.get("action"),
                    "report": report,
                }
            )
            progress.step(
                f"drift on {label}: {monitor.get('decision')} (action: {monitor.get('action')})"
            )


def _strip(doc: Any) -> Any:
    """Execution output without bulky lists (for the report)."""
    if isinstance(doc, dict):
        return {k: _strip(v) for k, v in doc.items()}
    if isinstance(doc, list) and len(doc) > 5:
        return [*doc[:5], f"... {len(doc) - 5} more"]
    return doc


def _run_queries(pipeline: LocalPipeline, result: LocalRunResult, progress: Progress) -> None:
    from clinical_ner.data import analytics

    tables = pipeline.workdir / "tables"
    sources = {
        "entities": LAKE.inference_entities,
        "notes": LAKE.inference_notes,
        "quarantine": LAKE.quarantine,
    }
    for table, prefix in sources.items():
        download_prefix(pipeline.s3, f"s3://{pipeline.lake.lake}/{prefix}", tables / table)
    import pyarrow.parquet as pq

    rows = []
    for f in sorted((tables / "entities").rglob("*.parquet")):
        rows.extend(pq.read_table(f).to_pylist())
    result.entity_rows = rows
    with_entities = {r["note_id"] for r in rows}
    first = next((n for n in result.notes_text if n in with_entities), None) or (
        rows[0]["note_id"] if rows else ""
    )
    params = {q.name: {"note_id": first} for q in analytics.QUERIES if q.parameters}
    progress.step(f"Athena named queries in DuckDB over {len(rows)} entity rows")
    con = analytics.connect_local(tables)
    try:
        for q in analytics.QUERIES:
            started = time.monotonic()
            cols, data = analytics.run_query(con, q, params.get(q.name))
            result.queries[q.name] = {
                "description": q.description,
                "parameters": params.get(q.name, {}),
                "columns": cols,
                "rows": [list(r) for r in data],
                "seconds": round(time.monotonic() - started, 3),
            }
    finally:
        con.close()
    result.entities_sample = [r for r in rows if r["note_id"] == first][:12]


def _maybe_retrain(pipeline: LocalPipeline, result: LocalRunResult, progress: Progress) -> None:
    retrain = next((d for d in result.drift if d.get("action") == "retrain"), None)
    fn = next((f for n, f in pipeline.lambdas.items() if n.endswith("retraining-trigger")), None)
    if fn is None:
        result.missing.append("no retraining-trigger Lambda in the synthesized app")
        return
    if retrain is None:
        result.retraining = {"invoked": False, "reason": "no window asked for retraining"}
        return
    alarm_name = f"{pipeline.opts.stage}-drift-moderate"
    event = {
        "source": "aws.cloudwatch",
        "alarmArn": f"arn:aws:cloudwatch:{pipeline.aws.region}:{pipeline.aws.account}:alarm:"
        f"{alarm_name}",
        "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "alarmData": {
            "alarmName": alarm_name,
            "state": {
                "value": "ALARM",
                "reason": "DriftLevel >= 1 (moderate) on the shifted window (local run)",
            },
            "previousState": {"value": "OK"},
        },
    }
    progress.step("drift asked for retraining: invoking the retraining-trigger Lambda")
    handler = pipeline._lambda(fn)
    ctx = LambdaContext(fn.function_name, str(uuid.uuid4()), fn.arn)
    first = handler(event, ctx)
    second = handler(event, ctx)  # the same alarm again: the cooldown debounces it
    sfn = pipeline.aws.client("stepfunctions")
    arn = fn.environment.get("TRAINING_STATE_MACHINE_ARN", "")
    executions = sfn.list_executions(stateMachineArn=arn).get("executions", []) if arn else []
    started_input = None
    if executions:
        d = sfn.describe_execution(executionArn=executions[0]["executionArn"])
        started_input = json.loads(d.get("input") or "{}")
    result.retraining = {
        "invoked": True,
        "window": retrain["label"],
        "state_machine_arn": arn,
        "first_call": first,
        "second_call": second,
        "executions": [{"name": e["name"], "status": e["status"]} for e in executions],
        "execution_input": started_input,
    }
    if not isinstance(started_input, dict):
        return
    # moto only records the execution; run it here, as Step Functions would. A model is in
    # production now, so this run trains against it and the gate compares like with like.
    ex = pipeline.execute("Training", started_input, "retraining")
    result.retraining["execution"] = _execution_summary(ex)
    result.retraining["gate"] = (ex.output or {}).get("gate") or {}
    result.retraining["tracking"] = dict(result.tracking)  # before a later run replaces it
    result.retraining["register"] = _strip((ex.output or {}).get("register") or {})
    if not ex.succeeded:
        raise LocalRunError(f"the retraining execution ended {ex.status}: {ex.error} ({ex.cause})")


def main_tempdir() -> Path:  # pragma: no cover - convenience for interactive use
    return Path(tempfile.mkdtemp(prefix="clinical-ner-local-"))
