"""Reliability of inference and serving: linear cost, hostile payloads, bounded memory, workers."""

from __future__ import annotations

import io
import json
import os
import random
import re
import signal
import socket
import string
import subprocess
import sys
import time

import pytest
from sagemaker_job import SERVE_SCRIPT, job_env, trained_job
from serve_client import free_port, request

from clinical_ner.model import traits
from clinical_ner.model.traits import NegationScanner, is_negated

SECRET = "Zelda Quokkaberg MRN-99417"

# --------------------------------------------------------------------------- negation, linear


def _reference_is_negated(text: str, start: int, end: int) -> bool:
    """The rules as first written: whole-text scans per entity (quadratic over a note)."""
    left = 0
    for match in traits._CLAUSE_BREAK.finditer(text, 0, start):
        left = match.end()
    right_match = traits._CLAUSE_BREAK.search(text, end)
    right = right_match.start() if right_match else len(text)
    before = text[left:start]
    pseudo_spans = [(m.start(), m.end()) for m in traits._PSEUDO_RE.finditer(before)]
    for match in traits._PRE.finditer(before):
        if any(s <= match.start() < e for s, e in pseudo_spans):
            continue
        gap = traits._words_between(before[match.end() :])
        if len(gap) <= traits.SCOPE_WORDS and not traits._TERMINATORS.intersection(gap):
            return True
    after = text[end:right]
    for match in traits._POST.finditer(after):
        gap = traits._words_between(after[: match.start()])
        if len(gap) <= traits.SCOPE_WORDS // 2 and not traits._TERMINATORS.intersection(gap):
            return True
    return False


def test_no_trigger_starts_inside_another():
    # NegationScanner's windows rely on it: a far trigger can then never hide a near one.
    for phrases in (traits._PRE_TRIGGERS + traits._PSEUDO, traits._POST_TRIGGERS):
        firsts = {p.split()[0] for p in phrases}
        inner = {w for p in phrases for w in p.split()[1:]}
        assert not firsts & inner


_PIECES = [
    *{w for p in traits._PRE_TRIGGERS + traits._POST_TRIGGERS + traits._PSEUDO for w in p.split()},
    *traits._TERMINATORS,
    "pneumonia", "Asthma", "gout", "fever", "the", "and", "of", "pain", "2no", "x1", "No", "NOT",
    ".", ";", ":", "!", "?", ",", ", ", ",\n", "\n", "\n\n", " ", "  ", "\t", "\u00a0", "\x1c",
    "\u2028", "-", "(", ")", "123", "_", "Was", "RULED", "Out",
]  # fmt: skip


def _random_text(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 60)):
        parts.append(rng.choice(_PIECES))
        parts.append(rng.choice([" ", " ", " ", "", "\n", ", ", "  "]))
    return "".join(parts)


def test_scanner_agrees_with_the_reference_rules_on_random_texts():
    rng = random.Random(20240607)
    checked = 0
    for _ in range(3000):
        text = _random_text(rng)
        scanner = NegationScanner(text)
        spans = {(m.start(), m.end()) for m in re.finditer(r"\w+", text)}
        spans |= {tuple(sorted(rng.sample(range(len(text) + 1), 2))) for _ in range(3)}
        for start, end in spans:
            expected = _reference_is_negated(text, start, end)
            assert scanner.is_negated(start, end) is expected, (text, start, end)
            assert is_negated(text, start, end) is expected
            checked += 1
    assert checked > 10_000


class _CountingPattern:
    """Wraps a compiled pattern and adds up the characters each scan may read."""

    def __init__(self, pattern: re.Pattern[str], calls: list[int]) -> None:
        self.pattern_ = pattern
        self.calls = calls

    def _count(self, text: str, pos: int, endpos: int | None) -> tuple[int, int]:
        endpos = len(text) if endpos is None else min(endpos, len(text))
        self.calls.append(max(0, endpos - pos))
        return pos, endpos

    def finditer(self, text: str, pos: int = 0, endpos: int | None = None):
        return self.pattern_.finditer(text, *self._count(text, pos, endpos))

    def search(self, text: str, pos: int = 0, endpos: int | None = None):
        return self.pattern_.search(text, *self._count(text, pos, endpos))

    def findall(self, text: str, pos: int = 0, endpos: int | None = None):
        return self.pattern_.findall(text, *self._count(text, pos, endpos))


_PATTERNS = ("_PRE", "_POST", "_PSEUDO_RE", "_CLAUSE_BREAK", "_WORD")


def _chars_scanned(negation, copies: int) -> int:
    """Characters all regex scans read to find the negation of every entity of a note."""
    sentence = "He denies chest pain, but reports fever and no evidence of pneumonia. "
    text = sentence * copies
    spans = [(m.start(), m.end()) for m in re.finditer(r"pneumonia|fever|pain", text)]
    calls: list[int] = []
    originals = {name: getattr(traits, name) for name in _PATTERNS}
    try:
        for name, pattern in originals.items():
            setattr(traits, name, _CountingPattern(pattern, calls))
        negation(text, spans)
    finally:
        for name, pattern in originals.items():
            setattr(traits, name, pattern)
    return sum(calls)


def _with_scanner(text: str, spans: list[tuple[int, int]]) -> list[bool]:
    scanner = NegationScanner(text)
    return [scanner.is_negated(start, end) for start, end in spans]


def _per_entity_reference(text: str, spans: list[tuple[int, int]]) -> list[bool]:
    return [_reference_is_negated(text, start, end) for start, end in spans]


def test_negation_reads_each_note_a_bounded_number_of_times():
    # Structural, not timed: 10x the note (and its entities) may read at most ~10x the chars.
    small, large = _chars_scanned(_with_scanner, 20), _chars_scanned(_with_scanner, 200)
    assert large <= 10.5 * small
    # The same measure catches the old per-entity rescans (the check can fail).
    old_small = _chars_scanned(_per_entity_reference, 20)
    old_large = _chars_scanned(_per_entity_reference, 200)
    assert old_large > 50 * old_small


# --------------------------------------------------------------------------- memory


def _unseen_words(rng: random.Random, count: int) -> str:
    return " ".join("".join(rng.choices(string.ascii_lowercase, k=11)) for _ in range(count))


def test_unseen_words_do_not_accumulate_in_the_vocabulary(tiny_model_dir):
    from clinical_ner.model.inference import NerModel

    model = NerModel.load(tiny_model_dir)
    notes = [
        "The patient has a history of asthma treated with albuterol.",
        "No evidence of pneumonia. Metformin was started for diabetes.",
    ]
    before = list(model.predict(notes))
    strings_before = len(model.nlp.vocab.strings)
    rng = random.Random(7)
    for i in range(200):
        list(model.predict([f"Zeldaquokkaberg{i} has asthma. {_unseen_words(rng, 40)}"]))
    # 8,000 new words went through; the store keeps the model's own strings only.
    assert len(model.nlp.vocab.strings) <= strings_before + 10
    assert "Zeldaquokkaberg17" not in model.nlp.vocab.strings  # no patient name kept (PHI)
    assert list(model.predict(notes)) == before
    assert model.nlp.get_pipe("ner").labels  # labels survive the zones
    assert {e.label for ents in before for e in ents} <= set(model.labels)


def test_predict_inside_a_callers_memory_zone_does_not_end_it(tiny_model_dir):
    from clinical_ner.model.inference import NerModel

    model = NerModel.load(tiny_model_dir)
    with model.nlp.memory_zone():
        doc = model.nlp.make_doc("Quokkaberg has asthma")
        list(model.predict(["Gout treated with allopurinol."]))
        assert model.nlp.vocab.in_memory_zone  # the caller's zone is still open
        assert doc.text == "Quokkaberg has asthma"
    assert not model.nlp.vocab.in_memory_zone


# --------------------------------------------------------------------------- hostile payloads


class StubModel:
    """Echoes no entities; counts what reached inference."""

    version = "stub-1"

    def __init__(self) -> None:
        self.texts: list[str] = []

    def predict(self, texts, batch_size=32):
        self.texts.extend(texts)
        return [[] for _ in texts]


def call_app(app, body: bytes, content_type: str | None = "application/json"):
    captured = {}

    def start_response(status, headers):
        captured["status"] = int(status.split()[0])
        captured["headers"] = dict(headers)

    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/invocations",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    if content_type is not None:
        environ["CONTENT_TYPE"] = content_type
    out = b"".join(app(environ, start_response))
    return captured["status"], captured["headers"]["Content-Type"], out


BIG = "9" * 5000
DEEP = "[" * 100_000 + "]" * 100_000
HOSTILE = [
    # (name, body, content type, status, code)
    ("huge int note_id", f'{{"note_id": {BIG}, "text": "{SECRET}"}}', None, 400, "malformed_json"),
    ("huge int text", f'{{"note_id": "a", "text": {BIG}}}', None, 400, "malformed_json"),
    ("huge int elsewhere", f'{{"note_id": "a", "text": "{SECRET}", "n": {BIG}}}', None, 400,
     "malformed_json"),
    ("huge int in array", f'[{{"note_id": "a", "text": "{SECRET}"}}, {BIG}]', None, 400,
     "malformed_json"),
    ("deep arrays", DEEP, None, 400, "malformed_json"),
    ("deep objects", '{"a":' * 50_000 + "1" + "}" * 50_000, None, 400, "malformed_json"),
    ("deep in a field", f'{{"note_id": "a", "text": "{SECRET}", "x": {DEEP}}}', None, 400,
     "malformed_json"),
    ("lone surrogate text", f'{{"note_id": "a", "text": "{SECRET} \\ud800"}}', None, 400,
     "bad_encoding"),
    ("lone surrogate id", f'{{"note_id": "\\udc00", "text": "{SECRET}"}}', None, 400,
     "invalid_note_id"),
    ("invalid utf-8", b'{"note_id": "a", "text": "' + SECRET.encode() + b'\xc3\x28"}', None, 400,
     "bad_encoding"),
    ("text/plain", f'{{"note_id": "a", "text": "{SECRET}"}}', "text/plain", 415,
     "unsupported_media_type"),
    ("no content type", f'{{"note_id": "a", "text": "{SECRET}"}}', "", 415,
     "unsupported_media_type"),
    ("form", f"note_id=a&text={SECRET}", "application/x-www-form-urlencoded", 415,
     "unsupported_media_type"),
    ("utf-16", f'{{"note_id": "a", "text": "{SECRET}"}}', "application/json; charset=utf-16", 415,
     "unsupported_charset"),
    ("number", "42", None, 400, "invalid_payload"),
    ("null", "null", None, 400, "invalid_payload"),
    ("string", f'"{SECRET}"', None, 400, "invalid_payload"),
    ("boolean", "true", None, 400, "invalid_payload"),
    ("instances not array", f'{{"instances": "{SECRET}"}}', None, 400, "invalid_payload"),
    ("text array", f'{{"note_id": "a", "text": ["{SECRET}"]}}', None, 400, "invalid_text"),
    ("text object", f'{{"note_id": "a", "text": {{"t": "{SECRET}"}}}}', None, 400,
     "invalid_text"),
    ("note_id float", f'{{"note_id": 1.5, "text": "{SECRET}"}}', None, 400, "invalid_note_id"),
    ("note_id object", f'{{"note_id": {{}}, "text": "{SECRET}"}}', None, 400,
     "invalid_note_id"),
    ("note_id NaN", f'{{"note_id": NaN, "text": "{SECRET}"}}', None, 400, "invalid_note_id"),
    ("item not object", f'[{{"note_id": "a", "text": "{SECRET}"}}, [1]]', None, 400,
     "invalid_note"),
]  # fmt: skip


def _error_body(status: int, ctype: str, out: bytes) -> dict:
    assert ctype == "application/json"
    error = json.loads(out)["error"]
    assert error["status"] == status and set(error) == {"status", "code", "message"}
    return error


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [pytest.param(*case[1:], id=case[0]) for case in HOSTILE],
)
def test_hostile_payloads_are_4xx_with_a_json_error_and_no_text(body, content_type, status, code):
    from clinical_ner.runtime.serve import InferenceApp, Limits, ModelHolder

    holder, model = ModelHolder(), StubModel()
    holder.set(model)
    app = InferenceApp(holder, Limits())
    raw = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")
    header = {None: JSON, "": None}.get(content_type, content_type)  # "": no header at all
    got, ctype, out = call_app(app, raw, header)
    assert got == status, out[:200]
    assert _error_body(status, ctype, out)["code"] == code
    assert SECRET not in out.decode("utf-8", "replace") and "Zelda" not in out.decode()
    assert model.texts == []  # all or nothing: no note of a refused request reached the model


JSON = "application/json"
JSONL = "application/jsonlines"


def _jsonl_body() -> tuple[bytes, list[tuple[str, str | None]]]:
    """A JSON Lines body with good and bad records, and (outcome, note_id) per record."""
    lines: list[tuple[bytes, str, str | None]] = [
        (b'{"note_id": "g1", "text": "Asthma treated with albuterol."}', "ok", "g1"),
        (f'{{"note_id": "b1", "text": "{SECRET}", "n": {BIG}}}'.encode(), "malformed_json", None),
        (b'{"note_id": "b2", "text": "' + SECRET.encode() + b'\xff"}', "bad_encoding", None),
        (DEEP.encode(), "malformed_json", None),
        (f'{{"note_id": "b4", "text": "{SECRET} \\ud800"}}'.encode(), "bad_encoding", "b4"),
        (f'{{"note_id": "b5", "text": ["{SECRET}"]}}'.encode(), "invalid_text", "b5"),
        (b"[1, 2]", "invalid_note", None),
        (f'{{"note_id": {BIG}, "text": "x"}}'.encode(), "malformed_json", None),
        (f'{{"text": "{SECRET}"}}'.encode(), "missing_field", None),
        (b'{"note_id": 7, "text": "Gout treated with allopurinol."}', "ok", "7"),
        (b'{"note_id": "b6", "text": "   "}', "empty_text", "b6"),
        (f'{{"note_id": "a/b", "text": "{SECRET}"}}'.encode(), "invalid_note_id", None),
        (b'{"note_id": "g3", "text": "No evidence of pneumonia."}', "ok", "g3"),
    ]
    body = b"\n".join(line for line, _, _ in lines[:6]) + b"\n\n"  # a blank line: no record
    body += b"\r\n".join(line for line, _, _ in lines[6:]) + b"\n"
    return body, [(outcome, note_id) for _, outcome, note_id in lines]


def _check_jsonl_answer(out: bytes, expected: list[tuple[str, str | None]]) -> list[dict]:
    text = out.decode("utf-8")
    assert SECRET not in text
    answers = [json.loads(line) for line in text.splitlines()]
    assert len(answers) == len(expected)  # every record accounted for, in input order
    for answer, (outcome, note_id) in zip(answers, expected, strict=True):
        if outcome == "ok":
            assert answer["note_id"] == note_id and "entities" in answer and "error" not in answer
        else:
            assert answer["error"]["code"] == outcome
            assert answer["error"]["status"] == 400
            assert answer["error"]["message"].startswith(f"line {answer['line']}:")
            assert answer.get("note_id") == note_id
            assert set(answer) <= {"line", "note_id", "error"}
    return answers


def test_jsonlines_bad_lines_become_error_entries_and_the_rest_is_answered():
    from clinical_ner.runtime.serve import InferenceApp, Limits, ModelHolder

    holder, model = ModelHolder(), StubModel()
    holder.set(model)
    app = InferenceApp(holder, Limits())
    body, expected = _jsonl_body()
    status, ctype, out = call_app(app, body, JSONL)
    assert status == 200 and ctype == JSONL
    answers = _check_jsonl_answer(out, expected)
    # Line numbers count physical lines (the blank line 7 included).
    assert [a["line"] for a in answers if "error" in a] == [2, 3, 4, 5, 6, 8, 9, 10, 12, 13]
    assert len(model.texts) == 3


def test_a_jsonlines_request_is_still_refused_as_a_whole_for_request_level_problems():
    from clinical_ner.runtime.serve import InferenceApp, Limits, ModelHolder

    holder = ModelHolder()
    holder.set(StubModel())
    app = InferenceApp(holder, Limits(max_notes=2))
    lines = b"\n".join(b'{"note_id": "%d", "text": "gout"}' % i for i in range(3))
    status, ctype, out = call_app(app, lines, JSONL)
    assert status == 413 and _error_body(413, ctype, out)["code"] == "too_many_notes"
    status, ctype, out = call_app(app, b"\n \n", JSONL)
    assert status == 400 and _error_body(400, ctype, out)["code"] == "no_notes"


# --------------------------------------------------------------------------- the real server


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


class Server:
    """`sagemaker_src/serve` as a child process on a free loopback port."""

    def __init__(self, tmp_path, *args: str, env: dict[str, str] | None = None, prefix=()):
        self.port = free_port()
        self.log = tmp_path / f"server-{self.port}.log"
        command = [
            *prefix,
            sys.executable,
            str(SERVE_SCRIPT),
            "--root",
            str(trained_job().root),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *args,
        ]
        with open(self.log, "w") as log_file:
            self.proc = subprocess.Popen(
                command, env=env or job_env(), stdout=log_file, stderr=subprocess.STDOUT
            )

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                if request(self.port, "GET", "/ping", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("server did not become ready")

    def workers(self) -> list[int]:
        """The inference worker processes (not multiprocessing's resource tracker)."""
        found = []
        for pid in children_of(self.proc.pid):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    if b"spawn_main" in handle.read():
                        found.append(pid)
            except OSError:
                continue
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    server = Server(
        tmp_path_factory.mktemp("serve"),
        "--threads",
        "4",
        env=job_env(SAGEMAKER_MODEL_SERVER_WORKERS="2"),
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_ping_answers_while_64_idle_connections_are_open(two_workers):
    sockets = [socket.create_connection(("127.0.0.1", two_workers.port)) for _ in range(64)]
    try:
        time.sleep(0.5)  # the server has accepted what it will accept
        status, _, body = request(two_workers.port, "GET", "/ping", timeout=10)
        assert status == 200 and json.loads(body)["status"] == "ok"
        status, _, _ = request(
            two_workers.port,
            "POST",
            "/invocations",
            b'{"note_id": "a", "text": "Gout."}',
            JSON,
            timeout=30,
        )
        assert status == 200
    finally:
        for sock in sockets:
            sock.close()


def test_worker_count_comes_from_the_sagemaker_variable(two_workers):
    assert len(two_workers.workers()) == 2
    status, _, body = request(two_workers.port, "GET", "/execution-parameters")
    assert status == 200 and json.loads(body)["MaxConcurrentTransforms"] == 2
    assert "workers=2" in two_workers.log.read_text()


def test_hostile_requests_over_http_are_4xx_and_the_server_carries_on(two_workers):
    port = two_workers.port
    for name, body, content_type, status, code in HOSTILE:
        raw = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")
        header = {None: JSON, "": None}.get(content_type, content_type)
        got, ctype, out = request(port, "POST", "/invocations", raw, header)
        assert got == status, name
        assert _error_body(status, ctype, out)["code"] == code, name
        assert SECRET not in out.decode("utf-8", "replace"), name
    body, expected = _jsonl_body()
    got, ctype, out = request(port, "POST", "/invocations", body, JSONL)
    assert got == 200 and ctype == JSONL
    _check_jsonl_answer(out, expected)
    assert request(port, "GET", "/ping")[0] == 200
    log_text = two_workers.log.read_text()
    assert " 500 " not in log_text and "internal_error" not in log_text
    assert "Zelda" not in log_text and "Quokkaberg" not in log_text
    assert "rejected=10" in log_text


def test_a_dead_worker_is_replaced(two_workers):
    victim = two_workers.workers()[0]
    os.kill(victim, signal.SIGKILL)
    statuses = set()
    for i in range(6):  # the request that held the dead worker (if any) is a 500, no more
        note = {"note_id": f"k{i}", "text": "Asthma treated with albuterol."}
        statuses.add(request(two_workers.port, "POST", "/invocations", json.dumps(note), JSON)[0])
    assert 200 in statuses and statuses <= {200, 500}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        workers = two_workers.workers()
        if (
            len(workers) == 2
            and victim not in workers
            and "worker replaced" in (two_workers.log.read_text())
        ):
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the dead worker was not replaced")
    assert request(two_workers.port, "GET", "/ping")[0] == 200


def test_worker_count_defaults_to_the_usable_cpus(tmp_path):
    env = job_env()
    env.pop("SAGEMAKER_MODEL_SERVER_WORKERS", None)
    server = Server(tmp_path, env=env, prefix=("taskset", "-c", "0"))
    try:
        server.wait_ready()
        assert len(server.workers()) == 1  # one CPU in the affinity mask: one worker
        assert "workers=1" in server.log.read_text()
    finally:
        server.stop()
    from clinical_ner.runtime.serve import usable_cpus

    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))
