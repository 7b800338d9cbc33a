"""API Gateway HTTP API (payload format 2.0) events -> a WSGI app -> the Lambda response.

Small on purpose (no adapter package is installed in the Lambda layer): the JWT authorizer's
claims go into the environ under `review_app.CLAIMS_ENVIRON_KEY`, which no request header
can set, so identity in AWS comes from the verified token only.
"""

from __future__ import annotations

import base64
import io
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import unquote

from clinical_ner.runtime.review_app import CLAIMS_ENVIRON_KEY

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
