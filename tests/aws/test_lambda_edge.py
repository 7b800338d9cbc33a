"""The Lambda edge (clinical_ner.runtime.lambda_edge): events validated first with the structured
error line, EMF counts, the request id on every line, and no note text in any log."""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from clinical_ner.pipeline import retraining
from clinical_ner.pipeline.aws_runtime import PipelineStepError, TransientAwsError
from clinical_ner.pipeline.stage_config import load_stage_config
from clinical_ner.runtime import lambda_edge as edge

REPO = Path(__file__).resolve().parents[2]
SECRET = "Pt reports SECRET-MARKER-7f3a chest pain"  # stands for note text


class Ctx:
    """The attributes of the Lambda context object the edge reads."""

    function_name = "clinical-ner-dev-edge"
    aws_request_id = "req-0b7e-4c1d"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:clinical-ner-dev-edge"
    memory_limit_in_mb = 512


@dataclass(frozen=True)
class Run:
    run_id: str = edge.at(log=True)


def load(name: str):
    spec = importlib.util.spec_from_file_location(
        f"edge_{name}", REPO / "lambdas" / name / "handler.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def logs(text: str) -> list[dict]:
    return [d for d in lines(text) if "_aws" not in d]


def emf(text: str) -> list[dict]:
    return [d for d in lines(text) if "_aws" in d]


# Every handler given an event without its required fields, before any environment or AWS.
MALFORMED = [
    ("gate_model", "handler", {}, "gate_model", "event lacks model_package_arn"),
    ("approve_or_reject", "handler", {"model_package_arn": "a"}, "approve_or_reject", "action"),
    ("register_model", "handler", {"training": {"job_name": "j"}}, "register_model", "training"),
    ("deploy_model", "handler", {"action": "status"}, "deploy_model", "event lacks deployment"),
    ("deploy_model", "handler", {"action": "drop"}, "deploy_model", "unknown deploy action"),
    ("publish_extractions", "handler", {"run_id": "r"}, "publish_extractions", "lacks dt"),
    ("publish_extractions", "stage", {"run_id": 7}, "stage_transform_input", "must be a string"),
    ("drift_monitor", "handler", {"run_id": "r", "dt": "d"}, "drift_monitor", "model_version"),
    (
        "drift_monitor",
        "handler",
        {"source": "endpoint_capture", "window_hours": "a day"},
        "drift_monitor",
        "window_hours must be an integer",
    ),
    ("resolve_dataset", "handler", {"dataset_version": ["x"]}, "resolve_dataset", "a string"),
]


@pytest.mark.parametrize(("name", "entry", "event", "step", "reason"), MALFORMED)
def test_malformed_event_gets_the_structured_error_line_first(
    capsys, monkeypatch, name, entry, event, step, reason
):
    for var in ("STAGE_CONFIG", "LAKE_BUCKET", "MODEL_PACKAGE_GROUP", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)  # validation needs neither environment nor AWS
    with pytest.raises(PipelineStepError, match=reason):
        getattr(load(name), entry)(event, Ctx())
    (line,) = logs(capsys.readouterr().out)
    assert line["level"] == "ERROR" and line["message"] == "step failed"
    assert line["step"] == step and line["outcome"] == "invalid_event"
    assert line["error_type"] == "PipelineStepError" and reason in line["reason"]
    assert line["function_request_id"] == Ctx.aws_request_id
    assert line["function_name"] == Ctx.function_name


def test_an_event_that_is_not_an_object_is_rejected_the_same_way(capsys):
    with pytest.raises(PipelineStepError, match="event must be a JSON object"):
        load("gate_model").handler(["model_package_arn"], Ctx())
    (line,) = logs(capsys.readouterr().out)
    assert line["outcome"] == "invalid_event" and line["function_request_id"] == Ctx.aws_request_id


def test_a_trigger_the_function_does_not_understand_keeps_its_error_and_is_logged(capsys):
    event = {"source": "aws.s3", "detail-type": "Object Created", "detail": {"object": {}}}
    with pytest.raises(retraining.TriggerError, match="not under"):
        load("retraining_trigger").handler(event, Ctx())
    (line,) = logs(capsys.readouterr().out)
    assert (line["step"], line["outcome"]) == ("retraining_trigger", "invalid_event")
    assert line["error_type"] == "TriggerError" and "reason" not in line


def test_emf_counts_each_outcome_with_step_and_service_dimensions(capsys):
    @edge.step("edge_test", Run)
    def ok(run: Run) -> dict:
        return {"run_id": run.run_id}

    @edge.step("edge_test", lambda e: e)
    def throttled(_event: object) -> dict:
        raise ClientError(
            {"Error": {"Code": "ThrottlingException"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
            "ListModelPackages",
        )

    assert ok({"run_id": "r-1"}, Ctx()) == {"run_id": "r-1"}
    with pytest.raises(TransientAwsError):
        throttled({}, Ctx())
    with pytest.raises(PipelineStepError):
        ok({}, Ctx())
    out = capsys.readouterr().out
    names = []
    for blob in emf(out):
        (directive,) = blob["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == edge.NAMESPACE
        assert sorted(directive["Dimensions"][0]) == ["service", "step"]
        assert blob["step"] == "edge_test" and blob["service"] == edge.SERVICE
        assert isinstance(blob["_aws"]["Timestamp"], int)
        (metric,) = directive["Metrics"]
        assert metric["Unit"] == "Count" and blob[metric["Name"]] == [1.0]
        names.append(metric["Name"])
    assert names == ["StepsSucceeded", "TransientErrors", "InvalidEvents"]
    outcomes = [(d["outcome"], d.get("run_id")) for d in logs(out)]
    assert outcomes == [("ok", "r-1"), ("transient_error", None), ("invalid_event", None)]


def test_no_note_text_reaches_a_log_even_with_event_logging_switched_on(
    aws, capsys, caplog, monkeypatch
):
    """An event carrying text it should not, a step failing with it in its message: neither
    the event nor the message is logged (POWERTOOLS_LOGGER_LOG_EVENT cannot turn it on)."""
    monkeypatch.setenv("POWERTOOLS_LOGGER_LOG_EVENT", "true")
    monkeypatch.setenv("MODEL_PACKAGE_GROUP", "clinical-ner-dev-edge")
    monkeypatch.setenv("STAGE_CONFIG", load_stage_config("dev").to_json())
    caplog.set_level(logging.DEBUG)
    arn = "arn:aws:sagemaker:us-east-1:123456789012:model-package/clinical-ner-dev-edge/1"
    with pytest.raises(Exception) as raised:  # moto: no such package
        load("gate_model").handler({"model_package_arn": arn, "note": {"text": SECRET}}, Ctx())
    assert not isinstance(raised.value, PipelineStepError) or "lacks" not in str(raised.value)

    @edge.step("edge_test", Run)
    def leaky(_run: Run) -> dict:
        raise ValueError(f"cannot read note: {SECRET}")

    with pytest.raises(ValueError, match="SECRET-MARKER"):
        leaky({"run_id": "r-2", "text": SECRET}, Ctx())
    captured = capsys.readouterr()
    failed = [d for d in logs(captured.out) if d["outcome"] == "error"]
    assert [d["step"] for d in failed] == ["gate_model", "edge_test"]
    assert failed[0]["model_package_arn"] == arn  # the ids it was given, and only those
    assert "SECRET-MARKER" not in captured.out + captured.err + caplog.text


def test_a_root_handler_with_the_edge_format_collects_the_edge_lines_once(capsys):
    """Local mode's pipeline.log: the edge writes there instead of stdout, one line each."""
    sink = io.StringIO()
    collector = logging.StreamHandler(sink)
    collector.setFormatter(edge.JsonFormatter())
    root = logging.getLogger()
    root.addHandler(collector)
    try:
        with pytest.raises(PipelineStepError):
            load("gate_model").handler({}, Ctx())
    finally:
        root.removeHandler(collector)
    assert capsys.readouterr().out == ""
    (line,) = logs(sink.getvalue())
    assert line["step"] == "gate_model" and line["function_request_id"] == Ctx.aws_request_id
    assert [
        m["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"] for m in emf(sink.getvalue())
    ] == ["InvalidEvents"]


def test_only_the_edge_imports_powertools_and_the_lambda_modules_stay_light():
    importers = sorted(
        p.relative_to(REPO).as_posix()
        for p in (REPO / "clinical_ner").rglob("*.py")
        if "aws_lambda_powertools" in p.read_text(encoding="utf-8")
    )
    assert importers == ["clinical_ner/runtime/lambda_edge.py"]
    core = (
        "import sys, importlib, pkgutil, clinical_ner.data, clinical_ner.pipeline;"
        "[importlib.import_module(m.name) for pkg in (clinical_ner.data, clinical_ner.pipeline)"
        " for m in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + '.')];"
        "import clinical_ner.runtime.sagemaker_train, clinical_ner.runtime.serve;"
        "import clinical_ner.runtime.extraction_steps, clinical_ner.runtime.capture;"
        "assert 'aws_lambda_powertools' not in sys.modules, 'powertools imported'"
    )
    lambdas = (
        "import sys, clinical_ner.runtime.lambda_edge, clinical_ner.runtime.lambda_events;"
        "bad = {'spacy', 'numpy', 'pyarrow', 'pandas'} & set(sys.modules); assert not bad, bad"
    )
    for code in (core, lambdas):
        subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
