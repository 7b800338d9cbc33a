"""AWS error classification and boto3 clients for the pipeline steps (no Lambda edge here).

`is_transient` tells AWS throttling / 5xx errors that survived boto3's own retries from the
rest; the Lambda edge (`clinical_ner.runtime.lambda_edge`) turns them into `TransientAwsError`,
the error name the state machine retries with backoff (plus Lambda's service errors);
everything else is caught and notified.

Only the standard library and boto3 (which the Lambda Python runtime ships) are imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
