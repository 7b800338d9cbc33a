"""Review workbench API (thin): API Gateway HTTP API event -> the core WSGI app -> response.

The app is built once per container by `review_apigw.build_app_from_env` (environment:
STAGE_CONFIG, LAKE_BUCKET, REVIEW_TABLE, RETRAINING_FUNCTION_NAME, SIGN_IN_PARAMETER);
identity comes from the JWT authorizer's claims only. The app writes one JSON line per
request (method, route, status, reviewer, time: never a body or note text); an error outside
it is answered 500 and logged by type only, so no exception message (which could quote a
request) reaches the log.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from typing import Any

from clinical_ner.runtime import review_apigw
from clinical_ner.runtime.lambda_edge import JsonFormatter
from clinical_ner.runtime.review_app import ReviewApp

log = logging.getLogger("clinical_ner")


def _configure_logging() -> None:
    """The core's loggers as JSON lines on stdout (with their fields), not via the root."""
    if not log.handlers:
        out = logging.StreamHandler(sys.stdout)
        out.setFormatter(JsonFormatter())
        log.addHandler(out)
        log.propagate = False
    log.setLevel(os.environ.get("LOG_LEVEL", "INFO"))


@functools.cache
def app() -> ReviewApp:
    _configure_logging()
    return review_apigw.build_app_from_env()


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    try:
        return review_apigw.handle(app(), event)
    except Exception as exc:
        log.error("review request failed", extra={"error_type": type(exc).__name__})
        return {
            "statusCode": 500,
            "headers": {"Content-Type": "application/json; charset=utf-8"},
            "body": json.dumps({"error": "internal_error", "reason": "internal error"}),
            "isBase64Encoded": False,
        }
