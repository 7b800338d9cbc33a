"""Shared plumbing for the Lambda handlers: boto3 clients, error classes, JSON logs.

Handlers are thin (parse event -> core -> respond); they all wrap their work in `run_step`,
which logs one structured line per invocation (step, outcome, duration and the ids it was
given: never note text) and turns AWS throttling / 5xx errors that survived boto3's own
retries into `TransientAwsError`. The state machine retries exactly that error name (plus
Lambda's service errors) with backoff; everything else is caught and notified.

Only the standard library and boto3 (which the Lambda Python runtime ships) are imported.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("clinical_ner.pipeline")

# Error names the state machine retries (Step Functions matches the Python exception class
# name Lambda reports as errorType).
TRANSIENT_ERROR = "TransientAwsError"
ENDPOINT_BUSY_ERROR = "EndpointBusyError"

_THROTTLING_CODES = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "SlowDown",
    "ServiceUnavailable",
    "InternalFailure",
    "InternalError",
    "InternalServerError",
    "InternalServiceError",
}


class TransientAwsError(RuntimeError):
    """An AWS call failed in a way a later retry can fix (throttling, 5xx)."""


class EndpointBusyError(RuntimeError):
    """The endpoint is being created/updated by someone else; retry the deployment later."""


class PipelineStepError(RuntimeError):
    """A step cannot proceed for a reason a retry will not fix; the message says why."""


def client(service: str, **kwargs: Any) -> Any:
    """A boto3 client with adaptive retries (and ``AWS_ENDPOINT_URL`` honoured by boto3)."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "adaptive", "max_attempts": 8}, connect_timeout=10)
    return boto3.client(service, config=config, **kwargs)


def is_transient(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError, ConnectionError, ReadTimeoutError

    if isinstance(exc, ConnectionError | ReadTimeoutError):
        return True
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return err.get("Code") in _THROTTLING_CODES or status >= 500
    return False


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def configure_logging() -> None:
    root = logging.getLogger()
    if not any(isinstance(h.formatter, _JsonFormatter) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(_JsonFormatter())
        root.handlers = [handler]
    root.setLevel(os.environ.get("LOG_LEVEL", "INFO"))


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            out.update(fields)
        return json.dumps(out, default=str, sort_keys=True)


def run_step(step: str, work: Callable[[], dict[str, Any]], **ids: Any) -> dict[str, Any]:
    """Run one pipeline step with structured logging and transient-error classification."""
    configure_logging()
    started = time.perf_counter()
    try:
        result = work()
    except Exception as exc:
        transient = is_transient(exc)
        log.error(
            "step failed",
            extra={
                "fields": {
                    "step": step,
                    "outcome": "transient_error" if transient else "error",
                    "error_type": type(exc).__name__,
                    "error_code": error_code(exc),
                    "seconds": round(time.perf_counter() - started, 3),
                    **ids,
                }
            },
        )
        if transient:
            raise TransientAwsError(f"{step}: {type(exc).__name__} {error_code(exc)}") from exc
        raise
    log.info(
        "step done",
        extra={
            "fields": {
                "step": step,
                "outcome": "ok",
                "seconds": round(time.perf_counter() - started, 3),
                **ids,
            }
        },
    )
    return result


def require(event: Mapping[str, Any], *path: str) -> Any:
    """``event[path[0]][path[1]]...``, or a `PipelineStepError` naming the missing key."""
    node: Any = event
    for i, key in enumerate(path):
        if not isinstance(node, Mapping) or key not in node or node[key] in (None, ""):
            raise PipelineStepError(f"event lacks {'.'.join(path[: i + 1])}")
        node = node[key]
    return node
