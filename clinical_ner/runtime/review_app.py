"""The validation team's workbench: one WSGI app (page + JSON API) over `ReviewService`.

Standard library only (wsgiref-compatible; `review_apigw` adapts API Gateway HTTP API events
to it in Lambda): the API is eight routes, so a framework would add a dependency to the
Lambda layer for nothing. Who is calling comes from the API Gateway JWT authorizer's claims
(``sub``; group membership from ``cognito:groups``) that the adapter puts in the environ, or,
locally only, from a configured request header. Note text is served to the lease holder
only and is never logged: the access log line names method, route, status, reviewer and
time; request bodies are never logged. Malformed or hostile JSON gets a 4xx and writes
nothing (docs/review.md, "API").
"""

from __future__ import annotations

import html
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from clinical_ner.data.review import ReviewInputError
from clinical_ner.pipeline.review_queue import QueueError
from clinical_ner.pipeline.review_service import ReviewService

log = logging.getLogger(__name__)

CLAIMS_ENVIRON_KEY = "clinical_ner.claims"  # set by the Lambda adapter; no header can set it
LEASE_HEADER = "X-Lease-Token"
MAX_BODY_BYTES = 1 << 20
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/workbench.js": ("workbench.js", "text/javascript; charset=utf-8"),
    "/static/workbench.css": ("workbench.css", "text/css; charset=utf-8"),
}
_REVIEWER = re.compile(r"^[A-Za-z0-9@._:+-]{1,128}$")
_TASK_ROUTE = re.compile(r"^/api/tasks/(?P<tid>[^/]+)(?P<action>/submit|/release)?$")
_SECURITY_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
    (
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
]

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
SIGN_IN_MARKER = b'<meta name="sign-in" content="">'
_COGNITO_DOMAIN = re.compile(r"^https://[a-z0-9.-]+\.amazoncognito\.com$|^http://127\.0\.0\.1:\d+$")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9]{1,128}$")


@dataclass(frozen=True)
class SignIn:
    """The Cognito hosted sign-in the page uses (authorization code + PKCE, no secret).

    `domain` is the user pool domain's base URL (127.0.0.1 only for the browser test's
    stand-in); both values are checked, since they are written into the page and its CSP.
    """

    domain: str
    client_id: str

    def __post_init__(self) -> None:
        if not _COGNITO_DOMAIN.match(self.domain) or not _CLIENT_ID.match(self.client_id):
            raise ValueError("sign-in needs a Cognito domain URL and an app client id")

    def meta_tag(self) -> bytes:
        content = json.dumps({"domain": self.domain, "client_id": self.client_id})
        return f'<meta name="sign-in" content="{html.escape(content)}">'.encode()

    def security_headers(self) -> list[tuple[str, str]]:
        """The page may talk to the sign-in domain's token endpoint, nothing else new."""
        return [
            (k, v.replace("connect-src 'self'", f"connect-src 'self' {self.domain}"))
            for k, v in _SECURITY_HEADERS
        ]


class HttpError(Exception):
    """An answer other than 200, with a machine code and a text-free reason."""

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.code, self.reason = status, code, reason


_REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 411: "Length Required",
    413: "Payload Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Entity",
    500: "Internal Server Error", 503: "Service Unavailable",
}  # fmt: skip


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def read_json(environ: Mapping[str, Any], *, optional: bool = False) -> Any:
    """The request body as JSON: size-capped, UTF-8, no NaN/Infinity; HttpError otherwise."""
    raw_length = environ.get("CONTENT_LENGTH") or ""
    if not raw_length.strip():
        if optional:
            return {}
        raise HttpError(411, "length_required", "send a JSON body with Content-Length")
    try:
        length = int(raw_length)
    except ValueError:
        raise HttpError(400, "bad_length", "Content-Length is not a number") from None
    if length < 0:
        raise HttpError(400, "bad_length", "Content-Length is negative")
    if length > MAX_BODY_BYTES:
        raise HttpError(413, "too_large", f"the body exceeds {MAX_BODY_BYTES} bytes")
    if length == 0 and optional:
        return {}
    ctype = (environ.get("CONTENT_TYPE") or "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise HttpError(415, "unsupported_media_type", "the body must be application/json")
    body = environ["wsgi.input"].read(length)
    if len(body) != length:
        raise HttpError(400, "short_body", "the body is shorter than Content-Length")
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        # The parser's message can quote the input: answer with a fixed reason.
        raise HttpError(400, "malformed_json", "the body is not valid UTF-8 JSON") from None


class ReviewApp:
    """WSGI callable; `reviewer_header` enables header identity (local use only)."""

    def __init__(
        self,
        service: ReviewService,
        *,
        reviewer_header: str | None = None,
        required_group: str | None = "reviewers",
        sign_in: SignIn | None = None,
    ) -> None:
        self.service = service
        self.reviewer_header = reviewer_header
        self.required_group = required_group
        self.sign_in = sign_in
        self._security_headers = sign_in.security_headers() if sign_in else _SECURITY_HEADERS

    # ------------------------------------------------------------------ identity

    def reviewer(self, environ: Mapping[str, Any]) -> str:
        claims = environ.get(CLAIMS_ENVIRON_KEY)
        if isinstance(claims, Mapping):
            sub = claims.get("sub")
            if self.required_group and self.required_group not in _groups(claims):
                raise HttpError(403, "forbidden", "you are not in the reviewers group")
        elif self.reviewer_header:
            key = "HTTP_" + self.reviewer_header.upper().replace("-", "_")
            sub = environ.get(key)
        else:
            sub = None
        if not isinstance(sub, str) or not _REVIEWER.match(sub):
            raise HttpError(401, "unauthenticated", "sign in as a reviewer")
        return sub

    # ------------------------------------------------------------------ WSGI

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO") or "/"
        reviewer = "-"
        route = "unknown"
        try:
            if path in STATIC_FILES:
                route = path
                if method != "GET":
                    raise HttpError(405, "method_not_allowed", "use GET")
                name, ctype = STATIC_FILES[path]
                body = resources.files("clinical_ner.runtime").joinpath("review_web", name)
                status, headers, payload = 200, [("Content-Type", ctype)], body.read_bytes()
                if name == "index.html" and self.sign_in:
                    payload = payload.replace(SIGN_IN_MARKER, self.sign_in.meta_tag())
            else:
                reviewer = self.reviewer(environ)
                route, result = self._api(method, path, environ, reviewer)
                status, headers, payload = 200, _json_headers(), _dump(result)
        except HttpError as exc:
            status, headers, payload = exc.status, _json_headers(), _error(exc.code, exc.reason)
        except ReviewInputError as exc:
            status, headers = 422, _json_headers()
            payload = _error("invalid_submission", str(exc))
        except QueueError as exc:
            status, headers = exc.status, _json_headers()
            payload = _error(type(exc).__name__, str(exc))
        except Exception as exc:  # never the message: it may quote a body or a note
            log.error("review request failed", extra={"error_type": type(exc).__name__})
            status, headers = 500, _json_headers()
            payload = _error("internal_error", "internal error; the request wrote nothing new")
        log.info(
            "review request",
            extra={
                "method": method,
                "route": route,
                "status": status,
                "reviewer": reviewer,
                "ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        start_response(
            f"{status} {_REASONS.get(status, 'Error')}",
            [*headers, *self._security_headers, ("Content-Length", str(len(payload)))],
        )
        return [payload]

    def _api(
        self, method: str, path: str, environ: Mapping[str, Any], reviewer: str
    ) -> tuple[str, Any]:
        svc = self.service
        if path == "/api/me":
            _only(method, "GET")
            return path, {"reviewer_id": reviewer}
        if path == "/api/queue":
            _only(method, "GET")
            query = parse_qs(environ.get("QUERY_STRING", ""))
            try:
                limit = max(1, min(200, int(query.get("limit", ["50"])[0])))
            except ValueError:
                raise HttpError(400, "bad_limit", "limit must be an integer") from None
            return path, svc.queue_view(reviewer, limit)
        if path == "/api/kpis":
            _only(method, "GET")
            return path, {
                "kpis": svc.kpis(),
                "manual_entry_minutes_per_note": svc.settings.manual_entry_minutes_per_note,
            }
        if path == "/api/claim":
            _only(method, "POST")
            body = read_json(environ, optional=True)
            if not isinstance(body, Mapping):
                raise HttpError(400, "bad_body", "the body must be a JSON object")
            tid = body.get("task_id")
            if tid is not None and not isinstance(tid, str):
                raise HttpError(400, "bad_task_id", "task_id must be a string")
            return path, svc.claim(reviewer, tid)
        match = _TASK_ROUTE.match(path)
        if match is None:
            raise HttpError(404, "not_found", "no such route")
        tid, action = match["tid"], match["action"]
        token = environ.get("HTTP_" + LEASE_HEADER.upper().replace("-", "_"), "")
        if not token:
            raise HttpError(400, "no_lease_token", f"send the {LEASE_HEADER} header from claim")
        if action is None:
            _only(method, "GET")
            return "/api/tasks/{id}", svc.note(reviewer, tid, token)
        _only(method, "POST")
        if action == "/release":
            svc.release(reviewer, tid, token)
            return "/api/tasks/{id}/release", {"released": tid}
        return "/api/tasks/{id}/submit", svc.submit(reviewer, tid, token, read_json(environ))


def _groups(claims: Mapping[str, Any]) -> list[str]:
    """``cognito:groups`` as API Gateway passes it: a list, or a string like ``[a b]``."""
    raw = claims.get("cognito:groups", [])
    if isinstance(raw, str):
        return [g for g in re.split(r"[\s,]+", raw.strip("[]")) if g]
    return [str(g) for g in raw] if isinstance(raw, list) else []


def _only(method: str, allowed: str) -> None:
    if method != allowed:
        raise HttpError(405, "method_not_allowed", f"use {allowed}")


def _json_headers() -> list[tuple[str, str]]:
    return [("Content-Type", "application/json; charset=utf-8")]


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False).encode("utf-8")


def _error(code: str, reason: str) -> bytes:
    return _dump({"error": code, "reason": reason})
