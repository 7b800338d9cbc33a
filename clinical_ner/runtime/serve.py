"""The container's ``serve`` entry point: SageMaker's inference HTTP contract, runnable locally.

``GET /ping`` answers 200 once the model under ``<root>/model`` (SageMaker unpacks model.tar.gz
there) is loaded and warmed up, 503 before. ``POST /invocations`` takes notes as
``application/json`` (one note object, a list of them, or ``{"instances": [...]}``) or
``application/jsonlines`` (one note object per line: SageMaker Batch Transform with
``SplitType=Line``) and returns, per note and in input order, the entities with character
offsets into the note text as sent, label, confidence, negation and the model version.
``GET /execution-parameters`` tells Batch Transform the batching this server prefers.
docs/serving.md is the full contract (payloads, errors, limits).

Server: waitress, a pure-Python production WSGI server (no system dependencies, no compiler):
it buffers each request body completely (spooling large ones to a temp file) before a thread
sees it, so slow clients never hold a thread; it bounds connections, header and body sizes and
idle time. Inference is CPU-bound and holds the GIL, so it runs in a pool of worker processes,
one per usable CPU by default (``SAGEMAKER_MODEL_SERVER_WORKERS``, as in SageMaker's own
containers), each with its own copy of the model: a request takes the next idle worker, so N
requests run on N cores while the waitress threads keep answering ``/ping`` and rejecting bad
requests.

Validation is the core's (`clinical_ner.data.notes.checked_note_view`): the same note_id rules,
normalisation and length limit as the batch readers, so a note is accepted or rejected the same
way on every path. The model reads the note's normalised view and its offsets are mapped back
(`NoteView.entities_on_original`), so every answer indexes the text as sent:
``text[start:end] == entity.text``. Client errors are 4xx with a JSON body ``{"error":
{"status", "code", "message"}}``; messages name fields, positions and limits, never note text.
In JSON Lines a bad line does not reject the others: its output line is an error entry (Batch
Transform must not lose a whole mini-batch to one record). The access log has method, path,
status, note and rejected-record counts, bytes and latency only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from clinical_ner.data.notes import (
    DEFAULT_MAX_CHARS,
    JSON_MEDIA_TYPE,
    JSONLINES_MEDIA_TYPES,
    NoteRejected,
    NoteView,
    QuarantineReason,
    checked_note_text,
    checked_note_view,
    content_sha256,
)

if TYPE_CHECKING:
    from clinical_ner.model.enrichment import EntityDetails

DEFAULT_ROOT = "/opt/ml"
ROOT_ENV = "SM_ROOT"
DEFAULT_PORT = 8080
# SageMaker's real-time payload limit is 6 MB (serverless 4 MB); Batch Transform's default
# MaxPayloadInMB is 6. One request never needs more.
DEFAULT_MAX_REQUEST_BYTES = 6 * 1024 * 1024
DEFAULT_MAX_NOTES = 1000
DEFAULT_BATCH_SIZE = 32
# Idle keep-alive connections cost one socket each; waitress stops accepting at the limit, so it
# must sit well above what a client may leave open (64 idle sockets used to lock out /ping).
DEFAULT_CONNECTION_LIMIT = 1000
DEFAULT_IDLE_TIMEOUT = 60  # seconds an idle connection stays open (busy ones are never cut)
# SageMaker Batch Transform's longest invocation (ModelClientConfig InvocationsTimeoutInSeconds).
DEFAULT_WORKER_TIMEOUT = 600
WORKERS_ENV = "SAGEMAKER_MODEL_SERVER_WORKERS"
WARMUP_NOTE = "Warm-up note: no evidence of pneumonia."
JSON = JSON_MEDIA_TYPE
JSONLINES = JSONLINES_MEDIA_TYPES[0]
_JSONLINES_ALIASES = frozenset(JSONLINES_MEDIA_TYPES)

log = logging.getLogger("clinical_ner.runtime.serve")

StartResponse = Callable[..., Any]


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_notes: int = DEFAULT_MAX_NOTES
    max_chars: int = DEFAULT_MAX_CHARS
    batch_size: int = DEFAULT_BATCH_SIZE
    workers: int = 1  # inference processes: the concurrency Batch Transform should use


class ClientError(Exception):
    """A request the server refuses; `message` is safe to return and log (no note text)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def as_dict(self) -> dict[str, object]:
        return {"status": self.status, "code": self.code, "message": self.message}


class ModelHolder:
    """The loaded model, once there is one.

    An in-process model is not documented as thread-safe, so its predictions are serialised
    under a lock; a `WorkerPool` (``concurrent = True``) hands each call to its own process.
    """

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
        if getattr(self._model, "concurrent", False):
            return list(self._model.predict(texts, batch_size=batch_size))
        with self._lock:
            return list(self._model.predict(texts, batch_size=batch_size))


class WorkerLost(RuntimeError):
    """An inference worker process died or hung; it is replaced, the request fails (500)."""


class WorkerBusy(RuntimeError):
    """No inference worker became free within the worker timeout."""


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def _worker_main(model_dir: str, conn: Connection) -> None:
    """One inference process: load the model, then answer (texts, batch_size) until told to stop.

    Replies are ("ready", version) | ("failed", reason) once, then ("ok", predictions) |
    ("error", exception type) per request: never an exception message, which may quote text.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the parent stops us
    try:
        from clinical_ner.model.inference import NerModel

        model = NerModel.load(model_dir)
        list(model.predict([WARMUP_NOTE]))  # the first call compiles
    except Exception as exc:  # loading reads only the model directory: no note text
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", model.version))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return  # the server process is gone
        if request is None:
            return
        texts, batch_size = request
        try:
            reply: tuple[str, object] = (
                "ok",
                [
                    [(e.start, e.end, e.label, e.text, e.confidence, e.details) for e in entities]
                    for entities in model.predict(texts, batch_size=batch_size)
                ],
            )
        except Exception as exc:
            reply = ("error", type(exc).__name__)
        conn.send(reply)


class ServedEntity(NamedTuple):
    """An entity as a worker returns it: plain values, so unpickling imports no spaCy."""

    start: int
    end: int
    label: str
    text: str
    confidence: float
    details: EntityDetails  # frozen dataclasses of plain values: unpickling imports no spaCy

    @property
    def negated(self) -> bool:
        return self.details.has("negated")


@dataclass(eq=False)  # hashed by identity: the pool keeps a set of them
class _Worker:
    process: Any  # multiprocessing.process.BaseProcess
    conn: Connection


class WorkerPool:
    """N model processes behind one queue of idle workers.

    A request takes the next idle worker (so work goes to free cores, not to a busy process's
    backlog), sends it the texts and waits for the entities. Processes are started with
    ``spawn`` (no fork of a threaded server) and use one BLAS thread each: one worker per core.
    A worker that dies or hangs is killed and replaced in the background; the request it held
    fails with a 500 and the others carry on.
    """

    concurrent = True

    def __init__(
        self,
        model_dir: Path | str,
        workers: int,
        timeout: float = DEFAULT_WORKER_TIMEOUT,
        start_timeout: float = 600.0,
    ) -> None:
        self.model_dir = str(model_dir)
        self.workers = workers
        self.timeout = timeout
        self.start_timeout = start_timeout
        self.version = ""
        self._context = multiprocessing.get_context("spawn")
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: set[_Worker] = set()
        self._guard = threading.Lock()
        self._closed = threading.Event()

    def start(self) -> None:
        """Start every worker and wait until all have loaded the model (RuntimeError if not)."""
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, "1")  # inherited by the workers: one core each
        started = [self._spawn() for _ in range(self.workers)]
        try:
            for worker in started:
                self.version = self._await_ready(worker)
        except Exception:
            self.close()
            raise
        for worker in started:
            self._idle.put(worker)

    def _spawn(self) -> _Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_worker_main, args=(self.model_dir, child), name="inference", daemon=True
        )
        process.start()
        child.close()
        worker = _Worker(process, parent)
        with self._guard:
            self._all.add(worker)
        return worker

    def _await_ready(self, worker: _Worker) -> str:
        if not worker.conn.poll(self.start_timeout):
            self._kill(worker)
            raise RuntimeError(f"a worker did not load the model in {self.start_timeout:.0f} s")
        try:
            status, detail = worker.conn.recv()
        except (EOFError, OSError):
            self._kill(worker)
            raise RuntimeError("a worker exited while loading the model") from None
        if status != "ready":
            self._kill(worker)
            raise RuntimeError(str(detail))
        return str(detail)

    def _kill(self, worker: _Worker) -> None:
        with self._guard:
            self._all.discard(worker)
        worker.conn.close()
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=10)

    def _replace(self, worker: _Worker) -> None:
        self._kill(worker)
        if self._closed.is_set():
            return

        def respawn() -> None:
            delay = 1.0
            while not self._closed.is_set():
                fresh = self._spawn()
                try:
                    self._await_ready(fresh)
                except RuntimeError as exc:
                    log.error("cannot restart an inference worker: %s", type(exc).__name__)
                    self._closed.wait(delay)
                    delay = min(delay * 2, 60.0)
                    continue
                self._idle.put(fresh)
                log.info("inference worker replaced")
                return

        threading.Thread(target=respawn, name="respawn", daemon=True).start()

    def predict(self, texts: list[str], batch_size: int = DEFAULT_BATCH_SIZE) -> list[list[Any]]:
        try:
            worker = self._idle.get(timeout=self.timeout)
        except queue.Empty:
            raise WorkerBusy(f"no inference worker free in {self.timeout:.0f} s") from None
        try:
            worker.conn.send((texts, batch_size))
            if not worker.conn.poll(self.timeout):
                raise TimeoutError
            status, payload = worker.conn.recv()
        except (EOFError, OSError, TimeoutError):
            self._replace(worker)
            raise WorkerLost("an inference worker died or timed out") from None
        self._idle.put(worker)
        if status != "ok":
            raise RuntimeError(f"inference failed in a worker: {payload}")
        return [[ServedEntity(*entity) for entity in entities] for entities in payload]

    def close(self) -> None:
        self._closed.set()
        with self._guard:
            workers = list(self._all)
        for worker in workers:
            with contextlib.suppress(OSError):  # already gone
                worker.conn.send(None)
        deadline = time.monotonic() + 10
        for worker in workers:
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            self._kill(worker)


@dataclass(frozen=True)
class ParsedNote:
    note_id: str
    view: NoteView  # the text as sent (`original`, which offsets index) and what the model reads


class RecordRejected(ClientError):
    """One record (array item or JSON Lines line) refused; `note_id` when it is a valid id."""

    def __init__(self, status: int, code: str, message: str, note_id: str | None = None) -> None:
        super().__init__(status, code, message)
        self.note_id = note_id


def _valid_note_id(value: object) -> str | None:
    """`value` as a note id if it passes the readers' note_id rules (for error entries)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    try:
        checked_note_text(value, "x")  # the one note_id rule set; the text "x" always passes
    except NoteRejected:
        return None
    return value


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
        notes = rejected = 0
        code = ""
        try:
            if path == "/ping":
                self._allow(method, "GET")
                status, body, ctype = self._ping()
            elif path == "/invocations":
                self._allow(method, "POST")
                status, body, ctype, notes, rejected = self._invocations(environ)
            elif path == "/execution-parameters":
                self._allow(method, "GET")
                status, body, ctype = 200, self._execution_parameters(), JSON
            else:
                raise ClientError(404, "not_found", "no such path; use /ping or /invocations")
        except ClientError as exc:
            status, ctype, code = exc.status, JSON, exc.code
            body = json.dumps({"error": exc.as_dict()}).encode()
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
                "%s %s %d%s notes=%d rejected=%d bytes=%s ms=%.1f",
                method,
                path,
                status,
                f" {code}" if code else "",
                notes,
                rejected,
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
                "MaxConcurrentTransforms": self.limits.workers,
                "BatchStrategy": "MULTI_RECORD",
                "MaxPayloadInMB": max(1, self.limits.max_request_bytes // (1024 * 1024)),
            }
        ).encode()

    def _invocations(self, environ: dict[str, Any]) -> tuple[int, bytes, str, int, int]:
        """(status, body, content type, notes predicted, records rejected)."""
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
        if jsonlines:
            return self._invocations_jsonlines(raw)
        try:
            body = raw.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError as exc:
            raise ClientError(
                400, "bad_encoding", f"body is not valid UTF-8 (byte offset {exc.start})"
            ) from None
        records, shape = self._parse_json(body)
        self._check_count(len(records))
        notes = [self._note(record, where) for where, record in records]
        results = self._predict(notes)
        if shape == "object":
            out: object = results[0]
        elif shape == "instances":
            out = {"predictions": results}
        else:
            out = results
        return 200, json.dumps(out, ensure_ascii=False).encode("utf-8"), JSON, len(notes), 0

    def _invocations_jsonlines(self, raw: bytes) -> tuple[int, bytes, str, int, int]:
        """One output line per input record, in order: a result, or an error entry.

        A Batch Transform mini-batch is many independent records; refusing all of them for one
        bad line would fail the job and lose the rest. So every line is accounted for: its
        result, or ``{"line", "note_id" (when valid), "error": {...}}``. Request-level problems
        (media type, size, count, model loading) are still a 4xx/503 for the whole request.
        """
        records = self._parse_jsonlines(raw)
        self._check_count(len(records))
        notes = [r for r in records if isinstance(r, ParsedNote)]
        results = iter(self._predict(notes))
        lines = []
        for record in records:
            if isinstance(record, ParsedNote):
                out = next(results)
            else:
                number, error = record
                out = {"line": number}
                if error.note_id is not None:
                    out["note_id"] = error.note_id
                out["error"] = error.as_dict()
            lines.append(json.dumps(out, ensure_ascii=False) + "\n")
        return 200, "".join(lines).encode("utf-8"), JSONLINES, len(notes), len(records) - len(notes)

    def _check_count(self, count: int) -> None:
        if not count:
            raise ClientError(400, "no_notes", "the request holds no notes")
        if count > self.limits.max_notes:
            raise ClientError(
                413,
                "too_many_notes",
                f"{count} notes in one request; limit is {self.limits.max_notes}",
            )

    def _predict(self, notes: list[ParsedNote]) -> list[dict[str, object]]:
        if not notes:
            return []
        try:
            predictions = self.holder.predict([n.view.text for n in notes], self.limits.batch_size)
        except WorkerBusy:
            raise ClientError(503, "busy", "every inference worker is busy; retry") from None
        return [
            self._result(note, note.view.entities_on_original(entities))
            for note, entities in zip(notes, predictions, strict=True)
        ]

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
        except ValueError:
            # Python refuses integers over 4300 digits (int_max_str_digits); its message is
            # about the limit, but ours is fixed so nothing from the body can reach it.
            raise ClientError(
                400, "malformed_json", f"{where}JSON number too long (limit 4300 digits)"
            ) from None

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

    def _parse_jsonlines(self, raw: bytes) -> list[ParsedNote | tuple[int, RecordRejected]]:
        """Each non-blank line as a note or (line number, why it was refused).

        Lines are decoded one by one, so invalid UTF-8 costs only its own line.
        """
        records: list[ParsedNote | tuple[int, RecordRejected]] = []
        for number, chunk in enumerate(raw.split(b"\n"), start=1):
            where = f"line {number}"
            try:
                line = chunk.decode("utf-8")
            except UnicodeDecodeError as exc:
                records.append(
                    (
                        number,
                        RecordRejected(
                            400,
                            "bad_encoding",
                            f"{where}: not valid UTF-8 (byte {exc.start} of the line)",
                        ),
                    )
                )
            else:
                if number == 1:
                    line = line.removeprefix("\ufeff")
                if not line.strip():
                    continue  # blank lines are not records
                try:
                    records.append(self._note(self._loads(line, f"{where}: "), where))
                except RecordRejected as exc:
                    records.append((number, exc))
                except ClientError as exc:
                    records.append((number, RecordRejected(exc.status, exc.code, exc.message)))
            if len(records) > self.limits.max_notes:
                break  # counted as too many by the caller
        return records

    def _note(self, record: object, where: str) -> ParsedNote:
        if not isinstance(record, dict):
            raise RecordRejected(
                400, "invalid_note", f"{where}: a note must be an object, got {_json_type(record)}"
            )
        missing = [k for k in ("note_id", "text") if record.get(k) is None]
        if missing:
            raise RecordRejected(
                400,
                "missing_field",
                f"{where}: missing required field(s): {', '.join(missing)}",
                _valid_note_id(record.get("note_id")),
            )
        note_id = record["note_id"]
        if isinstance(note_id, int) and not isinstance(note_id, bool):
            note_id = str(note_id)
        if not isinstance(note_id, str):
            raise RecordRejected(
                400,
                "invalid_note_id",
                f"{where}: note_id must be a string or integer, got {_json_type(note_id)}",
            )
        text = record["text"]
        if not isinstance(text, str):
            raise RecordRejected(
                400,
                "invalid_text",
                f"{where}: text must be a string, got {_json_type(text)}",
                _valid_note_id(note_id),
            )
        try:
            view = checked_note_view(note_id, text, max_chars=self.limits.max_chars)
        except NoteRejected as exc:
            known = None if exc.reason is QuarantineReason.INVALID_NOTE_ID else note_id
            raise RecordRejected(400, exc.reason.value, f"{where}: {exc.detail}", known) from None
        return ParsedNote(note_id, view)

    def _result(self, note: ParsedNote, entities: Sequence[Any]) -> dict[str, object]:
        # Not a module-level import: schemas loads pyarrow (~75 MiB), and every inference
        # worker imports this module without ever building a result. main() preloads it.
        from clinical_ner.data.schemas import make_entity_id

        # Offsets (already mapped back) and the hash are of the text as sent: nothing to echo.
        sha = content_sha256(note.view.original)
        result: dict[str, object] = {
            "note_id": note.note_id,
            "model_version": self.holder.version,
            "note_sha256": sha,
            "entities": [
                {
                    "entity_id": make_entity_id(note.note_id, sha, e.start, e.end, e.label),
                    "start": e.start,
                    "end": e.end,
                    "label": e.label,
                    "text": e.text,
                    "confidence": round(float(e.confidence), 6),
                    "negated": bool(e.negated),
                    **e.details.to_json(),
                }
                for e in entities
            ],
        }
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
    parser.add_argument(
        "--workers",
        type=int,
        default=_env_int(WORKERS_ENV, 0),
        help=f"inference processes (${WORKERS_ENV}; default: the usable CPUs)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=_env_int("SERVE_THREADS", 0),
        help="HTTP threads ($SERVE_THREADS; default: 4 per worker + 4, so requests waiting "
        "for a worker leave threads free for /ping)",
    )
    parser.add_argument(
        "--connection-limit",
        type=int,
        default=_env_int("SERVE_CONNECTION_LIMIT", DEFAULT_CONNECTION_LIMIT),
    )
    parser.add_argument(
        "--idle-timeout",
        type=int,
        default=_env_int("SERVE_IDLE_TIMEOUT", DEFAULT_IDLE_TIMEOUT),
        help="seconds before an idle connection is closed",
    )
    parser.add_argument(
        "--worker-timeout",
        type=int,
        default=_env_int("SERVE_WORKER_TIMEOUT", DEFAULT_WORKER_TIMEOUT),
        help="seconds one inference may take before its worker is replaced",
    )
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
    args.workers = args.workers or usable_cpus()
    args.threads = args.threads or 4 * args.workers + 4
    for name in (
        "workers",
        "threads",
        "connection_limit",
        "idle_timeout",
        "worker_timeout",
        "max_request_bytes",
        "max_notes",
        "batch_size",
        "max_note_chars",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    import waitress

    import clinical_ner.data.schemas  # noqa: F401  (preloaded so the first request does not pay)

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
            workers=args.workers,
        ),
    )
    server = waitress.create_server(
        app,
        host=args.host,
        port=args.port,
        threads=args.threads,
        connection_limit=args.connection_limit,
        asyncore_use_poll=True,  # select() cannot watch file descriptors past 1024
        # Bodies up to twice the limit reach the app, which answers with a JSON 413; beyond
        # that waitress refuses on its own (plain-text 413) without buffering the body.
        max_request_body_size=2 * args.max_request_bytes,
        max_request_header_size=64 * 1024,
        channel_timeout=args.idle_timeout,
        cleanup_interval=min(30, args.idle_timeout),
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
    log.info(
        "listening on %s:%s (workers=%d, threads=%d)",
        args.host,
        server.effective_port,
        args.workers,
        args.threads,
    )
    pool = WorkerPool(model_dir, args.workers, timeout=args.worker_timeout)
    try:
        started = time.perf_counter()
        pool.start()
        holder.set(pool)
        log.info(
            "model %s loaded from %s by %d workers in %.1f s",
            pool.version,
            model_dir,
            args.workers,
            time.perf_counter() - started,
        )
    except Exception as exc:
        log.error("cannot load the model from %s: %s: %s", model_dir, type(exc).__name__, exc)
        server.close()
        return 1
    stop.wait()
    server.close()
    pool.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
