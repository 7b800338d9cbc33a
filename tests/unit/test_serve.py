"""The container's `serve` entry: a real server process called over HTTP, plus the WSGI app."""

from __future__ import annotations

import hashlib
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sagemaker_job import SERVE_SCRIPT, job_env, trained_job
from serve_client import free_port, request

from clinical_ner.runtime.serve import InferenceApp, Limits, ModelHolder

SECRET = "Zelda Quokkaberg MRN-99417"
MAX_BYTES = 64 * 1024
MAX_NOTES = 20
MAX_CHARS = 2000
NOTE = "The patient has a history of asthma treated with albuterol. No evidence of pneumonia."


def post_json(port, payload, content_type="application/json"):
    body = payload if isinstance(payload, str | bytes) else json.dumps(payload)
    return request(port, "POST", "/invocations", body, content_type)


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}")
        try:
            if request(port, "GET", "/ping", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not become ready")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    job = trained_job()
    port = free_port()
    log_path = tmp_path_factory.mktemp("serve") / "server.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(SERVE_SCRIPT),
                "--root",
                str(job.root),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--threads",
                "2",
                "--max-request-bytes",
                str(MAX_BYTES),
                "--max-notes",
                str(MAX_NOTES),
                "--max-note-chars",
                str(MAX_CHARS),
            ],
            env=job_env(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(port, proc)
        yield {"port": port, "proc": proc, "log": log_path, "job": job}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def error_of(status, ctype, body):
    assert ctype == "application/json"
    error = json.loads(body)["error"]
    assert error["status"] == status
    return error


def check_entities(result: dict, text: str) -> None:
    assert set(result) == {"note_id", "entities", "model_version", "note_sha256"}
    for entity in result["entities"]:
        assert set(entity) == {
            "entity_id",
            "start",
            "end",
            "label",
            "text",
            "confidence",
            "negated",
            "section",
            "traits",
            "icd10cm",
            "icd10cm_chapter",
            "drug",
            "attributes",
        }
        assert text[entity["start"] : entity["end"]] == entity["text"]
        assert entity["label"] in {"DISEASE", "TREATMENT"}
        assert 0.0 <= entity["confidence"] <= 1.0
        assert isinstance(entity["negated"], bool)
        # The structured details: every offset slices the text as sent, like the entity's.
        assert entity["negated"] == any(t["name"] == "negated" for t in entity["traits"])
        for trait in entity["traits"]:
            assert text[trait["start"] : trait["end"]] == trait["trigger"]
        for attribute in entity["attributes"]:
            assert text[attribute["start"] : attribute["end"]] == attribute["text"]
        if entity["label"] == "DISEASE":
            assert entity["icd10cm"], "every DISEASE mention gets ranked ICD-10-CM candidates"
            scores = [c["score"] for c in entity["icd10cm"]]
            assert scores == sorted(scores, reverse=True)
        else:
            assert entity["icd10cm"] == [] and entity["icd10cm_chapter"] is None


# --------------------------------------------------------------------------- good payloads


def test_ping_reports_the_loaded_model(server):
    status, ctype, body = request(server["port"], "GET", "/ping")
    assert status == 200 and ctype == "application/json"
    metrics = json.loads((server["job"].model / "metrics.json").read_text())
    assert json.loads(body) == {"status": "ok", "model_version": metrics["model_version"]}


def test_single_json_note(server):
    status, ctype, body = post_json(server["port"], {"note_id": "n-1", "text": NOTE})
    assert status == 200 and ctype == "application/json"
    result = json.loads(body)
    assert result["note_id"] == "n-1"
    assert "text" not in result  # offsets index the text sent: it is never echoed back
    check_entities(result, NOTE)
    assert result["entities"], "the tiny model finds something in a training-like note"
    by_text = {e["text"]: e for e in result["entities"]}
    if "pneumonia" in by_text:
        assert by_text["pneumonia"]["negated"] is True
        assert by_text["pneumonia"]["icd10cm"][0]["code"] == "J18.9"
    if "asthma" in by_text:
        assert [t["name"] for t in by_text["asthma"]["traits"]] == ["historical"]
    if "albuterol" in by_text:
        assert by_text["albuterol"]["drug"]["name"].lower() == "albuterol"


def test_list_and_instances_keep_order(server):
    notes = [
        {"note_id": f"n{i}", "text": f"Metformin was started for gout in visit {i}."}
        for i in range(5)
    ]
    notes.append({"note_id": 42, "text": NOTE})  # integer ids are accepted as strings
    status, _, body = post_json(server["port"], notes)
    assert status == 200
    results = json.loads(body)
    assert [r["note_id"] for r in results] == ["n0", "n1", "n2", "n3", "n4", "42"]
    for note, result in zip(notes, results, strict=True):
        check_entities(result, note["text"])
    status, _, body = post_json(server["port"], {"instances": notes[:2]})
    assert status == 200
    assert [r["note_id"] for r in json.loads(body)["predictions"]] == ["n0", "n1"]


def test_jsonlines_batch_transform(server):
    notes = [
        {"note_id": f"b{i}", "text": f"Allopurinol was started for psoriasis ({i})."}
        for i in range(7)
    ]
    body = (
        "\n".join(json.dumps(n) for n in notes[:3])
        + "\n\n"
        + "\r\n".join(json.dumps(n) for n in notes[3:])
    )
    status, ctype, out = post_json(server["port"], body, "application/jsonlines")
    assert status == 200 and ctype == "application/jsonlines"
    lines = out.decode("utf-8").splitlines()
    assert len(lines) == len(notes)  # blank lines are not records
    for note, line in zip(notes, lines, strict=True):
        result = json.loads(line)
        assert result["note_id"] == note["note_id"]
        check_entities(result, note["text"])


def test_offsets_refer_to_the_text_as_sent(server):
    # CRLF, a control character, a decomposed accent and an astral character: the model reads
    # the normalised view, the answer indexes the text sent.
    raw = "DIAGNOSIS: , Asthma.\r\nPLAN: , Albuterol\x07 inhaler. \U0001f600 Cafe\u0301 asthma."
    status, _, body = post_json(server["port"], {"note_id": "norm", "text": raw})
    assert status == 200
    result = json.loads(body)
    assert "text" not in result and "normalised" not in result
    assert result["note_sha256"] == hashlib.sha256(raw.encode("utf-8")).hexdigest()
    check_entities(result, raw)
    assert result["entities"], "the model finds something after the rewritten characters"


def test_execution_parameters_for_batch_transform(server):
    status, _, body = request(server["port"], "GET", "/execution-parameters")
    assert status == 200
    assert json.loads(body)["BatchStrategy"] == "MULTI_RECORD"


# --------------------------------------------------------------------------- bad payloads


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        ('{"note_id": "x", "text": "' + SECRET, "application/json", 400, "malformed_json"),
        ('{"note_id": "x"}', "application/json", 400, "missing_field"),
        ('{"text": "' + SECRET + '"}', "application/json", 400, "missing_field"),
        ('{"note_id": "x", "text": 12}', "application/json", 400, "invalid_text"),
        ('{"note_id": "x", "text": "  \\n "}', "application/json", 400, "empty_text"),
        (
            '{"note_id": "a/b", "text": "' + SECRET + '"}',
            "application/json",
            400,
            "invalid_note_id",
        ),
        ('{"note_id": true, "text": "x"}', "application/json", 400, "invalid_note_id"),
        ('"just a string"', "application/json", 400, "invalid_payload"),
        ("[]", "application/json", 400, "no_notes"),
        ('{"instances": {"note_id": "x"}}', "application/json", 400, "invalid_payload"),
        ('[{"note_id": "x", "text": "ok"}, 5]', "application/json", 400, "invalid_note"),
        (b'{"note_id": "x", "text": "\xff"}', "application/json", 400, "bad_encoding"),
        ('{"note_id": "x", "text": "ok"}', "text/csv", 415, "unsupported_media_type"),
        ('{"note_id": "x", "text": "ok"}', None, 415, "unsupported_media_type"),
        ('{"note_id": "x", "text": "ok"}', "application/json; charset=latin-1", 415, None),
    ],
)
def test_bad_payloads_get_4xx_without_echoing_text(server, body, content_type, status, code):
    got_status, ctype, out = request(server["port"], "POST", "/invocations", body, content_type)
    assert got_status == status
    error = error_of(status, ctype, out)
    if code:
        assert error["code"] == code
    assert SECRET not in out.decode("utf-8", "replace")


def test_jsonlines_errors_name_the_line(server):
    # A bad line is an error entry in its place; the other lines are still answered.
    body = '{"note_id": "a", "text": "ok"}\n{"note_id": "b", "text": ""}\n'
    status, ctype, out = post_json(server["port"], body, "application/jsonlines")
    assert status == 200 and ctype == "application/jsonlines"
    first, second = (json.loads(line) for line in out.decode("utf-8").splitlines())
    assert first["note_id"] == "a" and "entities" in first
    assert second == {
        "line": 2,
        "note_id": "b",
        "error": {"status": 400, "code": "empty_text", "message": second["error"]["message"]},
    }
    assert second["error"]["message"].startswith("line 2:")


def test_size_limits_are_413(server):
    big = {"note_id": "big", "text": "asthma " * (MAX_BYTES // 7 + 10)}
    status, ctype, out = post_json(server["port"], big)
    assert status == 413 and error_of(413, ctype, out)["code"] == "request_too_large"
    many = [{"note_id": str(i), "text": "gout"} for i in range(MAX_NOTES + 1)]
    status, ctype, out = post_json(server["port"], many)
    assert status == 413 and error_of(413, ctype, out)["code"] == "too_many_notes"
    long_note = {"note_id": "long", "text": "x" * (MAX_CHARS + 1)}
    status, ctype, out = post_json(server["port"], long_note)
    assert status == 400 and error_of(400, ctype, out)["code"] == "too_long"


def test_wrong_method_and_path(server):
    status, _, _ = request(server["port"], "GET", "/invocations")
    assert status == 405
    status, _, _ = request(server["port"], "POST", "/ping", "{}", "application/json")
    assert status == 405
    status, _, _ = request(server["port"], "GET", "/nope")
    assert status == 404


def test_server_log_never_contains_note_text(server):
    # Runs after the payload tests in this module (file order): the log has seen them all.
    post_json(server["port"], {"note_id": "s", "text": f"{SECRET} has asthma"})
    log_text = Path(server["log"]).read_text()
    assert "POST /invocations 200" in log_text and "POST /invocations 400" in log_text
    for part in SECRET.split():
        assert part not in log_text


# --------------------------------------------------------------------------- process lifecycle


def test_sigterm_stops_the_server(server):
    proc = server["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


def test_missing_model_exits_non_zero(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SERVE_SCRIPT), "--root", str(tmp_path), "--port", str(free_port())],
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "cannot load the model" in result.stdout


# --------------------------------------------------------------------------- the WSGI app alone


def call(app, method, path, body=b"", content_type="application/json"):
    captured = {}

    def start_response(status, headers):
        captured["status"] = int(status.split()[0])
        captured["headers"] = dict(headers)

    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    out = b"".join(app(environ, start_response))
    return captured["status"], json.loads(out)


def test_ping_is_503_until_the_model_is_loaded():
    holder = ModelHolder()
    app = InferenceApp(holder, Limits())
    assert call(app, "GET", "/ping") == (503, {"status": "loading"})
    status, body = call(app, "POST", "/invocations", b'{"note_id": "a", "text": "b"}')
    assert status == 503 and body["error"]["code"] == "model_loading"


class ExplodingModel:
    version = "broken"

    def predict(self, texts, batch_size=32):
        raise RuntimeError(f"boom near {texts[0]}")


def test_internal_errors_are_500_without_details(caplog):
    holder = ModelHolder()
    holder.set(ExplodingModel())
    app = InferenceApp(holder, Limits())
    body = json.dumps({"note_id": "a", "text": SECRET}).encode()
    status, out = call(app, "POST", "/invocations", body)
    assert status == 500 and out["error"]["code"] == "internal_error"
    assert SECRET not in json.dumps(out) and SECRET not in caplog.text
