"""API Gateway HTTP API (payload format 2.0) events -> a WSGI app -> the Lambda response.

Small on purpose (no adapter package is installed in the Lambda layer): the JWT authorizer's
claims go into the environ under `review_app.CLAIMS_ENVIRON_KEY`, which no request header
can set, so identity in AWS comes from the verified token only.

`build_app_from_env` wires the review Lambda (``lambdas/review_api/handler.py`` calls
``handle(app, event)`` with it, built once per container). Environment: ``REVIEW_TABLE`` (the
queue table), ``LAKE_BUCKET``, ``STAGE_CONFIG`` (`StageConfig.to_json`: review settings and
the metrics' Stage) and, optional, ``RETRAINING_FUNCTION_NAME`` (the retraining trigger
Lambda, invoked asynchronously when reviewed notes cross ``retrain_after_reviewed_notes``).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from clinical_ner.runtime.review_app import CLAIMS_ENVIRON_KEY, ReviewApp, SignIn

log = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_TEXT_TYPES = ("text/", "application/json", "application/javascript")


def environ_from_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """The WSGI environ of one API Gateway v2 event."""
    ctx = event.get("requestContext") or {}
    http = ctx.get("http") or {}
    raw = event.get("body") or ""
    body = base64.b64decode(raw) if event.get("isBase64Encoded") else raw.encode("utf-8")
    path = event.get("rawPath") or http.get("path") or "/"
    stage = ctx.get("stage") or "$default"
    if stage != "$default" and path.startswith(f"/{stage}/"):
        path = path[len(stage) + 1 :]
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    if event.get("cookies"):
        headers["cookie"] = "; ".join(event["cookies"])
    environ: dict[str, Any] = {
        "REQUEST_METHOD": http.get("method", "GET"),
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote(path),
        "QUERY_STRING": event.get("rawQueryString") or "",
        "SERVER_NAME": headers.get("host", "lambda"),
        "SERVER_PORT": headers.get("x-forwarded-port", "443"),
        "SERVER_PROTOCOL": http.get("protocol", "HTTP/1.1"),
        "REMOTE_ADDR": http.get("sourceIp", ""),
        "CONTENT_LENGTH": str(len(body)) if body else "",
        "CONTENT_TYPE": headers.get("content-type", ""),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": headers.get("x-forwarded-proto", "https"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for key, value in headers.items():
        if key not in ("content-type", "content-length"):
            environ["HTTP_" + key.upper().replace("-", "_")] = value
    claims = ((ctx.get("authorizer") or {}).get("jwt") or {}).get("claims")
    if isinstance(claims, Mapping):
        environ[CLAIMS_ENVIRON_KEY] = dict(claims)
    return environ


def handle(app: WsgiApp, event: Mapping[str, Any]) -> dict[str, Any]:
    """Run `app` on the event; the HTTP API's response object."""
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured["status"], captured["headers"] = status, headers
        return lambda _data: None

    chunks = app(environ_from_event(event), start_response)
    try:
        body = b"".join(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    headers: dict[str, str] = {}
    for k, v in captured["headers"]:
        headers[k] = f"{headers[k]},{v}" if k in headers else v
    ctype = headers.get("Content-Type", "")
    textual = ctype.startswith(_TEXT_TYPES)
    return {
        "statusCode": int(captured["status"].split(" ", 1)[0]),
        "headers": headers,
        "body": body.decode("utf-8") if textual else base64.b64encode(body).decode("ascii"),
        "isBase64Encoded": not textual,
    }


def retraining_event(reviewed_notes: int, threshold: int) -> dict[str, Any]:
    """The retraining trigger's ``reviewed_annotations`` event (counts only, no content)."""
    return {
        "trigger": "reviewed_annotations",
        "reviewed_notes": reviewed_notes,
        "threshold": threshold,
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def async_retraining_trigger(
    lambda_client: Any, function_name: str, threshold: int
) -> Callable[[int], None]:
    """`ReviewService.on_retrain_due` in AWS: invoke the trigger Lambda (InvocationType Event)."""

    def trigger(reviewed_notes: int) -> None:
        lambda_client.invoke(
            FunctionName=function_name,
            InvocationType="Event",
            Payload=json.dumps(retraining_event(reviewed_notes, threshold)).encode(),
        )
        log.info("retraining requested", extra={"reviewed_notes": reviewed_notes})

    return trigger


def build_app_from_env(environ: Mapping[str, str] = os.environ) -> ReviewApp:
    """The review Lambda's app: DynamoDB queue, lake store + curated texts, metrics, trigger."""
    from clinical_ner.pipeline.aws_runtime import client
    from clinical_ner.pipeline.review_queue import ReviewQueue
    from clinical_ner.pipeline.review_service import ReviewService
    from clinical_ner.pipeline.review_store import CuratedTexts, S3Store
    from clinical_ner.pipeline.stage_config import StageConfig
    from clinical_ner.runtime.extraction_steps import put_metrics

    config = StageConfig.from_json(environ["STAGE_CONFIG"])
    settings = config.review
    store = S3Store(client("s3"), environ["LAKE_BUCKET"])
    cloudwatch = client("cloudwatch")
    function = environ.get("RETRAINING_FUNCTION_NAME", "")
    service = ReviewService(
        ReviewQueue(
            client("dynamodb"), environ["REVIEW_TABLE"], lease_seconds=settings.lease_seconds
        ),
        store,
        CuratedTexts(store, config.lake),
        settings,
        layout=config.lake,
        on_retrain_due=async_retraining_trigger(
            client("lambda"), function, settings.retrain_after_reviewed_notes
        )
        if function
        else None,
        publish_metrics=lambda data: put_metrics(cloudwatch, data),
        stage=config.stage.value,
    )
    parameter = environ.get("SIGN_IN_PARAMETER", "")
    return ReviewApp(service, sign_in=read_sign_in(client("ssm"), parameter) if parameter else None)


def read_sign_in(ssm: Any, parameter: str) -> SignIn:
    """The page's sign-in settings from the SSM parameter the review stack writes.

    ``{"domain": <Cognito hosted UI base URL>, "client_id": <public app client>}``; read once
    per cold start (the app is built once per execution environment).
    """
    raw = ssm.get_parameter(Name=parameter)["Parameter"]["Value"]
    try:
        settings = json.loads(raw)
        return SignIn(domain=settings["domain"], client_id=settings["client_id"])
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"SSM parameter {parameter} does not hold the sign-in settings") from None
