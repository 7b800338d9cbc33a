"""SageMaker endpoint data capture: where it lands, how to read it, and its drift-monitor step.

The deploy step (`pipeline.deployment.data_capture_config`) turns on SageMaker data capture
for the endpoint (provisioned variants: SageMaker does not capture serverless ones). SageMaker
then writes JSON Lines under ``s3://<lake>/monitoring/capture/<endpoint>/<variant>/YYYY/MM/DD/HH/``,
one JSON object per captured invocation::

    {"captureData": {
        "endpointInput":  {"observedContentType": "application/json", "mode": "INPUT",
                           "data": "...", "encoding": "JSON"},
        "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                           "data": "...", "encoding": "JSON"}},
     "eventMetadata": {"eventId": "...", "inferenceTime": "2025-01-02T03:04:05Z"},
     "eventVersion": "0"}

``encoding`` is ``JSON`` (``data`` is the payload text) for the content types listed in the
config's ``JsonContentTypes``, ``CSV`` for CSV types and ``BASE64`` (``data`` is the base64 of
the payload bytes) for anything else. The payloads are those of the ``serve`` contract
(docs/serving.md): notes in (``application/json`` object / array / ``{"instances": [...]}``, or
``application/jsonlines``), one result per note out, in input order.

`read_capture` turns capture lines into `CapturedNote` (stored note text, the model's entities,
model version) and counts every line and every note it could not use by reason: a malformed
line, an error response or a payload this reader does not understand is counted, never fatal,
so ``lines = used + skipped`` always holds. `monitor_capture` is the drift monitor's endpoint
path: it reads the capture files of a time window, profiles the notes per model version with the
same signals the batch path computes from Batch Transform output (`pipeline.monitoring`),
writes the drift reports and publishes the metrics.

PHI: captured payloads hold note text. They stay in the KMS-encrypted lake under a lifecycle
rule (``retention.capture_days``); this module keeps them in memory only to profile them, and
its counts, reasons, reports, metrics and exceptions never contain text or note ids.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from clinical_ner.data.notes import JSONLINES_MEDIA_TYPES

if TYPE_CHECKING:
    from clinical_ner.pipeline.stage_config import DriftThresholds

CAPTURE_DIR = "capture/"
_JSONLINES = frozenset(JSONLINES_MEDIA_TYPES)
DEFAULT_WINDOW_HOURS = 24
MAX_WINDOW_HOURS = 24 * 7
# A window holds the notes in memory to profile them (as the batch path does); past this many
# notes the rest of the window is counted as skipped, not read.
MAX_WINDOW_NOTES = 50_000


class CaptureFormatError(ValueError):
    """A capture line or payload this reader cannot use; `reason` is a fixed, text-free code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class CapturedNote:
    text: str  # the stored (normalised) text the model saw; offsets index it
    entities: list[dict[str, Any]]  # label, confidence, negated
    model_version: str
    note_sha256: str


@dataclass
class CaptureCounts:
    """Accounting of a read: ``lines == events + skipped_lines``; notes likewise per event."""

    files: int = 0
    lines: int = 0
    events: int = 0
    notes: int = 0
    skipped_lines: Counter[str] = field(default_factory=Counter)
    skipped_notes: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "lines": self.lines,
            "events": self.events,
            "notes": self.notes,
            "skipped_lines": dict(sorted(self.skipped_lines.items())),
            "skipped_notes": dict(sorted(self.skipped_notes.items())),
        }


# --------------------------------------------------------------------------- locations


def capture_prefix(monitoring_prefix: str) -> str:
    """``monitoring/capture/``: the data capture destination inside the lake."""
    return f"{monitoring_prefix}{CAPTURE_DIR}"


def capture_s3_uri(bucket: str, monitoring_prefix: str) -> str:
    """The ``DestinationS3Uri`` of the endpoint config (SageMaker appends endpoint/variant/...)."""
    return f"s3://{bucket}/{capture_prefix(monitoring_prefix).rstrip('/')}"


def endpoint_capture_prefix(monitoring_prefix: str, endpoint: str, variant: str = "") -> str:
    """Keys SageMaker writes for `endpoint` (and `variant`, if given)."""
    base = f"{capture_prefix(monitoring_prefix)}{endpoint}/"
    return f"{base}{variant}/" if variant else base


def hour_prefixes(base: str, start: datetime, end: datetime) -> list[str]:
    """``<base>YYYY/MM/DD/HH/`` for every UTC hour in [start, end)."""
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    end = end.astimezone(UTC)
    out = []
    while hour < end:
        out.append(f"{base}{hour:%Y/%m/%d/%H}/")
        hour += timedelta(hours=1)
    return out


# --------------------------------------------------------------------------- parsing


def _payload_text(block: object, mode: str) -> tuple[str, str]:
    """(decoded payload text, media type) of an ``endpointInput``/``endpointOutput`` block."""
    if not isinstance(block, Mapping):
        raise CaptureFormatError(f"missing_{mode}")
    media = str(block.get("observedContentType") or "").split(";", 1)[0].strip().lower()
    encoding = str(block.get("encoding") or "").upper()
    data = block.get("data")
    if encoding == "JSON":
        if isinstance(data, str):
            return data, media
        if isinstance(data, dict | list):  # tolerate an already-parsed payload
            return json.dumps(data), media
        raise CaptureFormatError(f"bad_{mode}_data")
    if encoding == "BASE64":
        if not isinstance(data, str):
            raise CaptureFormatError(f"bad_{mode}_data")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise CaptureFormatError(f"bad_{mode}_base64") from None
        # Bytes the server could not decode got an error response, which is what is counted;
        # replacing them keeps the other JSON Lines records of the same request readable.
        return raw.decode("utf-8", errors="replace").removeprefix("\ufeff"), media
    if encoding == "CSV":
        raise CaptureFormatError(f"unsupported_{mode}_csv")
    raise CaptureFormatError(f"unknown_{mode}_encoding")


_UNPARSABLE = object()  # a JSON Lines record that is not JSON (the server answered an error)


def _json_or_marker(line: str) -> object:
    try:
        return json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        return _UNPARSABLE


def _records(text: str, media: str, mode: str) -> list[object]:
    """The per-note records of a ``serve`` request (input) or response (output) payload.

    JSON Lines: one record per non-blank line, as the server counts them; the server answers
    every line (a result or ``{"line", "error"}``), so records stay aligned by position.
    """
    try:
        if media in _JSONLINES:
            return [_json_or_marker(line) for line in text.split("\n") if line.strip()]
        if media != "application/json":
            raise CaptureFormatError(f"unsupported_{mode}_content_type")
        payload = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise CaptureFormatError(f"malformed_{mode}_json") from None
    if isinstance(payload, list):
        return payload
    if isinstance(payload, dict):
        if mode == "output" and "error" in payload:
            raise CaptureFormatError("error_response")
        key = "instances" if mode == "input" else "predictions"
        if key in payload:
            inner = payload[key]
            if not isinstance(inner, list):
                raise CaptureFormatError(f"malformed_{mode}_payload")
            return inner
        return [payload]
    raise CaptureFormatError(f"malformed_{mode}_payload")


def _note(request: object, result: object) -> CapturedNote:
    from clinical_ner.data.notes import content_sha256

    if isinstance(result, Mapping) and "error" in result:
        raise CaptureFormatError("error_response")  # the server refused this one record
    if not isinstance(request, Mapping) or not isinstance(result, Mapping):
        raise CaptureFormatError("malformed_note")
    # A normalised note's result carries the stored text its offsets index; else it is the
    # text sent.
    text = result.get("text") if result.get("normalised") else request.get("text")
    if not isinstance(text, str):
        raise CaptureFormatError("missing_text")
    version = result.get("model_version")
    if not isinstance(version, str) or not version:
        raise CaptureFormatError("missing_model_version")
    sha = content_sha256(text)
    if result.get("note_sha256") not in (None, sha):
        raise CaptureFormatError("input_output_mismatch")
    raw_entities = result.get("entities")
    if not isinstance(raw_entities, list):
        raise CaptureFormatError("malformed_entities")
    entities = []
    for e in raw_entities:
        if (
            not isinstance(e, Mapping)
            or not isinstance(e.get("label"), str)
            or isinstance(e.get("confidence"), bool)
            or not isinstance(e.get("confidence"), int | float)
        ):
            raise CaptureFormatError("malformed_entities")
        entities.append(
            {
                "label": e["label"],
                "confidence": float(e["confidence"]),
                "negated": bool(e.get("negated")),
            }
        )
    return CapturedNote(text=text, entities=entities, model_version=version, note_sha256=sha)


def parse_event(line: str | bytes) -> list[CapturedNote | CaptureFormatError]:
    """The notes of one capture line, in request order; a note it cannot use is its error.

    Raises `CaptureFormatError` when the line as a whole is unusable.
    """
    try:
        event = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise CaptureFormatError("malformed_line") from None
    if not isinstance(event, dict) or not isinstance(event.get("captureData"), dict):
        raise CaptureFormatError("missing_capture_data")
    data = event["captureData"]
    requests = _records(*_payload_text(data.get("endpointInput"), "input"), "input")
    results = _records(*_payload_text(data.get("endpointOutput"), "output"), "output")
    if len(requests) != len(results):
        raise CaptureFormatError("input_output_mismatch")
    out: list[CapturedNote | CaptureFormatError] = []
    for request, result in zip(requests, results, strict=True):
        try:
            out.append(_note(request, result))
        except CaptureFormatError as exc:
            out.append(exc)
    return out


def read_capture(
    lines: Iterable[str | bytes], counts: CaptureCounts, *, max_notes: int = MAX_WINDOW_NOTES
) -> Iterator[CapturedNote]:
    """Usable notes of capture `lines`; everything else is counted in `counts` by reason."""
    for line in lines:
        if not line.strip():
            continue
        counts.lines += 1
        try:
            parsed = parse_event(line)
        except CaptureFormatError as exc:
            counts.skipped_lines[exc.reason] += 1
            continue
        counts.events += 1
        for item in parsed:
            if isinstance(item, CaptureFormatError):
                counts.skipped_notes[item.reason] += 1
            elif counts.notes >= max_notes:
                counts.skipped_notes["over_window_cap"] += 1
            else:
                counts.notes += 1
                yield item


# --------------------------------------------------------------------------- monitor step


def window_bounds(
    end: str | datetime | None, hours: int = DEFAULT_WINDOW_HOURS
) -> tuple[datetime, datetime]:
    """[start, end) of a capture window: `end` rounded down to the hour, `hours` long."""
    if not 1 <= hours <= MAX_WINDOW_HOURS:
        raise ValueError(f"window_hours must be in 1..{MAX_WINDOW_HOURS}")
    if end is None:
        stop = datetime.now(UTC)
    elif isinstance(end, datetime):
        stop = end
    else:
        stop = datetime.fromisoformat(end.replace("Z", "+00:00"))
    if stop.tzinfo is None:
        stop = stop.replace(tzinfo=UTC)
    stop = stop.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return stop - timedelta(hours=hours), stop


def _capture_lines(s3: Any, bucket: str, keys: list[str]) -> Iterator[bytes]:
    for key in keys:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        try:
            yield from body.iter_lines()
        finally:
            body.close()


def monitor_capture(
    s3: Any,
    cw: Any,
    *,
    bucket: str,
    endpoint: str,
    thresholds: DriftThresholds,
    stage: str,
    window_end: str | datetime | None = None,
    window_hours: int = DEFAULT_WINDOW_HOURS,
    monitoring_prefix: str | None = None,
    variant: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Drift of the endpoint traffic captured in a window, per model version: reports + metrics.

    Each model version seen in the window gets its own report (``monitoring/reports/``) and
    metrics, against that version's production reference (established from this window when
    there is none yet and the window is large enough), exactly as in the batch path.
    """
    from clinical_ner.pipeline import monitoring
    from clinical_ner.pipeline.stage_config import LAKE
    from clinical_ner.runtime.extraction_steps import (
        get_json,
        list_keys,
        object_exists,
        put_metrics,
        store_monitor_result,
    )

    mon_prefix = LAKE.monitoring if monitoring_prefix is None else monitoring_prefix
    from clinical_ner.pipeline.deployment import VARIANT  # the one production variant we deploy

    variant = variant or VARIANT
    start, end = window_bounds(window_end, window_hours)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    base = endpoint_capture_prefix(mon_prefix, endpoint, variant)
    # Only the window's hour prefixes are listed, never the whole (growing) capture history.
    keys = [
        k
        for p in hour_prefixes(base, start, end)
        for k in list_keys(s3, bucket, p)
        if k.endswith(".jsonl")
    ]
    counts = CaptureCounts(files=len(keys))
    per_version: dict[str, list[CapturedNote]] = {}
    for note in read_capture(_capture_lines(s3, bucket, keys), counts):
        per_version.setdefault(note.model_version, []).append(note)

    window_info = {
        "source": "endpoint_capture",
        "endpoint": endpoint,
        "variant": variant,
        "start": start.isoformat(timespec="seconds"),
        "end": end.isoformat(timespec="seconds"),
    }
    results = []
    for version in sorted(per_version):
        notes = per_version.pop(version)
        ref_key = monitoring.reference_key(mon_prefix, version)
        reference = get_json(s3, bucket, ref_key) if object_exists(s3, bucket, ref_key) else None
        window = {
            **window_info,
            "id": monitoring.window_id((n.note_sha256 for n in notes), version),
        }
        result = monitoring.run_monitor(
            [n.text for n in notes],
            [n.entities for n in notes],
            thresholds=thresholds,
            model_version=version,
            reference=reference,
            window=window,
            now=now,
        )
        del notes
        report_key = store_monitor_result(s3, cw, bucket, stage, mon_prefix, ref_key, result)
        results.append(
            {
                "model_version": version,
                "notes": result.report["window"]["notes"],
                "decision": result.report["decision"],
                "action": result.report["action"],
                "classes": result.report["classes"],
                "report_key": report_key,
            }
        )
    skipped = sum(counts.skipped_lines.values()) + sum(counts.skipped_notes.values())
    put_metrics(
        cw,
        monitoring.pipeline_metric_data(
            stage,
            None,
            {"CaptureNotes": counts.notes, "CaptureRecordsSkipped": skipped},
            now,
        ),
    )
    return {**window_info, "counts": counts.as_dict(), "results": results}
