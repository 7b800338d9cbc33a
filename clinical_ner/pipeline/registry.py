"""Training-pipeline steps against S3 and the SageMaker Model Registry (boto3, no spaCy).

Used by the Lambdas ``resolve_dataset``, ``register_model``, ``gate_model`` and
``approve_or_reject`` (and by the local runner against the embedded AWS emulator):

- `resolve_dataset`: which ``curated/training/<dataset_version>/`` to train on, with the S3
  URIs of its train/dev/test channels (``latest`` = ``curated/training/_latest.json``).
- `production_model`: the current Approved package and its ``model.tar.gz``, which the training
  job scores on the candidate's own dev/test data so the gate compares like with like.
- `register_candidate`: read ``metrics.json`` out of the training job's ``model.tar.gz``
  (streamed, never fully buffered), store it next to the tarball as the package's
  model-quality statistics, log the run to the MLflow tracking server (the training job is
  network-isolated, so it cannot; `clinical_ner.pipeline.tracking`), and create a model package
  (PendingManualApproval) whose inference specification is the job's image + model data and
  whose metadata names the MLflow run; or, when the candidate's ``model_version`` is the
  production package's, register nothing and say ``identical_to_production``.
- `gate_candidate`: the candidate's metrics vs the newest Approved package's, through
  `clinical_ner.pipeline.gating.decide`.
- `record_decision`: Approved / Rejected / left pending, with the gate summary as the approval
  description and the machine-readable outcome in the package's customer metadata.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from collections.abc import Mapping
from typing import Any

from clinical_ner.model.contracts import (
    METRICS_FILE,
    ContractError,
    Metrics,
    dump_metrics,
    read_metrics,
)
from clinical_ner.pipeline import gating, tracking
from clinical_ner.pipeline.aws_runtime import PipelineStepError
from clinical_ner.pipeline.stage_config import LAKE, GateThresholds

METRICS_MEMBER = METRICS_FILE
METRICS_MAX_BYTES = 5 * 1024 * 1024
CONTENT_TYPES = ["application/json", "application/jsonlines"]
RESPONSE_TYPES = ["application/json"]
APPROVED = "Approved"
REJECTED = "Rejected"
PENDING = "PendingManualApproval"
DESCRIPTION_MAX = 1024  # ApprovalDescription / ModelPackageDescription limit
METADATA_VALUE_MAX = 256
LATEST = "latest"
TRIGGERS = ("new_annotations", "reviewed_annotations", "drift", "manual", "schedule")
_DATASET_VERSION = re.compile(r"^ds-[0-9a-f]{16}$")
_S3_URI = re.compile(r"^s3://([^/]+)/(.+)$")
SPLIT_FILES = {"train": "train.jsonl", "dev": "dev.jsonl", "test": "test.jsonl"}


def parse_s3_uri(uri: str) -> tuple[str, str]:
    m = _S3_URI.match(uri or "")
    if not m:
        raise PipelineStepError(f"not an s3:// object URI: {uri!r}")
    return m.group(1), m.group(2)


def _read_json(s3: Any, bucket: str, key: str) -> Any:
    from botocore.exceptions import ClientError

    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read(METRICS_MAX_BYTES + 1)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            raise PipelineStepError(f"s3://{bucket}/{key} does not exist") from None
        raise
    if len(body) > METRICS_MAX_BYTES:
        raise PipelineStepError(f"s3://{bucket}/{key} is larger than {METRICS_MAX_BYTES} bytes")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise PipelineStepError(f"s3://{bucket}/{key} is not JSON") from None


# ------------------------------------------------------------------------------ dataset


def resolve_dataset(s3: Any, bucket: str, dataset_version: str = LATEST) -> dict[str, Any]:
    """The dataset to train on: version, manifest and the three channel URIs."""
    version = dataset_version or LATEST
    if version == LATEST:
        latest = _read_json(s3, bucket, f"{LAKE.curated_training}_latest.json")
        version = str(latest.get("dataset_version", "")) if isinstance(latest, Mapping) else ""
    if not _DATASET_VERSION.match(version):
        raise PipelineStepError(f"not a dataset version: {version!r}")
    prefix = f"{LAKE.curated_training}{version}/"
    manifest = _read_json(s3, bucket, f"{prefix}manifest.json")  # written last: complete
    splits = manifest.get("splits", {}) if isinstance(manifest, Mapping) else {}
    out: dict[str, Any] = {
        "dataset_version": version,
        "prefix": f"s3://{bucket}/{prefix}",
        "manifest_uri": f"s3://{bucket}/{prefix}manifest.json",
        "docs": {name: int(s.get("docs", 0)) for name, s in sorted(splits.items())},
    }
    for split, fname in SPLIT_FILES.items():
        out[f"{split}_uri"] = f"s3://{bucket}/{prefix}{fname}"
    if not out["docs"].get("train"):
        raise PipelineStepError(f"dataset {version} has no training documents")
    return out


def production_model(sm: Any, group_name: str) -> dict[str, str] | None:
    """The production model (newest Approved package): its ARN and model data URL, if any."""
    arn = latest_approved(sm, group_name)
    if arn is None:
        return None
    desc = sm.describe_model_package(ModelPackageName=arn)
    try:
        url = str(desc["InferenceSpecification"]["Containers"][0]["ModelDataUrl"])
    except (KeyError, IndexError):
        raise PipelineStepError(f"{arn} has no model data in its inference spec") from None
    parse_s3_uri(url)
    return {"model_package_arn": arn, "model_data_url": url}


def validated_eval_uri(s3: Any, bucket: str) -> str | None:
    """``s3://<lake>/raw/validated_eval/`` when it holds an annotation file, else None.

    A SageMaker channel over an empty prefix fails the job, so the channel is only added when
    the validated evaluation set (docs/review.md) has at least one reviewed note.
    """
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=LAKE.validated_eval)
    for page in pages:
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(".jsonl") and obj.get("Size", 0) > 0:
                return f"s3://{bucket}/{LAKE.validated_eval}"
    return None


def resolve_training_inputs(
    s3: Any, sm: Any, *, bucket: str, group_name: str, dataset_version: str = LATEST
) -> dict[str, Any]:
    """`resolve_dataset` + ``production`` (first model: none) + ``validated_eval_uri`` (if any).

    The validated evaluation set is only of use against a production model (the gate compares
    both on it), so ``validated_eval_uri`` is resolved with one only.
    """
    out = resolve_dataset(s3, bucket, dataset_version)
    production = production_model(sm, group_name)
    if production is not None:
        out["production"] = production
        uri = validated_eval_uri(s3, bucket)
        if uri is not None:
            out["validated_eval_uri"] = uri
    return out


# --------------------------------------------------------------------------- metrics


def _metrics(data: object, where: str) -> Metrics:
    """`contracts.read_metrics` with its error as the step's error (older schemas migrate)."""
    try:
        return read_metrics(data, where)
    except ContractError as exc:
        raise PipelineStepError(str(exc)) from None


def metrics_from_model_tarball(s3: Any, model_data_url: str) -> Metrics:
    """Stream ``model.tar.gz`` from S3 and return its top-level ``metrics.json``."""
    bucket, key = parse_s3_uri(model_data_url)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        with tarfile.open(fileobj=body, mode="r|gz") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if name != METRICS_MEMBER or not member.isfile():
                    continue
                if member.size > METRICS_MAX_BYTES:
                    raise PipelineStepError(f"{METRICS_MEMBER} in {model_data_url} is too large")
                fh = tar.extractfile(member)
                if fh is None:
                    break
                try:
                    data = json.loads(fh.read())
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise PipelineStepError(f"{METRICS_MEMBER} in the model is not JSON") from None
                if not isinstance(data, dict):
                    raise PipelineStepError(f"{METRICS_MEMBER} in the model is not an object")
                return _metrics(data, f"{METRICS_MEMBER} in {model_data_url}")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise PipelineStepError(f"{model_data_url} is not a readable tar.gz ({exc})") from None
    raise PipelineStepError(f"{model_data_url} has no top-level {METRICS_MEMBER}")


def metrics_uri_for(model_data_url: str) -> str:
    """``s3://b/models/<job>/output/model.tar.gz`` -> ``s3://b/models/<job>/output/metrics.json``."""
    bucket, key = parse_s3_uri(model_data_url)
    base = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
    return f"s3://{bucket}/{base}{METRICS_MEMBER}"


def _summary(metrics: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for split in gating.SPLITS_BY_PREFERENCE:
        block = metrics.get(split)
        if isinstance(block, Mapping) and isinstance(block.get("ents_f"), int | float):
            out[f"{split}_f1"] = round(float(block["ents_f"]), 6)
    return out


# -------------------------------------------------------------------------- registry


def _metadata(values: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v)[:METADATA_VALUE_MAX] for k, v in values.items() if v not in (None, "")}


def register_candidate(
    sm: Any,
    s3: Any,
    *,
    group_name: str,
    job_name: str,
    model_data_url: str,
    image_uri: str,
    dataset_version: str,
    trigger: str,
    execution_id: str = "",
    tracking_uri: str = "",
    experiment: str = "",
) -> dict[str, Any]:
    """Create the candidate's model package (PendingManualApproval) with its metrics attached.

    Idempotent per training job: a retried step finds the package it created before (same
    ``training_job`` metadata) and the MLflow run it logged before (same job tag) instead of
    registering or logging a second one. Tracking failures are reported in the output and the
    package metadata (``mlflow_status``), never raised: they must not block a model.
    """
    metrics = metrics_from_model_tarball(s3, model_data_url)
    metrics_uri = metrics_uri_for(model_data_url)
    bucket, key = parse_s3_uri(metrics_uri)
    s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=dump_metrics(metrics).encode(),
        ContentType="application/json",
    )
    execution = execution_id.rsplit(":", 1)[-1] if execution_id else ""
    record = tracking.run_record(
        metrics,
        job_name=job_name,
        artifact_uri=model_data_url,
        extra_tags={
            "dataset_version": dataset_version,
            "trigger": trigger,
            "metrics_uri": metrics_uri,
            "pipeline_execution": execution,
        },
    )
    tracked = tracking.log_record(record, tracking_uri=tracking_uri, experiment=experiment)
    existing = _find_package_for_job(sm, group_name, job_name)
    summary = _summary(metrics)
    model_version = str(metrics.get("model_version", ""))
    if existing is None:
        identical = identical_production(sm, s3, group_name, model_version)
        if identical is not None:
            # Same config, data and seed as production: a second package of the same model
            # would only be gated on a tie and redeployed. Say so; the pipeline ends here.
            return {
                "identical_to_production": True,
                "registered": False,
                "summary": f"identical to production ({model_version}), not registered",
                "production_package_arn": identical,
                "metrics_uri": metrics_uri,
                "model_version": model_version,
                "metrics": summary,
                "tracking": tracked,
            }
    if existing is not None:
        arn = existing
    else:
        description = (
            f"clinical NER {metrics.get('model_version', job_name)}; dataset {dataset_version}; "
            f"trigger {trigger}; " + ", ".join(f"{k} {v:.4f}" for k, v in summary.items())
        )[:DESCRIPTION_MAX]
        response = sm.create_model_package(
            ModelPackageGroupName=group_name,
            ModelPackageDescription=description,
            ModelApprovalStatus=PENDING,
            InferenceSpecification={
                "Containers": [{"Image": image_uri, "ModelDataUrl": model_data_url}],
                "SupportedContentTypes": CONTENT_TYPES,
                "SupportedResponseMIMETypes": RESPONSE_TYPES,
            },
            ModelMetrics={
                "ModelQuality": {
                    "Statistics": {"ContentType": "application/json", "S3Uri": metrics_uri}
                }
            },
            CustomerMetadataProperties=_metadata(
                {
                    "training_job": job_name,
                    "dataset_version": dataset_version,
                    "trigger": trigger,
                    "model_version": metrics.get("model_version"),
                    "execution": execution,
                    "mlflow_status": tracked["status"],
                    "mlflow_run_id": tracked.get("run_id"),
                    "mlflow_experiment": tracked.get("experiment"),
                    **summary,
                }
            ),
            ClientToken=hashlib.sha256(job_name.encode()).hexdigest()[:32],
        )
        arn = response["ModelPackageArn"]
    tracked = tracking.tag_run(tracked, tracking.PACKAGE_TAG, arn, tracking_uri=tracking_uri)
    return {
        "identical_to_production": False,
        "registered": True,
        "model_package_arn": arn,
        "metrics_uri": metrics_uri,
        "model_version": str(metrics.get("model_version", "")),
        "metrics": summary,
        "tracking": tracked,
    }


def _packages(sm: Any, group_name: str, status: str | None = None) -> list[dict[str, Any]]:
    kwargs: dict[str, Any] = {
        "ModelPackageGroupName": group_name,
        "SortBy": "CreationTime",
        "SortOrder": "Descending",
        "MaxResults": 100,
    }
    if status:
        kwargs["ModelApprovalStatus"] = status
    out: list[dict[str, Any]] = []
    while True:
        page = sm.list_model_packages(**kwargs)
        out.extend(page.get("ModelPackageSummaryList", []))
        token = page.get("NextToken")
        if not token:
            return out
        kwargs["NextToken"] = token


def _find_package_for_job(sm: Any, group_name: str, job_name: str) -> str | None:
    for summary in _packages(sm, group_name)[:20]:  # a retry happens minutes after create
        arn = summary["ModelPackageArn"]
        meta = sm.describe_model_package(ModelPackageName=arn).get("CustomerMetadataProperties", {})
        if meta.get("training_job") == job_name:
            return arn
    return None


def identical_production(sm: Any, s3: Any, group_name: str, model_version: str) -> str | None:
    """The production package's ARN when its ``model_version`` is `model_version`, else None.

    The model version hashes the effective config, the training data and the seed
    (`clinical_ner.model.training.model_version_for`): equal versions are the same model. Read from
    the package metadata, else from its attached metrics.json.
    """
    arn = latest_approved(sm, group_name) if model_version else None
    if arn is None:
        return None
    meta = sm.describe_model_package(ModelPackageName=arn).get("CustomerMetadataProperties") or {}
    production = meta.get("model_version") or package_metrics(sm, s3, arn).get("model_version")
    return arn if production == model_version else None


def latest_approved(sm: Any, group_name: str, exclude_arn: str = "") -> str | None:
    """ARN of the newest Approved package of the group (the production model), if any."""
    for summary in _packages(sm, group_name, APPROVED):
        if summary.get("ModelApprovalStatus", APPROVED) != APPROVED:
            continue  # an emulator may ignore the status filter
        if summary["ModelPackageArn"] != exclude_arn:
            return str(summary["ModelPackageArn"])
    return None


def package_metrics(sm: Any, s3: Any, package_arn: str) -> Metrics:
    """The metrics.json attached to a package as its model-quality statistics."""
    desc = sm.describe_model_package(ModelPackageName=package_arn)
    try:
        uri = desc["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
    except KeyError:
        raise PipelineStepError(f"{package_arn} has no model-quality statistics") from None
    data = _read_json(s3, *parse_s3_uri(uri))
    if not isinstance(data, dict):
        raise PipelineStepError(f"{uri} is not a JSON object")
    return _metrics(data, uri)


def gate_candidate(
    sm: Any, s3: Any, *, group_name: str, candidate_arn: str, thresholds: GateThresholds
) -> dict[str, Any]:
    candidate = package_metrics(sm, s3, candidate_arn)
    production_arn = latest_approved(sm, group_name, exclude_arn=candidate_arn)
    production = None if production_arn is None else package_metrics(sm, s3, production_arn)
    decision = gating.decide(candidate, production, thresholds)
    return {
        **decision.to_dict(),
        "candidate_package_arn": candidate_arn,
        "production_package_arn": production_arn,
    }


ACTIONS = {"approve": APPROVED, "reject": REJECTED, "pending": PENDING}


def record_decision(
    sm: Any, *, package_arn: str, action: str, gate: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Set the package's approval status (``pending`` keeps it) and record the gate outcome."""
    if action not in ACTIONS:
        raise PipelineStepError(f"unknown approval action {action!r}; one of {sorted(ACTIONS)}")
    status = ACTIONS[action]
    gate = gate or {}
    summary = str(gate.get("summary") or "no gate decision recorded")
    prefix = {
        "approve": "Approved by the training pipeline",
        "reject": "Rejected by the training pipeline",
        "pending": "Passed the gate; awaiting manual approval",
    }[action]
    kwargs: dict[str, Any] = {
        "ModelPackageArn": package_arn,
        # Explicit even for "pending" (it restates PendingManualApproval): the status is
        # always what this step says it is.
        "ModelApprovalStatus": status,
        "ApprovalDescription": f"{prefix}: {summary}"[:DESCRIPTION_MAX],
        "CustomerMetadataProperties": _metadata(
            {
                "gate_decision": gate.get("decision", "none"),
                "gate_failed": ",".join(gate.get("failed", [])) or "none",
                "gate_split": gate.get("split"),
                "gate_comparison": gate.get("comparison"),
                "gate_candidate_f1": gate.get("candidate_f1"),
                "gate_production_f1": gate.get("production_f1"),
                "gate_production_package": gate.get("production_package_arn"),
            }
        ),
    }
    sm.update_model_package(**kwargs)
    return {"model_package_arn": package_arn, "status": status, "action": action}
