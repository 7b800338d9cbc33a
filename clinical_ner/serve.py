"""The container's ``serve`` entry point: SageMaker's inference HTTP contract, runnable locally.

``GET /ping`` answers 200 once the model under ``<root>/model`` (SageMaker unpacks model.tar.gz
there) is loaded and warmed up, 503 before. ``POST /invocations`` takes notes as
``application/json`` (one note object, a list of them, or ``{"instances": [...]}``) or
``application/jsonlines`` (one note object per line: SageMaker Batch Transform with
``SplitType=Line``) and returns, per note and in input order, the entities with character
offsets into the stored note text, label, confidence, negation and the model version.
``GET /execution-parameters`` tells Batch Transform the batching this server prefers.
docs/serving.md is the full contract (payloads, errors, limits).

Server: waitress, a pure-Python production WSGI server (no system dependencies, no compiler):
it buffers each request body completely (spooling large ones to a temp file) before a worker
thread sees it, so slow clients never hold a worker; it bounds connections, header and body
sizes and idle time. Inference itself runs one batch at a time under a lock (the model is
CPU-bound and not documented as thread-safe), while the other worker threads keep answering
``/ping`` and rejecting bad requests.

Validation is the core's (`clinical_ner.notes.checked_note_text`): the same note_id rules,
normalisation and length limit as the batch readers, so a note is accepted or rejected the same
way on every path. Client errors are 4xx with a JSON body ``{"error": {"status", "code",
"message"}}``; messages name fields, positions and limits, never note text. The access log has
method, path, status, note count, bytes and latency only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clinical_ner.notes import DEFAULT_MAX_CHARS, NoteRejected, checked_note_text, content_sha256
from clinical_ner.schemas import make_entity_id

DEFAULT_ROOT = "/opt/ml"
ROOT_ENV = "SM_ROOT"
DEFAULT_PORT = 8080
# SageMaker's real-time payload limit is 6 MB (serverless 4 MB); Batch Transform's default
# MaxPayloadInMB is 6. One request never needs more.
DEFAULT_MAX_REQUEST_BYTES = 6 * 1024 * 1024
DEFAULT_MAX_NOTES = 1000
DEFAULT_THREADS = 4
DEFAULT_CONNECTION_LIMIT = 64
DEFAULT_BATCH_SIZE = 32
JSON = "application/json"
JSONLINES = "application/jsonlines"
_JSONLINES_ALIASES = {JSONLINES, "application/x-jsonlines", "application/jsonl"}

log = logging.getLogger("clinical_ner.serve")

StartResponse = Callable[..., Any]


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_notes: int = DEFAULT_MAX_NOTES
    max_chars: int = DEFAULT_MAX_CHARS
    batch_size: int = DEFAULT_BATCH_SIZE


class ClientError(Exception):
    """A request the server refuses; `message` is safe to return and log (no note text)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class ModelHolder:
    """The loaded model, once there is one; predictions are serialised under a lock."""

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self._model is not None

    @property
    def version(self) -> str:
        return str(self._model.version) if self._model is not None else ""

    def set(self, model: Any) -> None:
        self._model = model

    def predict(self, texts: list[str], batch_size: int) -> list[list[Any]]:
        with self._lock:
            return list(self._model.predict(texts, batch_size=batch_size))


@dataclass(frozen=True)
class ParsedNote:
    note_id: str
    text: str  # stored (normalised) text
    normalised: bool  # stored text differs from the text sent


_STATUS_TEXT = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _media_type(header: str | None) -> tuple[str, dict[str, str]]:
    if not header:
        return "", {}
    main, *params = header.split(";")
    parsed = {}
    for param in params:
        key, _, value = param.partition("=")
        parsed[key.strip().lower()] = value.strip().strip('"').lower()
    return main.strip().lower(), parsed


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class InferenceApp:
    """The WSGI application: routing, payload parsing, validation, inference, responses."""

    def __init__(self, holder: ModelHolder, limits: Limits | None = None) -> None:
        self.holder = holder
        self.limits = limits or Limits()

    # -- WSGI entry

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/")
        notes = 0
        code = ""
        try:
            if path == "/ping":
                self._allow(method, "GET")
                status, body, ctype = self._ping()
            elif path == "/invocations":
                self._allow(method, "POST")
                status, body, ctype, notes = self._invocations(environ)
            elif path == "/execution-parameters":
                self._allow(method, "GET")
                status, body, ctype = 200, self._execution_parameters(), JSON
            else:
                raise ClientError(404, "not_found", "no such path; use /ping or /invocations")
        except ClientError as exc:
            status, ctype, code = exc.status, JSON, exc.code
            body = json.dumps(
                {"error": {"status": exc.status, "code": exc.code, "message": exc.message}}
            ).encode()
        except Exception as exc:  # a bug: say so without echoing anything from the request
            log.error("internal error on %s %s: %s", method, path, type(exc).__name__)
            status, ctype, code = 500, JSON, "internal_error"
            body = json.dumps(
                {"error": {"status": 500, "code": "internal_error", "message": "internal error"}}
            ).encode()
        headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
        if status == 405:
            headers.append(("Allow", "POST" if path == "/invocations" else "GET"))
        start_response(f"{status} {_STATUS_TEXT.get(status, 'Error')}", headers)
        if path != "/ping" or status != 200:
            log.info(
                "%s %s %d%s notes=%d bytes=%s ms=%.1f",
                method,
                path,
                status,
                f" {code}" if code else "",
                notes,
                environ.get("CONTENT_LENGTH") or 0,
                (time.perf_counter() - started) * 1000,
            )
        return [body]

    @staticmethod
    def _allow(method: str, allowed: str) -> None:
        if method != allowed:
            raise ClientError(405, "method_not_allowed", f"use {allowed}")

    # -- endpoints

    def _ping(self) -> tuple[int, bytes, str]:
        if not self.holder.ready:
            return 503, json.dumps({"status": "loading"}).encode(), JSON
        body = {"status": "ok", "model_version": self.holder.version}
        return 200, json.dumps(body).encode(), JSON

    def _execution_parameters(self) -> bytes:
        return json.dumps(
            {
                "MaxConcurrentTransforms": 1,
                "BatchStrategy": "MULTI_RECORD",
                "MaxPayloadInMB": max(1, self.limits.max_request_bytes // (1024 * 1024)),
            }
        ).encode()

    def _invocations(self, environ: dict[str, Any]) -> tuple[int, bytes, str, int]:
        media, params = _media_type(environ.get("CONTENT_TYPE"))
        if media == JSON:
            jsonlines = False
        elif media in _JSONLINES_ALIASES:
            jsonlines = True
        else:
            shown = media[:64] or "none"
            raise ClientError(
                415,
                "unsupported_media_type",
                f"Content-Type {shown!r} is not supported; use {JSON} or {JSONLINES}",
            )
        charset = params.get("charset", "utf-8")
        if charset not in ("utf-8", "utf8"):
            raise ClientError(415, "unsupported_charset", "only UTF-8 bodies are accepted")
        raw = self._read_body(environ)
        if not self.holder.ready:
            raise ClientError(503, "model_loading", "the model is still loading; retry")
        try:
            body = raw.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError as exc:
            raise ClientError(
                400, "bad_encoding", f"body is not valid UTF-8 (byte offset {exc.start})"
            ) from None
        if jsonlines:
            records, shape = self._parse_jsonlines(body), "lines"
        else:
            records, shape = self._parse_json(body)
        if not records:
            raise ClientError(400, "no_notes", "the request holds no notes")
        if len(records) > self.limits.max_notes:
            raise ClientError(
                413,
                "too_many_notes",
                f"{len(records)} notes in one request; limit is {self.limits.max_notes}",
            )
        notes = [self._note(record, where) for where, record in records]
        predictions = self.holder.predict([n.text for n in notes], self.limits.batch_size)
        results = [
            self._result(note, entities) for note, entities in zip(notes, predictions, strict=True)
        ]
        if shape == "lines":
            payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results)
            return 200, payload.encode("utf-8"), JSONLINES, len(notes)
        if shape == "object":
            out: object = results[0]
        elif shape == "instances":
            out = {"predictions": results}
        else:
            out = results
        return 200, json.dumps(out, ensure_ascii=False).encode("utf-8"), JSON, len(notes)

    # -- request parsing

    def _read_body(self, environ: dict[str, Any]) -> bytes:
        limit = self.limits.max_request_bytes
        length_header = environ.get("CONTENT_LENGTH") or ""
        if length_header:
            try:
                length = int(length_header)
            except ValueError:
                raise ClientError(400, "bad_content_length", "invalid Content-Length") from None
            if length > limit:
                raise ClientError(
                    413, "request_too_large", f"body has {length} bytes; limit is {limit}"
                )
        else:
            length = limit + 1  # no length (should not happen behind waitress): read bounded
        data = environ["wsgi.input"].read(min(length, limit + 1))
        if len(data) > limit:
            raise ClientError(413, "request_too_large", f"body exceeds {limit} bytes")
        return data

    @staticmethod
    def _loads(text: str, where: str) -> object:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            # exc.msg is a fixed parser phrase; position, not content, locates the problem.
            raise ClientError(
                400,
                "malformed_json",
                f"{where}invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            ) from None
        except RecursionError:
            raise ClientError(400, "malformed_json", f"{where}JSON nested too deeply") from None

    def _parse_json(self, body: str) -> tuple[list[tuple[str, object]], str]:
        payload = self._loads(body, "")
        if isinstance(payload, dict) and "instances" in payload:
            instances = payload["instances"]
            if not isinstance(instances, list):
                raise ClientError(400, "invalid_payload", "'instances' must be an array of notes")
            return [(f"instances[{i}]", r) for i, r in enumerate(instances)], "instances"
        if isinstance(payload, list):
            return [(f"[{i}]", r) for i, r in enumerate(payload)], "list"
        if isinstance(payload, dict):
            return [("note", payload)], "object"
        raise ClientError(
            400,
            "invalid_payload",
            f"expected a note object, an array of notes or {{'instances': [...]}}, got "
            f"{_json_type(payload)}",
        )

    def _parse_jsonlines(self, body: str) -> list[tuple[str, object]]:
        records: list[tuple[str, object]] = []
        for number, line in enumerate(body.split("\n"), start=1):
            if line.strip():
                where = f"line {number}"
                records.append((where, self._loads(line, f"{where}: ")))
                if len(records) > self.limits.max_notes:
                    break  # counted as too many by the caller
        return records

    def _note(self, record: object, where: str) -> ParsedNote:
        if not isinstance(record, dict):
            raise ClientError(
                400, "invalid_note", f"{where}: a note must be an object, got {_json_type(record)}"
            )
        missing = [k for k in ("note_id", "text") if record.get(k) is None]
        if missing:
            raise ClientError(
                400, "missing_field", f"{where}: missing required field(s): {', '.join(missing)}"
            )
        note_id = record["note_id"]
        if isinstance(note_id, int) and not isinstance(note_id, bool):
            note_id = str(note_id)
        if not isinstance(note_id, str):
            raise ClientError(
                400,
                "invalid_note_id",
                f"{where}: note_id must be a string or integer, got {_json_type(note_id)}",
            )
        text = record["text"]
        if not isinstance(text, str):
            raise ClientError(
                400, "invalid_text", f"{where}: text must be a string, got {_json_type(text)}"
            )
        try:
            stored = checked_note_text(note_id, text, max_chars=self.limits.max_chars)
        except NoteRejected as exc:
            raise ClientError(400, exc.reason.value, f"{where}: {exc.detail}") from None
        return ParsedNote(note_id, stored, stored != text)

    def _result(self, note: ParsedNote, entities: Sequence[Any]) -> dict[str, object]:
        sha = content_sha256(note.text)
        result: dict[str, object] = {
            "note_id": note.note_id,
            "model_version": self.holder.version,
            "note_sha256": sha,
            "normalised": note.normalised,
            "entities": [
                {
                    "entity_id": make_entity_id(note.note_id, sha, e.start, e.end, e.label),
                    "start": e.start,
                    "end": e.end,
                    "label": e.label,
                    "text": e.text,
                    "confidence": round(float(e.confidence), 6),
                    "negated": bool(e.negated),
                }
                for e in entities
            ],
        }
        if note.normalised:
            result["text"] = note.text  # offsets index this stored text, not the text sent
        return result


# --------------------------------------------------------------------------- process


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="serve", description="SageMaker inference server for the clinical NER model"
    )
    parser.add_argument("--root", default=None, help=f"${ROOT_ENV} or {DEFAULT_ROOT}")
    parser.add_argument("--model-dir", default=None, help="default: <root>/model")
    parser.add_argument("--host", default=os.environ.get("SERVE_HOST", "0.0.0.0"))
    parser.add_argument(
        "--port",
        type=int,
        default=_env_int("SAGEMAKER_BIND_TO_PORT", _env_int("SERVE_PORT", DEFAULT_PORT)),
    )
    parser.add_argument("--threads", type=int, default=_env_int("SERVE_THREADS", DEFAULT_THREADS))
    parser.add_argument(
        "--max-request-bytes",
        type=int,
        default=_env_int("SERVE_MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES),
    )
    parser.add_argument(
        "--max-notes", type=int, default=_env_int("SERVE_MAX_NOTES", DEFAULT_MAX_NOTES)
    )
    parser.add_argument(
        "--batch-size", type=int, default=_env_int("SERVE_BATCH_SIZE", DEFAULT_BATCH_SIZE)
    )
    parser.add_argument(
        "--max-note-chars",
        type=int,
        default=_env_int("SERVE_MAX_NOTE_CHARS", DEFAULT_MAX_CHARS),
        help="longest stored note text accepted (default: the readers' limit)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # SageMaker runs the image as `<image> serve`: tolerate that word as the first argument.
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != "serve"]
    if extra:
        parser.error(f"unexpected arguments: {' '.join(extra)}")
    for name in ("threads", "max_request_bytes", "max_notes", "batch_size", "max_note_chars"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    import waitress

    root = Path(args.root or os.environ.get(ROOT_ENV) or DEFAULT_ROOT)
    model_dir = Path(args.model_dir) if args.model_dir else root / "model"
    holder = ModelHolder()
    app = InferenceApp(
        holder,
        Limits(
            max_request_bytes=args.max_request_bytes,
            max_notes=args.max_notes,
            max_chars=args.max_note_chars,
            batch_size=args.batch_size,
        ),
    )
    server = waitress.create_server(
        app,
        host=args.host,
        port=args.port,
        threads=args.threads,
        connection_limit=DEFAULT_CONNECTION_LIMIT,
        # Bodies up to twice the limit reach the app, which answers with a JSON 413; beyond
        # that waitress refuses on its own (plain-text 413) without buffering the body.
        max_request_body_size=2 * args.max_request_bytes,
        max_request_header_size=64 * 1024,
        channel_timeout=120,
        ident="clinical-ner",
        expose_tracebacks=False,
        clear_untrusted_proxy_headers=True,
    )
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    serving = threading.Thread(target=server.run, name="waitress", daemon=True)
    serving.start()
    log.info("listening on %s:%s (threads=%d)", args.host, server.effective_port, args.threads)
    try:
        from clinical_ner.inference import NerModel

        started = time.perf_counter()
        model = NerModel.load(model_dir)
        list(model.predict(["Warm-up note: no evidence of pneumonia."]))  # first call compiles
        holder.set(model)
        log.info(
            "model %s loaded from %s in %.1f s",
            model.version,
            model_dir,
            time.perf_counter() - started,
        )
    except Exception as exc:
        log.error("cannot load the model from %s: %s: %s", model_dir, type(exc).__name__, exc)
        server.close()
        return 1
    stop.wait()
    server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
