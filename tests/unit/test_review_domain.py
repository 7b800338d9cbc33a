"""The review loop's pure logic: offsets, submission checks, rows, KPIs (Python == SQL in
DuckDB), the validated-eval slice kept out of training, the API Gateway adapter."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pytest

from clinical_ner.data import analytics, data_prep
from clinical_ner.data.review import (
    VALIDATED_EVAL_DIR,
    ReviewEntity,
    ReviewInputError,
    check_submission,
    codepoint_to_utf16,
    compute_kpis,
    in_validated_eval,
    retrain_due,
    review_rows,
    risk_key,
    utf16_to_codepoint,
)
from clinical_ner.pipeline.review_store import LocalStore, parquet_bytes
from clinical_ner.pipeline.stage_config import LAKE, load_stage_config
from clinical_ner.runtime import review_apigw
from clinical_ner.runtime.review_app import CLAIMS_ENVIRON_KEY

TEXT = "🤒 e\u0301 asthma 👍 fever"
SHA = "ab" * 32


def test_offset_conversion_round_trips_on_astral_and_combining_text():
    for cp in range(len(TEXT) + 1):
        assert utf16_to_codepoint(TEXT, codepoint_to_utf16(TEXT, cp)) == cp
    assert codepoint_to_utf16(TEXT, 1) == 2  # the emoji is two UTF-16 units
    assert TEXT[utf16_to_codepoint(TEXT, 6) : utf16_to_codepoint(TEXT, 12)] == "asthma"
    with pytest.raises(ReviewInputError):
        utf16_to_codepoint(TEXT, 1)  # inside the surrogate pair


def _entities():
    a, f = TEXT.index("asthma"), TEXT.index("fever")
    return [
        ReviewEntity("e1", a, a + 6, "DISEASE", 0.4),
        ReviewEntity("e2", f, f + 5, "DISEASE", 0.9, True),
    ]


def _check(decisions, seconds=5):
    return check_submission(
        {"decisions": decisions, "seconds_spent": seconds},
        note_id="n1", note_sha256=SHA, text=TEXT, entities=_entities(),
        labels=["DISEASE", "TREATMENT"],
    )  # fmt: skip


def test_a_valid_submission_gives_final_spans_and_rows():
    e = TEXT.index("e\u0301")
    review = _check(
        [
            {"entity_id": "e1", "decision": "relabelled", "label": "TREATMENT"},
            {"entity_id": "e2", "decision": "rejected"},
            {"decision": "added", "start": e, "end": e + 2, "label": "DISEASE"},
        ]
    )
    assert [TEXT[s:t] for s, t, _ in review.final_spans()] == ["e\u0301", "asthma"]
    rows = review_rows(
        note_id="n1", note_sha256=SHA, model_version="v1", reviewer_id="r",
        review=review, validated_eval=False, reviewed_at=datetime(2025, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    assert [r["decision"] for r in rows] == ["note_reviewed", "relabelled", "rejected", "added"]
    parquet_bytes(rows)  # fits the Arrow schema


@pytest.mark.parametrize(
    "decisions",
    [
        [{"entity_id": "e1", "decision": "accepted"}],  # e2 undecided
        [{"entity_id": "e1", "decision": "accepted"}, {"entity_id": "e2", "decision": "x"}],
        [{"entity_id": "e1", "decision": "accepted"}, {"entity_id": "e1", "decision": "rejected"}],
        [
            {"entity_id": "e1", "decision": "relabelled", "label": "DISEASE"},
            {"entity_id": "e2", "decision": "accepted"},
        ],
        [
            {"entity_id": "e1", "decision": "span_fixed", "start": 0, "end": 99},
            {"entity_id": "e2", "decision": "accepted"},
        ],
        [
            {"entity_id": "e1", "decision": "accepted"},
            {"entity_id": "e2", "decision": "accepted"},
            {"decision": "added", "start": 1, "end": 2, "label": "DISEASE"},
        ],  # whitespace only
        [
            {"entity_id": "e1", "decision": "accepted"},
            {"entity_id": "e2", "decision": "accepted"},
            {"decision": "added", "start": 4, "end": 12, "label": "DISEASE"},
        ],  # overlaps asthma
        [
            {"entity_id": "e1", "decision": "accepted"},
            {"entity_id": "e2", "decision": "accepted"},
            {"decision": "added", "start": True, "end": 3, "label": "DISEASE"},
        ],
    ],
)
def test_bad_submissions_are_refused_without_quoting_text(decisions):
    with pytest.raises(ReviewInputError) as err:
        _check(decisions)
    assert "asthma" not in str(err.value) and "fever" not in str(err.value)


def test_queue_policy_helpers():
    assert risk_key([], SHA) < risk_key(_entities(), SHA)  # no-entity notes first
    low = [ReviewEntity("x", 0, 1, "DISEASE", 0.1)]
    assert risk_key(low, SHA) < risk_key(_entities(), SHA)
    assert retrain_due(199, 200, 200) and not retrain_due(200, 201, 200)
    share = sum(in_validated_eval(f"{i:064x}", 0.2) for i in range(5000)) / 5000
    assert 0.18 < share < 0.22
    assert in_validated_eval(SHA, 0.2) == in_validated_eval(SHA, 0.2)


def test_stage_settings_and_lake_layout():
    cfg = load_stage_config("prod")
    assert cfg.review.retrain_after_reviewed_notes == 200
    assert cfg.review.manual_entry_minutes_per_note > 0
    assert type(cfg).from_json(cfg.to_json()) == cfg
    assert LAKE.reviewed_annotations.startswith(LAKE.raw_annotations)
    assert not LAKE.validated_eval.startswith(LAKE.raw_annotations)
    assert LAKE.validated_eval.rstrip("/").endswith(VALIDATED_EVAL_DIR)


def test_training_never_reads_the_validated_eval_set():
    line = json.dumps({"text": "Asthma was treated.", "label": [[0, 6, "DISEASE"]]})
    other = json.dumps({"text": "Fever resolved.", "label": [[0, 5, "DISEASE"]]})
    dataset = data_prep.build_training_dataset(
        {
            "reviewed/a.jsonl": (other + "\n").encode(),
            f"reviewed/{VALIDATED_EVAL_DIR}/b.jsonl": (line + "\n").encode(),
        },
        labels={"DISEASE": "DISEASE"},
    )
    texts = b"".join(dataset.files.values()).decode()
    assert "Asthma" not in texts and "Fever" in texts
    assert [r["reason"] for r in dataset.manifest["rejected_files"]] == ["validated_eval"]


def _rows():
    def note(seconds, decisions, day, version="v1"):
        rows = [{"decision": "note_reviewed", "seconds_spent": seconds}]
        rows += [{"decision": d, "seconds_spent": seconds} for d in decisions]
        return [{**r, "dt": day, "model_version": version} for r in rows]

    return [
        *note(30, ["accepted", "accepted", "rejected", "added"], "2025-01-01"),
        *note(90, ["accepted", "relabelled", "span_fixed"], "2025-01-01"),
        *note(60, [], "2025-01-01"),
        *note(10, ["accepted"], "2025-01-02", "v2"),
        *note(20, ["rejected"], "2025-01-02", "v2"),
    ]


def test_kpis_in_python():
    day1 = compute_kpis(_rows(), 6.0)[0]
    assert day1["notes_reviewed"] == 3
    assert day1["production_precision"] == pytest.approx(3 / 6)
    assert day1["production_recall"] == pytest.approx(5 / 6)
    assert day1["corrections_per_100_entities"] == pytest.approx(400 / 6)
    assert day1["median_review_seconds"] == 60
    assert day1["hours_saved"] == pytest.approx(3 * 6 / 60 - 180 / 3600)


def test_kpi_named_query_in_duckdb_matches_python(tmp_path):
    store = LocalStore(tmp_path)
    for i, day in enumerate(("2025-01-01", "2025-01-02")):
        rows = [r for r in _rows() if r["dt"] == day]
        full = [
            {
                "review_id": "r", "note_id": "n", "note_sha256": SHA, "entity_id": None,
                "start_char": None, "end_char": None, "label": None, "model_start_char": None,
                "model_end_char": None, "model_label": None, "model_confidence": None,
                "reviewer_id": "u", "validated_eval": False,
                "reviewed_at": datetime(2025, 1, 1, tzinfo=UTC),
                **{k: v for k, v in r.items() if k != "dt"},
            }
            for r in rows
        ]  # fmt: skip
        store.put(f"{LAKE.reviews}dt={day}/part-{i}.parquet", parquet_bytes(full))
    con = analytics.connect_reviews(tmp_path)
    cols, data = analytics.run_query(
        con, "review_kpis_by_day", {"manual_entry_minutes_per_note": 6.0}
    )
    sql = [dict(zip(cols, row, strict=True)) for row in data]
    py = compute_kpis(_rows(), 6.0)
    assert len(sql) == len(py) == 2
    for s, p in zip(sql, py, strict=True):
        for key, value in s.items():
            assert value == pytest.approx(p[key]) if isinstance(value, float) else value == p[key]


def _echo(environ, start_response):
    body = json.dumps(
        {
            "path": environ["PATH_INFO"],
            "query": environ["QUERY_STRING"],
            "body": environ["wsgi.input"].read().decode(),
            "claims": environ.get(CLAIMS_ENVIRON_KEY),
            "spoof": environ.get("HTTP_X_REVIEWER"),
        }
    ).encode()
    start_response("201 Created", [("Content-Type", "application/json"), ("X-A", "1")])
    return io.BytesIO(body)


def test_api_gateway_v2_adapter():
    event = {
        "version": "2.0",
        "rawPath": "/api/tasks/abc%23v1/submit",
        "rawQueryString": "limit=5",
        "headers": {"content-type": "application/json", "x-reviewer": "mallory"},
        "requestContext": {
            "http": {"method": "POST", "path": "/api/tasks/abc#v1/submit"},
            "stage": "$default",
            "authorizer": {"jwt": {"claims": {"sub": "u-1", "cognito:groups": "[reviewers]"}}},
        },
        "body": "eyJhIjogMX0=",
        "isBase64Encoded": True,
    }
    out = review_apigw.handle(_echo, event)
    assert out["statusCode"] == 201 and out["headers"]["X-A"] == "1"
    seen = json.loads(out["body"])
    assert seen["path"] == "/api/tasks/abc#v1/submit" and seen["query"] == "limit=5"
    assert seen["body"] == '{"a": 1}' and seen["claims"]["sub"] == "u-1"
