"""The extraction pipeline's Lambda steps against S3, SageMaker and CloudWatch (boto3 clients in).

The state machine (stacks/extraction.py) runs: validate_notes (Glue) -> `stage_transform_input`
-> `resolve_transform_model` -> Batch Transform -> `publish_extractions` -> `monitor_drift`.
Each function takes boto3 clients and plain values, returns a small JSON-able dict for the
next state, and never returns or logs note text (ids, counts and keys only). The same
functions run in the Lambdas and, against the embedded AWS emulator, in the local runner.

Lake keys: the validate_notes run report ``_runs/validate_notes/dt=<dt>/<run_id>.json`` tells
the partition of the run's curated notes; transform input/output live under
``inference/transform/<run_id>/`` (`clinical_ner.data.publish.transform_paths`); published tables
under ``inference/entities|notes/dt=<dt>/part-<publish_run_id>-NNNNN.parquet``; drift reports
under ``monitoring/reports/`` and production references under ``monitoring/reference/``.
With a review table (``REVIEW_TABLE`` of the publish Lambda), the publish step also queues
every published note for the validation team (docs/review.md), idempotent per (note_sha256,
model_version); without one, nothing is queued.
"""

from __future__ import annotations

import json
import re
import tarfile
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clinical_ner.data.data_prep import VALIDATE_JOB
from clinical_ner.pipeline.aws_runtime import PipelineStepError
from clinical_ner.pipeline.stage_config import LAKE, DriftThresholds, ReviewSettings

if TYPE_CHECKING:
    from clinical_ner.pipeline.monitoring import MonitorResult

RUN_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
MAX_MEMBER_BYTES = 64 * 1024 * 1024
TRANSFORM_JOB_NAME_MAX = 63


def _check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise PipelineStepError(f"invalid run id {run_id!r}")
    return run_id


def list_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return sorted(keys)


def get_json(s3: Any, bucket: str, key: str) -> Any:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def object_exists(s3: Any, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def put_metrics(cw: Any, data: list[dict[str, Any]]) -> None:
    from clinical_ner.pipeline.monitoring import NAMESPACE, chunks

    for chunk in chunks(data):
        cw.put_metric_data(Namespace=NAMESPACE, MetricData=chunk)


def store_monitor_result(
    s3: Any,
    cw: Any,
    bucket: str,
    stage: str,
    monitoring_prefix: str,
    ref_key: str,
    result: MonitorResult,
) -> str:
    """Write a monitor run's new reference (if any) and report, publish its drift metrics.

    Returns the report's key. Shared by the batch path and the endpoint-capture path.
    """
    from clinical_ner.model.contracts import dump_profile
    from clinical_ner.pipeline import monitoring

    if result.new_reference is not None:
        s3.put_object(
            Bucket=bucket,
            Key=ref_key,
            Body=dump_profile(result.new_reference).encode(),
            ContentType="application/json",
        )
    report_key = monitoring.report_key(monitoring_prefix, result.report)
    s3.put_object(
        Bucket=bucket,
        Key=report_key,
        Body=monitoring.report_json(result.report).encode(),
        ContentType="application/json",
    )
    put_metrics(cw, monitoring.drift_metric_data(result.report, stage))
    return report_key


def find_validate_report(s3: Any, bucket: str, run_id: str) -> tuple[str, dict[str, Any]]:
    """(key, report) of the validate_notes run `run_id`."""
    _check_run_id(run_id)
    prefix = f"{LAKE.run_reports}{VALIDATE_JOB}/"
    for key in reversed(list_keys(s3, bucket, prefix)):  # newest partitions last in key order
        if key.endswith(f"/{run_id}.json"):
            return key, get_json(s3, bucket, key)
    raise PipelineStepError(f"no validate_notes report for run {run_id} under {prefix}")


def _curated_keys(s3: Any, bucket: str, dt: str) -> list[str]:
    prefix = f"{LAKE.curated_notes}dt={dt}/"
    # Spark part files only: skip _SUCCESS markers and hidden/temporary files.
    return [
        k
        for k in list_keys(s3, bucket, prefix)
        if k.endswith(".parquet") and not k.rsplit("/", 1)[-1].startswith(("_", "."))
    ]


def _download(s3: Any, bucket: str, keys: list[str], into: Path) -> list[Path]:
    paths = []
    into.mkdir(parents=True, exist_ok=True)
    for i, key in enumerate(keys):
        path = into / f"{i:05d}.parquet"
        s3.download_file(bucket, key, str(path))
        paths.append(path)
    return paths


def _run_notes(s3: Any, bucket: str, run_id: str, dt: str, tmp: Path) -> list[Any]:
    from clinical_ner.data.publish import read_curated_notes

    return read_curated_notes(_download(s3, bucket, _curated_keys(s3, bucket, dt), tmp), run_id)


# --------------------------------------------------------------------------- stage


def transform_job_name(prefix: str, run_id: str) -> str:
    """A Batch Transform job name (<= 63 chars, [a-zA-Z0-9-]) unique per run."""
    import hashlib

    digest = hashlib.sha256(run_id.encode()).hexdigest()[:12]
    safe = re.sub(r"[^A-Za-z0-9-]", "-", prefix)[:40].strip("-")
    return f"{safe}-bt-{digest}"[:TRANSFORM_JOB_NAME_MAX]


def stage_transform_input(
    s3: Any, cw: Any, *, bucket: str, run_id: str, stage: str, job_prefix: str
) -> dict[str, Any]:
    """Write the run's curated notes as transform JSON Lines; publish the run's volumes."""
    from clinical_ner.data.publish import transform_input, transform_paths
    from clinical_ner.pipeline.monitoring import pipeline_metric_data

    report_key, report = find_validate_report(s3, bucket, run_id)
    dt = report["dt"]
    paths = transform_paths(run_id)
    with tempfile.TemporaryDirectory(prefix="stage-") as tmp:
        notes = _run_notes(s3, bucket, run_id, dt, Path(tmp))
        if notes:
            body = b"".join(transform_input(notes))
            s3.put_object(Bucket=bucket, Key=paths["input_key"], Body=body)
    records_in = int(report.get("in", 0))
    quarantined = int(report.get("quarantined", 0))
    put_metrics(
        cw,
        pipeline_metric_data(
            stage,
            None,
            {
                "NotesIn": records_in,
                "NotesCurated": int(report.get("curated", 0)),
                "NotesQuarantined": quarantined,
                "QuarantineRate": quarantined / records_in if records_in else 0.0,
                "NotesToExtract": len(notes),
            },
            datetime.now(UTC),
        ),
    )
    return {
        "run_id": run_id,
        "dt": dt,
        "validate_report_key": report_key,
        "notes": len(notes),
        "input_uri": f"s3://{bucket}/{paths['input_key']}",
        "output_uri": f"s3://{bucket}/{paths['output_prefix']}",
        "transform_job_name": transform_job_name(job_prefix, run_id),
    }


# --------------------------------------------------------------------------- model


def resolve_transform_model(
    sm: Any,
    *,
    group_name: str,
    execution_role_arn: str,
    model_prefix: str,
    vpc_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The SageMaker Model of the newest Approved package of the group (created once)."""
    from botocore.exceptions import ClientError

    from clinical_ner.pipeline.registry import latest_approved

    package_arn = latest_approved(sm, group_name)
    if package_arn is None:
        raise PipelineStepError(
            f"model package group {group_name} has no Approved model; train and approve one "
            "before extracting"
        )
    package = sm.describe_model_package(ModelPackageName=package_arn)
    container = package["InferenceSpecification"]["Containers"][0]
    version = package.get("ModelPackageVersion", 0)
    model_name = f"{model_prefix}-v{version}"[:63]
    try:
        sm.describe_model(ModelName=model_name)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ValidationException":
            raise
        kwargs: dict[str, Any] = {
            "ModelName": model_name,
            "PrimaryContainer": {
                "Image": container["Image"],
                "ModelDataUrl": container["ModelDataUrl"],
                "Environment": dict(container.get("Environment", {})),
            },
            "ExecutionRoleArn": execution_role_arn,
            "EnableNetworkIsolation": True,
            "Tags": [{"Key": "model-package", "Value": package_arn[-256:]}],
        }
        if vpc_config and vpc_config.get("Subnets"):
            kwargs["VpcConfig"] = dict(vpc_config)
        sm.create_model(**kwargs)
    return {
        "model_name": model_name,
        "package_arn": package_arn,
        "model_data_url": container["ModelDataUrl"],
    }


# --------------------------------------------------------------------------- publish


def publish_extractions(
    s3: Any,
    cw: Any,
    *,
    bucket: str,
    run_id: str,
    dt: str,
    stage: str,
    model_data_url: str,
    now: datetime | None = None,
    ddb: Any = None,
    review_table: str | None = None,
    review: ReviewSettings | None = None,
) -> dict[str, Any]:
    """Transform output + curated notes -> entities/notes Parquet in the lake (idempotent).

    The label set comes from the transform model's own ``metrics.json`` (in its
    ``model_data_url`` archive), which must describe the version that answered. With
    `review_table` (and a DynamoDB client `ddb`), the notes are queued for review with the
    stage's `review` settings; a retried publish finds its tasks and creates none twice.
    """
    from clinical_ner.data.publish import (
        PUBLISHED_TABLES,
        model_labels,
        parse_transform_output,
        publish_transform_output,
        transform_paths,
    )
    from clinical_ner.pipeline.monitoring import pipeline_metric_data
    from clinical_ner.pipeline.registry import METRICS_MEMBER, metrics_from_model_tarball

    _check_run_id(run_id)
    if not isinstance(model_data_url, str) or not model_data_url:
        raise PipelineStepError("publish needs the transform model's model_data_url")
    paths = transform_paths(run_id)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    output_keys = [k for k in list_keys(s3, bucket, paths["output_prefix"]) if not k.endswith("/")]
    if not output_keys:
        raise PipelineStepError(f"no transform output under {paths['output_prefix']}")
    answers: dict[str, dict[str, object]] = {}
    for key in output_keys:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        part = parse_transform_output(body.splitlines())
        overlap = set(part) & set(answers)
        if overlap:
            raise PipelineStepError(f"transform output files repeat {len(overlap)} note id(s)")
        answers.update(part)
    metrics = metrics_from_model_tarball(s3, model_data_url)
    labels = model_labels(metrics, f"{METRICS_MEMBER} of {model_data_url}")
    answered = {str(a["model_version"]) for a in answers.values()}
    if metrics.get("model_version") is not None and answered != {str(metrics["model_version"])}:
        raise PipelineStepError(
            f"transform answers come from model version(s) {sorted(answered)}, but "
            f"{model_data_url} is version {metrics['model_version']!r}"
        )
    prefixes = {"entities": LAKE.inference_entities, "notes": LAKE.inference_notes}
    with tempfile.TemporaryDirectory(prefix="publish-") as tmp:
        tmp_path = Path(tmp)
        notes = _run_notes(s3, bucket, run_id, dt, tmp_path / "in")
        out = tmp_path / "out"
        result = publish_transform_output(notes, answers, out, dt=dt, labels=labels, now=now)
        written: dict[str, list[str]] = {}
        for table in PUBLISHED_TABLES:
            keys = []
            for rel in result.files[table]:
                key = prefixes[table] + rel.relative_to(table).as_posix()
                s3.upload_file(str(out / rel), bucket, key)
                keys.append(key)
            # Remove parts of the same publish run left by an earlier attempt (fewer files).
            part_prefix = f"{prefixes[table]}dt={dt}/part-{result.run_id}-"
            for stale in set(list_keys(s3, bucket, part_prefix)) - set(keys):
                s3.delete_object(Bucket=bucket, Key=stale)
            written[table] = keys
    queued = _enqueue_for_review(
        ddb, review_table, review, notes, answers, labels, dt=dt, extracted_at=now
    )
    put_metrics(
        cw,
        pipeline_metric_data(
            stage,
            result.model_version,
            {
                "NotesExtracted": result.summary.processed,
                "EntitiesExtracted": result.summary.entities,
                **{
                    f"Entities{label.capitalize()}": n
                    for label, n in result.summary.entities_by_label.items()
                },
            },
            now,
        ),
    )
    return {
        "run_id": run_id,
        "dt": dt,
        "publish_run_id": result.run_id,
        "model_version": result.model_version,
        "notes": result.summary.processed,
        "entities": result.summary.entities,
        "keys": written,
        **({"review": queued} if queued is not None else {}),
    }


def _enqueue_for_review(
    ddb: Any,
    table: str | None,
    settings: ReviewSettings | None,
    notes: list[Any],
    answers: Mapping[str, Mapping[str, Any]],
    labels: list[str] | tuple[str, ...],
    *,
    dt: str,
    extracted_at: datetime,
) -> dict[str, int] | None:
    """Queue the published notes for review; counts by outcome, or None without a table."""
    if not table:
        return None
    if ddb is None:
        raise PipelineStepError("a review table is configured but no DynamoDB client was given")
    from clinical_ner.pipeline.review_queue import ReviewQueue
    from clinical_ner.pipeline.review_service import enqueue_notes, queue_notes_from_answers

    settings = settings or ReviewSettings()
    published = [n for n in notes if n.note_id in answers]
    entries = queue_notes_from_answers(
        published, answers, labels, curated_dt=dt, extracted_at=extracted_at
    )
    queue = ReviewQueue(ddb, table, lease_seconds=settings.lease_seconds)
    return enqueue_notes(queue, entries, settings)


# --------------------------------------------------------------------------- monitor


def read_tar_member(s3: Any, model_data_url: str, member: str) -> bytes | None:
    """The bytes of `member` (matched by file name) in a model.tar.gz on S3, streamed."""
    from clinical_ner.pipeline.registry import parse_s3_uri

    bucket, key = parse_s3_uri(model_data_url)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    with tarfile.open(fileobj=body, mode="r|gz") as tar:
        for info in tar:
            if info.isfile() and Path(info.name).name == member:
                if info.size > MAX_MEMBER_BYTES:
                    raise PipelineStepError(f"{member} in the model artifact is too large")
                handle = tar.extractfile(info)
                return handle.read() if handle else None
    return None


def _entity_rows(s3: Any, bucket: str, keys: list[str], tmp: Path) -> dict[str, list[dict]]:
    import pyarrow.parquet as pq

    per_note: dict[str, list[dict]] = {}
    for path in _download(s3, bucket, keys, tmp):
        table = pq.read_table(path, columns=["note_id", "label", "confidence", "negated"])
        for row in table.to_pylist():
            per_note.setdefault(row["note_id"], []).append(row)
    return per_note


def monitor_drift(
    s3: Any,
    cw: Any,
    *,
    bucket: str,
    run_id: str,
    dt: str,
    model_version: str,
    entity_keys: list[str],
    thresholds: DriftThresholds,
    stage: str,
    model_data_url: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Profile the run's window against the production reference; publish metrics + report."""
    from clinical_ner.model import drift
    from clinical_ner.pipeline import monitoring

    now = (now or datetime.now(UTC)).astimezone(UTC)
    ref_key = monitoring.reference_key(LAKE.monitoring, model_version)
    reference = (
        drift.read_profile(get_json(s3, bucket, ref_key), ref_key)
        if object_exists(s3, bucket, ref_key)
        else None
    )
    training = None
    if model_data_url:
        raw = read_tar_member(s3, model_data_url, drift.BASELINE_FILE)
        training = drift.read_profile(raw, drift.BASELINE_FILE) if raw else None
    with tempfile.TemporaryDirectory(prefix="monitor-") as tmp:
        tmp_path = Path(tmp)
        notes = _run_notes(s3, bucket, run_id, dt, tmp_path / "n")
        entities = _entity_rows(s3, bucket, entity_keys, tmp_path / "e")
    if not notes:
        raise PipelineStepError(f"run {run_id} has no curated notes to monitor")
    texts = [n.text for n in notes]
    per_note = [entities.get(n.note_id, []) for n in notes]
    window = {
        "id": monitoring.window_id((n.content_sha256 for n in notes), model_version),
        "run_id": run_id,
        "dt": dt,
    }
    result = monitoring.run_monitor(
        texts,
        per_note,
        thresholds=thresholds,
        model_version=model_version,
        reference=reference,
        training_baseline=training,
        window=window,
        now=now,
    )
    del texts, per_note, notes
    report_key = store_monitor_result(s3, cw, bucket, stage, LAKE.monitoring, ref_key, result)
    return {
        "decision": result.report["decision"],
        "action": result.report["action"],
        "classes": result.report["classes"],
        "report_key": report_key,
        "reference_key": ref_key,
    }
