"""Experiment tracking: one MLflow run per training run (parameters, metrics, artifact reference).

Tracking is on when a tracking URI is given (``MLFLOW_TRACKING_URI``):

* the ARN of a SageMaker managed MLflow tracking server
  (``arn:aws:sagemaker:<region>:<account>:mlflow-tracking-server/<name>``): logged over the
  MLflow REST API by `MlflowRestClient`, signed with SigV4 (service ``sagemaker-mlflow``) and
  routed by the ``x-mlflow-sm-tracking-server-arn`` header, as the ``sagemaker-mlflow`` plugin
  does, so only the standard library and botocore are needed (the register Lambda uses it).
  The URL is ``https://<region>.experiments.sagemaker.aws`` (reached through the VPC's
  ``aws.sagemaker.<region>.experiments`` interface endpoint), or ``MLFLOW_SAGEMAKER_ENDPOINT``
  when set (local mode points it at a local ``mlflow server``);
* a ``file:`` URI (local file store, the default of local runs) or an ``http(s)://`` MLflow
  server: logged with the ``mlflow`` client library, when installed.

The experiment is ``MLFLOW_EXPERIMENT_NAME`` (default ``clinical-ner``). A run is found again by
its ``sagemaker.training_job_name`` tag, so a retried pipeline step never logs a second run for
the same training job.

Tracking never decides whether a model is good, so it never fails a training run or a pipeline
step: without a URI, or without the client library for ``file:``/``http(s)``, tracking is
reported as disabled; an error while logging is reported as failed (exception type and a
truncated message). The outcome is returned so the caller can record it (metrics.json, the
register step's output).

MLflow 3 refuses the file store unless ``MLFLOW_ALLOW_FILE_STORE=true``; choosing a ``file:``
URI is taken as that opt-in, so it is set for ``file:`` URIs only.

Only names, numbers, versions, hashes and S3 references are logged: never note text (the model
and data go to S3 with the training job; MLflow gets a reference to them).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

DEFAULT_EXPERIMENT = "clinical-ner"
_MAX_PARAM_CHARS = 500  # MLflow accepts more; keep params readable in the UI
_MAX_TAG_CHARS = 5000  # MLflow's limit is 8000
_METRIC_KEY = re.compile(r"[^\w./ -]")

TRACKING_SERVER_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):sagemaker:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"mlflow-tracking-server/(?P<name>[A-Za-z0-9](-*[A-Za-z0-9]){0,255})$"
)
SAGEMAKER_ENDPOINT_ENV = "MLFLOW_SAGEMAKER_ENDPOINT"
SIGV4_SERVICE = "sagemaker-mlflow"
ARN_HEADER = "x-mlflow-sm-tracking-server-arn"
JOB_TAG = "sagemaker.training_job_name"
PACKAGE_TAG = "sagemaker.model_package_arn"
REST_TIMEOUT_SECONDS = 15
# MLflow's per-request limits of runs/log-batch.
_BATCH_LIMITS = {"params": 100, "metrics": 1000, "tags": 100}

log = logging.getLogger(__name__)


def redact_uri(uri: str) -> str:
    """A tracking URI without credentials (``https://user:pw@host`` -> ``https://***@host``)."""
    return re.sub(r"(?<=://)[^/@]+@", "***@", uri)


def flatten_metrics(prefix: str, value: object, out: dict[str, float] | None = None) -> dict:
    """Numeric leaves of nested dicts as ``a.b.c -> float`` (bools and None skipped)."""
    out = {} if out is None else out
    if isinstance(value, Mapping):
        for key, sub in value.items():
            flatten_metrics(f"{prefix}.{key}" if prefix else str(key), sub, out)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        out[_METRIC_KEY.sub("_", prefix)] = float(value)
    return out


def is_tracking_server_arn(uri: str) -> bool:
    return bool(TRACKING_SERVER_ARN.match(uri or ""))


def combined_hash(files: Mapping[str, str]) -> str:
    """One hash over the data files' sha256 digests (not their paths: the same data read from
    /opt/ml/input or from a local checkout is the same data)."""
    return hashlib.sha256(json.dumps(sorted(files.values())).encode()).hexdigest()


def numeric_only(value: object) -> object:
    """`value` without list leaves (reliability curves), so `flatten_metrics` keeps scalars."""
    if isinstance(value, dict):
        return {k: numeric_only(v) for k, v in value.items() if not isinstance(v, list)}
    return value


@dataclass(frozen=True)
class RunRecord:
    """What one training run logs: names, numbers and references, never data."""

    run_name: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str] = field(default_factory=dict)


def run_record(
    metrics_doc: Mapping[str, Any],
    *,
    job_name: str,
    artifact_uri: str,
    extra_tags: Mapping[str, str] | None = None,
) -> RunRecord:
    """The MLflow run of a training job, built from the metrics.json it wrote.

    One definition for the ``train`` entry (logging from inside the job) and the register step
    (logging from outside a network-isolated job): both log the same run.
    """
    summary = metrics_doc.get("summary")
    metrics: dict[str, float] = flatten_metrics("", summary if isinstance(summary, Mapping) else {})
    calibration = metrics_doc.get("calibration")
    if isinstance(calibration, Mapping):
        metrics.update(flatten_metrics("calibration", numeric_only(dict(calibration))))
    for key in ("training_seconds", "train_docs", "dev_docs"):
        metrics.update(flatten_metrics(key, metrics_doc.get(key)))
    hyperparameters = metrics_doc.get("hyperparameters")
    params: dict[str, str] = {
        str(k): str(v)
        for k, v in (hyperparameters if isinstance(hyperparameters, Mapping) else {}).items()
    }
    if isinstance(metrics_doc.get("label_map"), Mapping):
        params["label_map"] = json.dumps(metrics_doc["label_map"], sort_keys=True)
    if metrics_doc.get("config_sha256"):
        params["config_sha256"] = str(metrics_doc["config_sha256"])
    if isinstance(metrics_doc.get("training_data"), Mapping):
        params["data_sha256"] = combined_hash(
            {str(k): str(v) for k, v in metrics_doc["training_data"].items()}
        )
    model_version = str(metrics_doc.get("model_version", ""))
    tags = {
        "model_version": model_version,
        "model_artifact_uri": artifact_uri,
        "dev_source": str(metrics_doc.get("dev_source", "")),
    }
    baseline = metrics_doc.get("production_baseline")
    if isinstance(baseline, Mapping) and baseline.get("model_version"):
        tags["production_model_version"] = str(baseline["model_version"])
    if job_name:
        tags[JOB_TAG] = job_name
    tags.update(extra_tags or {})
    return RunRecord(
        run_name=job_name or model_version or "training-run",
        params=params,
        metrics=metrics,
        tags={k: v for k, v in tags.items() if v},
    )


# ---------------------------------------------------------------------- REST client


class TrackingError(RuntimeError):
    """An MLflow REST call failed; carries the HTTP status and MLflow's error code."""

    def __init__(self, message: str, status: int = 0, error_code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code


@dataclass(frozen=True)
class RestEndpoint:
    """Where and how to call an MLflow server's REST API."""

    base_url: str
    headers: Mapping[str, str]
    sign_region: str | None = None  # SigV4-sign for the managed tracking server

    @classmethod
    def for_uri(cls, uri: str) -> RestEndpoint:
        m = TRACKING_SERVER_ARN.match(uri)
        if m:
            partition = m.group("partition")
            if partition not in ("aws", "aws-us-gov"):
                raise TrackingError(f"partition {partition} has no SageMaker MLflow endpoint")
            base = os.environ.get(SAGEMAKER_ENDPOINT_ENV) or (
                f"https://{m.group('region')}.experiments.sagemaker.aws"
            )
            return cls(base.rstrip("/"), {ARN_HEADER: uri}, m.group("region"))
        if uri.startswith(("http://", "https://")):
            return cls(uri.rstrip("/"), {})
        raise TrackingError(f"not an MLflow REST URI: {redact_uri(uri)}")


def sigv4_headers(
    method: str, url: str, body: bytes, headers: Mapping[str, str], region: str, credentials: Any
) -> dict[str, str]:
    """`headers` plus SigV4 ``Authorization`` for the ``sagemaker-mlflow`` service."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    signed = {**headers, "X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()}
    request = AWSRequest(method=method, url=url, data=body or None, headers=signed)
    SigV4Auth(credentials, SIGV4_SERVICE, region).add_auth(request)
    return dict(request.headers.items())


def _chunks(items: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class MlflowRestClient:
    """The few MLflow REST calls a training run needs (standard library + botocore)."""

    def __init__(
        self,
        endpoint: RestEndpoint,
        *,
        credentials: Any = None,
        timeout: float = REST_TIMEOUT_SECONDS,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._credentials = credentials

    def _sign(self, method: str, url: str, body: bytes, headers: dict[str, str]) -> dict:
        if self.endpoint.sign_region is None:
            return headers
        if self._credentials is None:
            import botocore.session

            self._credentials = botocore.session.get_session().get_credentials()
            if self._credentials is None:
                raise TrackingError("no AWS credentials to sign MLflow requests with")
        region = self.endpoint.sign_region
        return sigv4_headers(method, url, body, headers, region, self._credentials)

    def call(
        self,
        method: str,
        api: str,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        url = f"{self.endpoint.base_url}/api/2.0/mlflow/{api}"
        if query:
            url += "?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
        data = b"" if body is None else json.dumps(body, allow_nan=False).encode()
        headers = {**self.endpoint.headers, "Content-Type": "application/json"}
        headers = self._sign(method, url, data, headers)
        request = urllib.request.Request(url, data=data or None, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            code = ""
            with contextlib.suppress(ValueError, AttributeError):
                code = str(json.loads(exc.read() or b"{}").get("error_code", ""))
            raise TrackingError(
                f"MLflow {api} answered HTTP {exc.code} {code}".rstrip(), exc.code, code
            ) from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(f"MLflow {api} unreachable: {type(reason).__name__}") from None
        try:
            out = json.loads(raw or b"{}")
        except ValueError:
            raise TrackingError(f"MLflow {api} answered with non-JSON") from None
        return out if isinstance(out, dict) else {}

    def experiment_id(self, name: str) -> str:
        """The id of experiment `name`, created when missing (safe against a racing creator)."""
        for _ in range(2):
            try:
                found = self.call("GET", "experiments/get-by-name", query={"experiment_name": name})
                return str(found["experiment"]["experiment_id"])
            except TrackingError as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
            try:
                return str(self.call("POST", "experiments/create", {"name": name})["experiment_id"])
            except TrackingError as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
        raise TrackingError(f"experiment {name!r} could neither be found nor created")

    def find_run(self, experiment_id: str, tag: str, value: str) -> dict[str, Any] | None:
        """The newest run of the experiment whose tag `tag` equals `value` (its ``info``)."""
        quoted = value.replace("\\", "\\\\").replace("'", "\\'")
        found = self.call(
            "POST",
            "runs/search",
            {
                "experiment_ids": [experiment_id],
                "filter": f"tags.`{tag}` = '{quoted}'",
                "max_results": 1,
                "order_by": ["attributes.start_time DESC"],
            },
        )
        runs = found.get("runs") or []
        return dict(runs[0]["info"]) if runs else None

    def log_run(self, experiment: str, record: RunRecord) -> dict[str, Any]:
        """Log `record` as one FINISHED run; an earlier run of the same job is reused."""
        experiment_id = self.experiment_id(experiment)
        job = record.tags.get(JOB_TAG)
        existing = self.find_run(experiment_id, JOB_TAG, job) if job else None
        if existing and existing.get("status") == "FINISHED":
            return {"run_id": str(existing["run_id"]), "experiment_id": experiment_id, "new": False}
        now = int(time.time() * 1000)
        if existing:
            run_id = str(existing["run_id"])
        else:
            created = self.call(
                "POST",
                "runs/create",
                {
                    "experiment_id": experiment_id,
                    "run_name": record.run_name,
                    "start_time": now,
                    "tags": [{"key": JOB_TAG, "value": job}] if job else [],
                },
            )
            run_id = str(created["run"]["info"]["run_id"])
        batches = {
            "params": [
                {"key": k, "value": str(v)[:_MAX_PARAM_CHARS]} for k, v in record.params.items()
            ],
            "metrics": [
                {"key": k, "value": float(v), "timestamp": now, "step": 0}
                for k, v in record.metrics.items()
                if math.isfinite(float(v))
            ],
            "tags": [{"key": k, "value": str(v)[:_MAX_TAG_CHARS]} for k, v in record.tags.items()],
        }
        for kind, items in batches.items():
            for chunk in _chunks(items, _BATCH_LIMITS[kind]):
                self.call("POST", "runs/log-batch", {"run_id": run_id, kind: chunk})
        self.call("POST", "runs/update", {"run_id": run_id, "status": "FINISHED", "end_time": now})
        return {"run_id": run_id, "experiment_id": experiment_id, "new": existing is None}

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.call("POST", "runs/set-tag", {"run_id": run_id, "key": key, "value": value})

    def get_run(self, run_id: str) -> dict[str, Any]:
        return dict(self.call("GET", "runs/get", query={"run_id": run_id})["run"])


def _failed(exc: BaseException, uri: str) -> dict[str, object]:
    reason = f"{type(exc).__name__}: {redact_uri(str(exc))[:300]}"
    log.warning("MLflow tracking failed: %s", reason)
    return {"status": "failed", "reason": reason, "tracking_uri": redact_uri(uri)}


def log_record(
    record: RunRecord,
    *,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    credentials: Any = None,
) -> dict[str, object]:
    """Log `record` to a tracking server over REST; returns the outcome (never raises).

    Used where the ``mlflow`` library is absent (the register Lambda). URIs other than a
    tracking-server ARN or ``http(s)://`` are reported as disabled.
    """
    uri = tracking_uri if tracking_uri is not None else os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return {"status": "disabled", "reason": "MLFLOW_TRACKING_URI is not set"}
    if not (is_tracking_server_arn(uri) or uri.startswith(("http://", "https://"))):
        return {"status": "disabled", "reason": "not a tracking server URI"}
    experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    try:
        client = MlflowRestClient(RestEndpoint.for_uri(uri), credentials=credentials)
        logged = client.log_run(experiment, record)
    except Exception as exc:  # tracking must not fail the pipeline
        return _failed(exc, uri)
    log.info("MLflow run %s logged to experiment %r", logged["run_id"], experiment)
    return {
        "status": "logged",
        "run_id": logged["run_id"],
        "experiment": experiment,
        "experiment_id": logged["experiment_id"],
        "new_run": logged["new"],
        "tracking_uri": redact_uri(uri),
    }


def tag_run(
    outcome: Mapping[str, object],
    key: str,
    value: str,
    *,
    tracking_uri: str | None = None,
    credentials: Any = None,
) -> dict[str, object]:
    """Add a tag to the run `log_record` logged (no-op unless it was logged)."""
    if outcome.get("status") != "logged":
        return dict(outcome)
    uri = tracking_uri if tracking_uri is not None else os.environ.get("MLFLOW_TRACKING_URI", "")
    try:
        client = MlflowRestClient(RestEndpoint.for_uri(uri), credentials=credentials)
        client.set_tag(str(outcome["run_id"]), key, value)
    except Exception as exc:  # tracking must not fail the pipeline
        return {**outcome, "tag_status": "failed", "tag_reason": _failed(exc, uri)["reason"]}
    return dict(outcome)


def log_training_run(
    *,
    params: Mapping[str, object],
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    run_name: str,
    documents: Mapping[str, Mapping[str, Any]] | None = None,
    tracking_uri: str | None = None,
) -> dict[str, object]:
    """Log one finished training run; returns ``{"status": ..., ...}`` (never raises)."""
    uri = tracking_uri if tracking_uri is not None else os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        log.info("MLflow tracking disabled: MLFLOW_TRACKING_URI is not set")
        return {"status": "disabled", "reason": "MLFLOW_TRACKING_URI is not set"}
    if is_tracking_server_arn(uri):  # the REST client needs no mlflow library or plugin
        record = RunRecord(run_name, {k: str(v) for k, v in params.items()}, dict(metrics))
        return log_record(replace(record, tags=dict(tags)), tracking_uri=uri)
    try:
        import mlflow
    except ImportError:
        log.warning("MLflow tracking disabled: the mlflow client is not installed")
        return {"status": "disabled", "reason": "mlflow client not installed"}
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    try:
        mlflow.set_tracking_uri(uri)
        experiment_id = mlflow.set_experiment(experiment).experiment_id
        with mlflow.start_run(run_name=run_name, experiment_id=experiment_id) as run:
            mlflow.log_params({k: str(v)[:_MAX_PARAM_CHARS] for k, v in params.items()})
            mlflow.log_metrics(dict(metrics))
            mlflow.set_tags(dict(tags))
            for name, document in (documents or {}).items():
                mlflow.log_dict(dict(document), name)
            run_id = run.info.run_id
    except Exception as exc:  # tracking must not fail training
        reason = f"{type(exc).__name__}: {redact_uri(str(exc))[:300]}"
        log.warning("MLflow tracking failed: %s", reason)
        return {
            "status": "failed",
            "reason": reason,
            "tracking_uri": redact_uri(uri),
        }
    log.info("MLflow run %s logged to experiment %r", run_id, experiment)
    return {
        "status": "logged",
        "run_id": run_id,
        "experiment": experiment,
        "experiment_id": experiment_id,
        "tracking_uri": redact_uri(uri),
    }
