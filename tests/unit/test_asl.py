"""The local States Language interpreter against the semantics of the Step Functions docs.

Every test runs on a `FakeClock`: waits, retry back-off and timeouts advance virtual time, so
the module runs in well under a second.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from clinical_ner_local.asl import (
    FakeClock,
    InvalidDefinitionError,
    MissingTaskHandlerError,
    StateMachine,
    StatesError,
    TaskRegistry,
    UnsupportedAslError,
    check_supported,
)

ECHO = "arn:aws:states:::local:echo"
LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
FN_ARN = "arn:aws:lambda:us-east-1:123456789012:function:{}"


def machine(
    states: dict,
    start: str | None = None,
    registry: TaskRegistry | None = None,
    clock: FakeClock | None = None,
    name: str = "StateMachine",
    **top,
) -> StateMachine:
    reg = registry or TaskRegistry()
    if registry is None:
        reg.register(ECHO, lambda inp, ctx: inp)
    definition = {"StartAt": start or next(iter(states)), "States": states, **top}
    return StateMachine(definition, reg, clock=clock or FakeClock(), name=name, seed=7)


def run(states: dict, data=None, **kw):
    return machine(states, **kw).execute(data)


def single(state: dict, data=None, **kw):
    """Run one state (made terminal) and return the execution's output."""
    result = run({"S": {**state, "End": True}}, data, **kw)
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    return result.output


# --------------------------------------------------------------------------------------------
# Path processing (examples of the AWS docs "Processing input and output")
# --------------------------------------------------------------------------------------------

DOCS_INPUT = {
    "comment": "An input comment.",
    "data": {"val1": 23, "val2": 17},
    "extra": "foo",
    "lambda": {"who": "AWS Step Functions"},
}


def test_docs_example_input_result_output_path():
    reg = TaskRegistry()
    reg.register_lambda("HelloFunction", lambda event, ctx: f"Hello, {event['who']}!")
    state = {
        "Type": "Task",
        "Resource": "arn:aws:lambda:us-east-1:123456789012:function:HelloFunction",
        "InputPath": "$.lambda",
        "ResultPath": "$.data.lambdaresult",
        "OutputPath": "$.data",
    }
    out = single(state, DOCS_INPUT, registry=reg)
    assert out == {"val1": 23, "val2": 17, "lambdaresult": "Hello, AWS Step Functions!"}


RESULT = "Hello, Step Functions!"
RP_INPUT = {"comment": "This is a test.", "details": "Default example", "who": "AWS"}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({}, RESULT, id="default ResultPath replaces input"),
        pytest.param({"ResultPath": "$"}, RESULT, id="$ replaces input"),
        pytest.param({"ResultPath": None}, RP_INPUT, id="null discards result"),
        pytest.param(
            {"ResultPath": "$.taskresult"},
            {**RP_INPUT, "taskresult": RESULT},
            id="result added to input",
        ),
        pytest.param(
            {"ResultPath": "$.a.b"},
            {**RP_INPUT, "a": {"b": RESULT}},
            id="intermediate objects created",
        ),
        pytest.param(
            {"ResultPath": "$.who"}, {**RP_INPUT, "who": RESULT}, id="existing key overwritten"
        ),
        pytest.param(
            {"ResultPath": None, "OutputPath": "$.who"},
            "AWS",
            id="OutputPath after null ResultPath",
        ),
        pytest.param({"ResultPath": "$.r", "OutputPath": "$.r"}, RESULT, id="OutputPath"),
        pytest.param({"ResultPath": "$.r", "OutputPath": None}, {}, id="null OutputPath"),
        pytest.param(
            {"InputPath": None, "Parameters": {"x.$": "$$.Execution.Input.who"}},
            {"x": "AWS"},
            id="null InputPath and context object",
        ),
    ],
)
def test_pass_result_path_table(fields, expected):
    if "Parameters" in fields:
        assert single({"Type": "Pass", **fields}, RP_INPUT) == expected
        return
    assert single({"Type": "Pass", "Result": RESULT, **fields}, RP_INPUT) == expected


def test_docs_example_parameters():
    data = {
        "comment": "Example for Parameters.",
        "product": {
            "details": {"color": "blue", "size": "small", "material": "cotton"},
            "availability": "in stock",
            "sku": "2317",
            "cost": "$23",
        },
    }
    params = {
        "comment": "Selecting what I care about.",
        "MyDetails": {
            "size.$": "$.product.details.size",
            "exists.$": "$.product.availability",
            "StaticValue": "foo",
        },
    }
    assert single({"Type": "Pass", "Parameters": params}, data) == {
        "comment": "Selecting what I care about.",
        "MyDetails": {"size": "small", "exists": "in stock", "StaticValue": "foo"},
    }


def test_docs_example_result_selector():
    reg = TaskRegistry()
    emr = {
        "resourceType": "elasticmapreduce",
        "resource": "createCluster.sync",
        "output": {"SdkHttpMetadata": {"HttpStatusCode": 200}, "ClusterId": "AKIAIOSFODNN7"},
    }
    reg.register("arn:aws:states:::elasticmapreduce:createCluster.sync", lambda i, c: emr)
    state = {
        "Type": "Task",
        "Resource": "arn:aws:states:::elasticmapreduce:createCluster.sync",
        "ResultSelector": {"ClusterId.$": "$.output.ClusterId", "ResourceType.$": "$.resourceType"},
        "ResultPath": "$.EMROutput",
    }
    out = single(state, {"in": 1}, registry=reg)
    assert out == {
        "in": 1,
        "EMROutput": {"ClusterId": "AKIAIOSFODNN7", "ResourceType": "elasticmapreduce"},
    }


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$", {"a": {"b": [10, {"c": "x"}]}, "k-1": 5}),
        ("$.a.b[0]", 10),
        ("$.a.b[1].c", "x"),
        ("$.a.b[-1]", {"c": "x"}),
        ("$['a']['b'][0]", 10),
        ("$.k-1", 5),
    ],
)
def test_jsonpath_subset(path, expected):
    data = {"a": {"b": [10, {"c": "x"}]}, "k-1": 5}
    assert single({"Type": "Pass", "Parameters": {"v.$": path}}, data) == {"v": expected}


def test_context_object():
    params = {
        "id.$": "$$.Execution.Id",
        "name.$": "$$.Execution.Name",
        "input.$": "$$.Execution.Input",
        "state.$": "$$.State.Name",
        "sm.$": "$$.StateMachine.Name",
        "start.$": "$$.Execution.StartTime",
    }
    m = machine({"S": {"Type": "Pass", "Parameters": params, "End": True}}, name="Training")
    result = m.execute({"x": 1}, name="run-1")
    assert result.output == {
        "id": "arn:aws:states:us-east-1:123456789012:execution:Training:run-1",
        "name": "run-1",
        "input": {"x": 1},
        "state": "S",
        "sm": "Training",
        "start": "2024-01-01T00:00:00.000Z",
    }


def test_missing_path_is_a_runtime_error_not_caught_by_states_all():
    states = {
        "S": {"Type": "Pass", "Parameters": {"v.$": "$.nope"}, "End": True},
    }
    result = run(states, {})
    assert result.status == "FAILED"
    assert result.error == "States.Runtime"
    assert "$.nope" in result.cause


def test_output_path_missing_is_a_runtime_error():
    result = run({"S": {"Type": "Pass", "Result": "x", "OutputPath": "$.who", "End": True}}, {})
    assert (result.status, result.error) == ("FAILED", "States.Runtime")


def test_result_path_into_non_object_fails_with_match_failure():
    result = run(
        {"S": {"Type": "Pass", "Result": 1, "ResultPath": "$.a.b", "End": True}}, {"a": "text"}
    )
    assert result.error == "States.ResultPathMatchFailure"


# --------------------------------------------------------------------------------------------
# Choice
# --------------------------------------------------------------------------------------------

CHOICE_INPUT = {
    "s": "apple",
    "n": 5,
    "f": 2.5,
    "b": True,
    "z": None,
    "other_s": "banana",
    "other_n": 5,
    "file": "notes/batch-7.jsonl",
    "star": "a*b",
}

CHOICE_CASES = [
    ({"Variable": "$.s", "StringEquals": "apple"}, True),
    ({"Variable": "$.s", "StringEquals": "pear"}, False),
    ({"Variable": "$.n", "StringEquals": "5"}, False),  # type mismatch is false
    ({"Variable": "$.s", "StringLessThan": "b"}, True),
    ({"Variable": "$.s", "StringGreaterThan": "b"}, False),
    ({"Variable": "$.s", "StringLessThanEquals": "apple"}, True),
    ({"Variable": "$.s", "StringGreaterThanEquals": "apple"}, True),
    ({"Variable": "$.s", "StringEqualsPath": "$.other_s"}, False),
    ({"Variable": "$.s", "StringLessThanPath": "$.other_s"}, True),
    ({"Variable": "$.s", "StringGreaterThanEqualsPath": "$.other_s"}, False),
    ({"Variable": "$.file", "StringMatches": "notes/*.jsonl"}, True),
    ({"Variable": "$.file", "StringMatches": "*.csv"}, False),
    ({"Variable": "$.star", "StringMatches": "a\\*b"}, True),
    ({"Variable": "$.s", "StringMatches": "a\\*b"}, False),
    ({"Variable": "$.n", "NumericEquals": 5}, True),
    ({"Variable": "$.f", "NumericEquals": 2.5}, True),
    ({"Variable": "$.n", "NumericLessThan": 5}, False),
    ({"Variable": "$.n", "NumericLessThanEquals": 5}, True),
    ({"Variable": "$.n", "NumericGreaterThan": 4.9}, True),
    ({"Variable": "$.n", "NumericGreaterThanEquals": 6}, False),
    ({"Variable": "$.n", "NumericEqualsPath": "$.other_n"}, True),
    ({"Variable": "$.f", "NumericGreaterThanPath": "$.n"}, False),
    ({"Variable": "$.b", "NumericEquals": 1}, False),  # a boolean is not a number
    ({"Variable": "$.b", "BooleanEquals": True}, True),
    ({"Variable": "$.b", "BooleanEqualsPath": "$.b"}, True),
    ({"Variable": "$.s", "BooleanEquals": True}, False),
    ({"Variable": "$.z", "IsNull": True}, True),
    ({"Variable": "$.s", "IsNull": True}, False),
    ({"Variable": "$.s", "IsPresent": True}, True),
    ({"Variable": "$.missing", "IsPresent": True}, False),
    ({"Variable": "$.missing", "IsPresent": False}, True),
    ({"Variable": "$.n", "IsNumeric": True}, True),
    ({"Variable": "$.b", "IsNumeric": True}, False),
    ({"Variable": "$.s", "IsString": True}, True),
    ({"Variable": "$.b", "IsBoolean": True}, True),
    (
        {
            "And": [
                {"Variable": "$.n", "NumericEquals": 5},
                {"Variable": "$.b", "BooleanEquals": True},
            ]
        },
        True,
    ),
    (
        {
            "And": [
                {"Variable": "$.n", "NumericEquals": 5},
                {"Variable": "$.b", "BooleanEquals": False},
            ]
        },
        False,
    ),
    (
        {
            "Or": [
                {"Variable": "$.n", "NumericEquals": 6},
                {"Variable": "$.s", "StringEquals": "apple"},
            ]
        },
        True,
    ),
    ({"Not": {"Variable": "$.s", "StringEquals": "apple"}}, False),
    (
        {
            "Not": {
                "And": [
                    {"Variable": "$.missing", "IsPresent": True},
                    {"Variable": "$.missing", "NumericEquals": 1},
                ]
            }
        },
        True,
    ),
    ({"Variable": "$$.Execution.Input.n", "NumericEquals": 5}, True),
]


@pytest.mark.parametrize(("rule", "expected"), CHOICE_CASES, ids=lambda v: json.dumps(v)[:60])
def test_choice_rules(rule, expected):
    states = {
        "C": {"Type": "Choice", "Choices": [{**rule, "Next": "Yes"}], "Default": "No"},
        "Yes": {"Type": "Pass", "Result": "yes", "End": True},
        "No": {"Type": "Pass", "Result": "no", "End": True},
    }
    result = run(states, CHOICE_INPUT)
    assert result.output == ("yes" if expected else "no")


def test_choice_first_match_wins_and_passes_input_through():
    states = {
        "C": {
            "Type": "Choice",
            "InputPath": "$.in",
            "OutputPath": "$.v",
            "Choices": [
                {"Variable": "$.v", "NumericGreaterThan": 1, "Next": "A"},
                {"Variable": "$.v", "NumericGreaterThan": 0, "Next": "B"},
            ],
        },
        "A": {"Type": "Succeed"},
        "B": {"Type": "Succeed"},
    }
    result = run(states, {"in": {"v": 3}})
    assert result.states_entered() == ["C", "A"]
    assert result.output == 3


def test_choice_without_match_or_default_fails():
    states = {
        "C": {"Type": "Choice", "Choices": [{"Variable": "$.v", "IsNull": True, "Next": "A"}]},
        "A": {"Type": "Succeed"},
    }
    result = run(states, {"v": 1})
    assert (result.status, result.error) == ("FAILED", "States.NoChoiceMatched")


def test_choice_on_missing_variable_is_a_runtime_error():
    states = {
        "C": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.v", "IsNull": True, "Next": "A"}],
            "Default": "A",
        },
        "A": {"Type": "Succeed"},
    }
    assert run(states, {}).error == "States.Runtime"


# --------------------------------------------------------------------------------------------
# Wait, Succeed, Fail, timeouts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "data", "slept"),
    [
        ({"Seconds": 30}, {}, 30.0),
        ({"SecondsPath": "$.delay"}, {"delay": 12}, 12.0),
        ({"SecondsPath": "$.delay"}, {"delay": 0}, 0.0),
    ],
)
def test_wait_uses_the_clock(fields, data, slept):
    clock = FakeClock()
    out = single({"Type": "Wait", **fields}, data, clock=clock)
    assert out == data
    assert clock.sleeps == [slept]
    assert (clock.now() - datetime(2024, 1, 1, tzinfo=UTC)).total_seconds() == slept


def test_succeed_and_fail_states():
    ok = run({"S": {"Type": "Succeed", "InputPath": "$.a"}}, {"a": {"b": 1}})
    assert (ok.status, ok.output) == ("SUCCEEDED", {"b": 1})
    failed = run({"F": {"Type": "Fail", "Error": "Gate.Rejected", "Cause": "F1 too low"}})
    assert (failed.status, failed.error, failed.cause) == ("FAILED", "Gate.Rejected", "F1 too low")


def test_wait_seconds_path_must_be_a_non_negative_integer():
    result = run({"W": {"Type": "Wait", "SecondsPath": "$.d", "End": True}}, {"d": "soon"})
    assert (result.status, result.error) == ("FAILED", "States.Runtime")


def test_task_timeout_is_caught_as_states_timeout_not_task_failed():
    clock = FakeClock()
    reg = TaskRegistry()

    def slow(inp, ctx):
        ctx.clock.sleep(120)  # the "job" runs two virtual minutes
        return {"done": True}

    reg.register("arn:aws:states:::glue:startJobRun.sync", slow)
    states = {
        "Job": {
            "Type": "Task",
            "Resource": "arn:aws:states:::glue:startJobRun.sync",
            "TimeoutSeconds": 60,
            "Retry": [{"ErrorEquals": ["States.TaskFailed"], "MaxAttempts": 5}],
            "Catch": [{"ErrorEquals": ["States.Timeout"], "ResultPath": "$.err", "Next": "T"}],
            "End": True,
        },
        "T": {"Type": "Pass", "End": True},
    }
    result = run(states, {}, registry=reg, clock=clock)
    assert result.output["err"]["Error"] == "States.Timeout"
    assert len(reg.calls) == 1  # States.TaskFailed does not retry a timeout


def test_execution_timeout():
    result = run(
        {"W": {"Type": "Wait", "Seconds": 100, "Next": "S"}, "S": {"Type": "Succeed"}},
        TimeoutSeconds=50,
    )
    assert (result.status, result.error) == ("TIMED_OUT", "States.Timeout")


# --------------------------------------------------------------------------------------------
# Retry and Catch
# --------------------------------------------------------------------------------------------


class Flaky:
    """Fails `failures` times with `error`, then returns {"ok": attempt}."""

    def __init__(self, failures: int, error: str = "TransientAwsError") -> None:
        self.failures, self.error, self.attempts = failures, error, 0

    def __call__(self, inp, ctx):
        self.attempts += 1
        if self.attempts <= self.failures:
            raise StatesError(self.error, f"attempt {self.attempts}")
        return {"ok": self.attempts}


@pytest.mark.parametrize(
    ("retry", "failures", "status", "sleeps"),
    [
        pytest.param(
            [
                {
                    "ErrorEquals": ["TransientAwsError"],
                    "IntervalSeconds": 2,
                    "MaxAttempts": 3,
                    "BackoffRate": 3,
                }
            ],
            2,
            "SUCCEEDED",
            [2, 6],
            id="backoff",
        ),
        pytest.param(
            [
                {
                    "ErrorEquals": ["TransientAwsError"],
                    "IntervalSeconds": 2,
                    "MaxAttempts": 3,
                    "BackoffRate": 3,
                }
            ],
            4,
            "FAILED",
            [2, 6, 18],
            id="attempts exhausted",
        ),
        pytest.param(
            [{"ErrorEquals": ["States.ALL"]}],
            3,
            "SUCCEEDED",
            [1, 2, 4],
            id="defaults 1s x2, 3 attempts",
        ),
        pytest.param(
            [
                {
                    "ErrorEquals": ["States.TaskFailed"],
                    "IntervalSeconds": 10,
                    "BackoffRate": 10,
                    "MaxAttempts": 3,
                    "MaxDelaySeconds": 50,
                }
            ],
            3,
            "SUCCEEDED",
            [10, 50, 50],
            id="MaxDelaySeconds caps",
        ),
        pytest.param([{"ErrorEquals": ["Other"]}], 1, "FAILED", [], id="no matching retrier"),
        pytest.param(
            [{"ErrorEquals": ["TransientAwsError"], "MaxAttempts": 0}],
            1,
            "FAILED",
            [],
            id="MaxAttempts 0",
        ),
        pytest.param(
            [
                {"ErrorEquals": ["Other"], "MaxAttempts": 9},
                {"ErrorEquals": ["TransientAwsError"], "IntervalSeconds": 5},
            ],
            1,
            "SUCCEEDED",
            [5],
            id="first matching retrier",
        ),
    ],
)
def test_retry_with_backoff(retry, failures, status, sleeps):
    clock = FakeClock()
    reg = TaskRegistry()
    flaky = Flaky(failures)
    reg.register("arn:aws:states:::sagemaker:createTrainingJob.sync", flaky)
    state = {
        "Type": "Task",
        "Resource": "arn:aws:states:::sagemaker:createTrainingJob.sync",
        "Retry": retry,
    }
    result = run({"T": {**state, "End": True}}, {}, registry=reg, clock=clock)
    assert result.status == status
    assert clock.sleeps == sleeps
    assert [e.details["attempt"] for e in result.history if e.type == "TaskRetryScheduled"] == list(
        range(1, len(sleeps) + 1)
    )
    if status == "SUCCEEDED":
        assert result.output == {"ok": failures + 1}
    else:
        assert result.error == "TransientAwsError"


def test_jitter_full_stays_below_the_backoff_delay():
    clock = FakeClock()
    reg = TaskRegistry()
    reg.register(ECHO, Flaky(2))
    retry = [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 4, "JitterStrategy": "FULL"}]
    run(
        {"T": {"Type": "Task", "Resource": ECHO, "Retry": retry, "End": True}},
        registry=reg,
        clock=clock,
    )
    assert len(clock.sleeps) == 2
    assert 0 <= clock.sleeps[0] <= 4 and 0 <= clock.sleeps[1] <= 8


CATCH_STATES = {
    "Work": {
        "Type": "Task",
        "Resource": FN_ARN.format("gate"),
        "Parameters": {"x.$": "$.x"},
        "ResultSelector": {"decision.$": "$"},
        "ResultPath": "$.gate",
        "Catch": [
            {"ErrorEquals": ["ValueError"], "ResultPath": "$.error", "Next": "Bad"},
            {"ErrorEquals": ["States.ALL"], "Next": "Other"},
        ],
        "Next": "Good",
    },
    "Good": {"Type": "Succeed"},
    "Bad": {"Type": "Pass", "End": True},
    "Other": {"Type": "Pass", "End": True},
}


@pytest.mark.parametrize(
    ("exc", "route", "output_check"),
    [
        (None, "Good", lambda o: o == {"x": 1, "gate": {"decision": {"pass": True}}}),
        (
            ValueError("f1 below floor"),
            "Bad",
            lambda o: (
                o["x"] == 1
                and o["error"]["Error"] == "ValueError"
                and json.loads(o["error"]["Cause"])
                == {"errorMessage": "f1 below floor", "errorType": "ValueError"}
            ),
        ),
        (
            KeyError("k"),
            "Other",
            lambda o: set(o) == {"Error", "Cause"} and o["Error"] == "KeyError",
        ),
    ],
)
def test_catch_routing_with_result_path(exc, route, output_check):
    reg = TaskRegistry()

    def gate(event, context):
        assert context.function_name == "gate"
        if exc is not None:
            raise exc
        return {"pass": True}

    reg.register_lambda("gate", gate)
    result = run(CATCH_STATES, {"x": 1}, registry=reg)
    assert result.status == "SUCCEEDED"
    assert result.states_entered() == ["Work", route]
    assert output_check(result.output), result.output
    if exc is not None:
        assert [e.type for e in result.history if e.state == "Work"][-2:] == [
            "StateFailed",
            "CatchTaken",
        ]


def test_heartbeat_timeout_unless_the_handler_heartbeats():
    clock = FakeClock()
    reg = TaskRegistry()

    def job(inp, ctx):
        for _ in range(3):
            ctx.clock.sleep(40)
            if inp["beat"]:
                ctx.heartbeat()
        return {"done": True}

    reg.register("arn:aws:states:::sagemaker:createTransformJob.sync", job)
    states = {
        "Job": {
            "Type": "Task",
            "Resource": "arn:aws:states:::sagemaker:createTransformJob.sync",
            "HeartbeatSeconds": 60,
            "TimeoutSeconds": 600,
            "Catch": [{"ErrorEquals": ["States.Timeout"], "ResultPath": "$.err", "Next": "T"}],
            "End": True,
        },
        "T": {"Type": "Pass", "End": True},
    }
    assert run(states, {"beat": True}, registry=reg, clock=clock).output == {"done": True}
    timed_out = run(states, {"beat": False}, registry=reg, clock=clock).output
    assert timed_out["err"]["Error"] == "States.HeartbeatTimeout"


def test_data_limit_is_not_caught_by_states_all():
    reg = TaskRegistry()
    reg.register(ECHO, lambda i, c: "x" * (300 * 1024))
    states = {
        "T": {
            "Type": "Task",
            "Resource": ECHO,
            "End": True,
            "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "C"}],
        },
        "C": {"Type": "Succeed"},
    }
    result = run(states, {}, registry=reg)
    assert (result.status, result.error) == ("FAILED", "States.DataLimitExceeded")


# --------------------------------------------------------------------------------------------
# Intrinsic functions: States.Format only
# --------------------------------------------------------------------------------------------

INTRINSIC_INPUT = {
    "name": "Ada",
    "n": 3,
    "arr": [1, 2, 2, 3],
    "json": '{"a": [1, 2]}',
    "obj": {"a": 1},
    "csv": "a,b,,c",
}

INTRINSIC_CASES = [
    ("States.Format('Hello, {}! n={}', $.name, $.n)", "Hello, Ada! n=3"),
    ("States.Format('literal \\{\\} and {}', $.name)", "literal {} and Ada"),
    ("States.Format('it\\'s {}', $.obj)", 'it\'s {"a":1}'),
    ("States.Format('{}-{}', 'clinical-ner-dev', $$.Execution.Name)", "clinical-ner-dev-run-1"),
    ("States.Format('{}/{}', States.Format('{}', $.arr), null)", "[1,2,2,3]/null"),
]


@pytest.mark.parametrize(
    ("expression", "expected"), INTRINSIC_CASES, ids=[c[0] for c in INTRINSIC_CASES]
)
def test_intrinsic_functions(expression, expected):
    m = machine({"S": {"Type": "Pass", "Parameters": {"v.$": expression}, "End": True}})
    assert m.execute(INTRINSIC_INPUT, name="run-1").output == {"v": expected}


@pytest.mark.parametrize(
    "expression",
    [
        "States.Format('{} {}', $.name)",
        "States.Format('{}', $.name, $.n)",
        "States.Format($.n, $.name)",
    ],
)
def test_intrinsic_failure_is_catchable(expression):
    states = {
        "P": {"Type": "Pass", "Parameters": {"v.$": expression}, "End": True},
    }
    result = run(states, INTRINSIC_INPUT)
    assert result.error == "States.IntrinsicFailure"


# --------------------------------------------------------------------------------------------
# History
# --------------------------------------------------------------------------------------------


def test_history_records_entries_exits_and_durations():
    clock = FakeClock()
    reg = TaskRegistry()

    def train(inp, ctx):
        ctx.record("epoch", epoch=1)
        ctx.clock.sleep(90)
        return {"TrainingJobStatus": "Completed"}

    reg.register("arn:aws:states:::sagemaker:createTrainingJob.sync", train)
    events = []
    m = machine(
        {
            "Train": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sagemaker:createTrainingJob.sync",
                "Next": "Done",
            },
            "Done": {"Type": "Succeed"},
        },
        registry=reg,
        clock=clock,
    )
    result = m.execute({}, on_event=events.append)
    types = [e.type for e in result.history]
    assert types == [
        "ExecutionStarted",
        "StateEntered",
        "TaskScheduled",
        "TaskProgress",
        "TaskSucceeded",
        "StateExited",
        "StateEntered",
        "StateExited",
        "ExecutionSucceeded",
    ]
    assert events == result.history
    durations = result.state_durations()
    assert [(d["state"], d["seconds"], d["outcome"]) for d in durations] == [
        ("Train", 90.0, "succeeded"),
        ("Done", 0.0, "succeeded"),
    ]


# --------------------------------------------------------------------------------------------
# Unsupported or invalid definitions fail loudly, before anything runs
# --------------------------------------------------------------------------------------------

PASS_END = {"Type": "Pass", "End": True}


def task(**fields):
    return {"Type": "Task", "Resource": ECHO, "End": True, **fields}


def choice(rule):
    return {
        "C": {"Type": "Choice", "Default": "S", "Choices": [{**rule, "Next": "S"}]},
        "S": PASS_END,
    }


def pass_param(expression):
    return {"S": {**PASS_END, "Parameters": {"v.$": expression}}}


ITERATOR = {"StartAt": "P", "States": {"P": PASS_END}}

# (states, top-level fields, state named in the message, field named, what the message says)
UNSUPPORTED = [
    pytest.param({"S": {"Type": "Sleep", "End": True}}, {}, "'S'", "Type", "'Sleep'", id="type"),
    pytest.param(
        {"S": {"Type": "Parallel", "End": True, "Branches": [ITERATOR]}},
        {},
        "'S'",
        "Type",
        "state type 'Parallel' is not supported",
        id="Parallel",
    ),
    pytest.param(
        {"S": {"Type": "Map", "End": True, "ItemsPath": "$.a", "Iterator": ITERATOR}},
        {},
        "'S'",
        "Type",
        "state type 'Map' is not supported",
        id="inline Map",
    ),
    pytest.param(
        {
            "S": {
                "Type": "Map",
                "End": True,
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                    **ITERATOR,
                },
            }
        },
        {},
        "'S'",
        "Type",
        "state type 'Map' is not supported",
        id="distributed Map",
    ),
    pytest.param(
        {"S": PASS_END},
        {"QueryLanguage": "JSONata"},
        None,
        "QueryLanguage",
        "JSONata",
        id="JSONata machine",
    ),
    pytest.param(
        {"S": {**PASS_END, "QueryLanguage": "JSONata"}},
        {},
        "'S'",
        "QueryLanguage",
        "JSONata",
        id="JSONata state",
    ),
    pytest.param(
        {"S": task(Arguments={})}, {}, "'S'", "Arguments", "JSONata", id="JSONata Arguments"
    ),
    pytest.param(
        {"S": {**PASS_END, "Assign": {"x": 1}}},
        {},
        "'S'",
        "Assign",
        "workflow variables",
        id="variables",
    ),
    pytest.param(
        {"S": {**PASS_END, "Retries": []}},
        {},
        "'S'",
        "Retries",
        "not supported on a Pass state",
        id="unknown field",
    ),
    pytest.param(
        {"S": {**PASS_END, "Retry": []}},
        {},
        "'S'",
        "Retry",
        "not supported on a Pass state",
        id="Retry on a Pass state",
    ),
    pytest.param(
        {"S": task(Credentials={"RoleArn": "arn:aws:iam::1:role/x"})},
        {},
        "'S'",
        "Credentials",
        "cross-account",
        id="cross-account credentials",
    ),
    pytest.param(
        {"S": task(TimeoutSecondsPath="$.t")},
        {},
        "'S'",
        "TimeoutSecondsPath",
        "TimeoutSeconds only",
        id="TimeoutSecondsPath",
    ),
    pytest.param(
        {"S": task(HeartbeatSecondsPath="$.t")},
        {},
        "'S'",
        "HeartbeatSecondsPath",
        "HeartbeatSeconds only",
        id="HeartbeatSecondsPath",
    ),
    pytest.param(
        {"S": task(Resource=LAMBDA_INVOKE, Parameters={"FunctionName": "f", "Payload.$": "$"})},
        {},
        "'S'",
        "Resource",
        "lambda:invoke integration is not supported",
        id="lambda:invoke",
    ),
    pytest.param(
        {"S": task(Resource="arn:aws:states:::sns:publish.waitForTaskToken")},
        {},
        "'S'",
        "Resource",
        ".waitForTaskToken",
        id="callback pattern",
    ),
    pytest.param(
        {"S": task(Resource="arn:aws:states:us-east-1:123456789012:activity:review")},
        {},
        "'S'",
        "Resource",
        "is not supported",
        id="activity",
    ),
    pytest.param(
        {"S": task(Resource="arn:aws:states:::aws-sdk:s3:getObject")},
        {},
        "'S'",
        "Resource",
        "is not supported",
        id="AWS SDK integration",
    ),
    pytest.param(
        {"S": task(Resource="arn:aws:states:::states:startExecution.sync:2")},
        {},
        "'S'",
        "Resource",
        "is not supported",
        id=".sync:2",
    ),
    pytest.param(
        {"F": {"Type": "Fail", "ErrorPath": "$.e", "Cause": "c"}},
        {},
        "'F'",
        "ErrorPath",
        "static Error only",
        id="Fail ErrorPath",
    ),
    pytest.param(
        {"F": {"Type": "Fail", "Error": "E", "CausePath": "States.Format('{}', $.c)"}},
        {},
        "'F'",
        "CausePath",
        "static Cause only",
        id="Fail CausePath",
    ),
    pytest.param(
        {"W": {"Type": "Wait", "Timestamp": "2024-01-01T00:10:00Z", "End": True}},
        {},
        "'W'",
        "Timestamp",
        "until a timestamp",
        id="Wait Timestamp",
    ),
    pytest.param(
        {"W": {"Type": "Wait", "TimestampPath": "$.until", "End": True}},
        {},
        "'W'",
        "TimestampPath",
        "until a timestamp",
        id="Wait TimestampPath",
    ),
    *[
        pytest.param(
            choice(rule),
            {},
            "'C'",
            "Choices[0]",
            f"['{op}']",
            id=f"choice {op}",
        )
        for op, rule in [
            ("TimestampEquals", {"Variable": "$.t", "TimestampEquals": "2024-03-14T01:59:00Z"}),
            ("TimestampLessThanPath", {"Variable": "$.t", "TimestampLessThanPath": "$.t2"}),
            ("IsTimestamp", {"Variable": "$.t", "IsTimestamp": True}),
            ("StringContains", {"Variable": "$.a", "StringContains": "x"}),
        ]
    ],
    pytest.param(
        choice({"Not": {"Variable": "$.t", "TimestampGreaterThan": "2024-03-14T01:59:00Z"}}),
        {},
        "'C'",
        "Choices[0].Not",
        "['TimestampGreaterThan']",
        id="nested choice operator",
    ),
    *[
        pytest.param(
            pass_param(expression),
            {},
            "'S'",
            "Parameters.v.$",
            f"intrinsic function {name} is not supported",
            id=name,
        )
        for name, expression in [
            ("States.Nope", "States.Nope($.a)"),
            ("States.StringToJson", "States.StringToJson($.a)"),
            ("States.JsonToString", "States.JsonToString($.a)"),
            ("States.Array", "States.Array($.a, 1)"),
            ("States.ArrayGetItem", "States.ArrayGetItem($.a, 0)"),
            ("States.MathAdd", "States.MathAdd($.n, 1)"),
            ("States.UUID", "States.UUID()"),
            ("States.Hash", "States.Hash($.a, 'SHA-256')"),
            ("States.Base64Encode", "States.Base64Encode($.a)"),
            ("States.StringSplit", "States.Format('{}', States.StringSplit($.a, ','))"),
        ]
    ],
    pytest.param(
        pass_param("$.a[?(@.b > 1)]"), {}, "'S'", "Parameters.v.$", "filters", id="filter"
    ),
    pytest.param(pass_param("$.a[*]"), {}, "'S'", "Parameters.v.$", "wildcards", id="[*]"),
    pytest.param(pass_param("$.a.*"), {}, "'S'", "Parameters.v.$", "wildcard", id=".*"),
    pytest.param(
        {"S": {**PASS_END, "InputPath": "$..a"}}, {}, "'S'", "InputPath", "deep scan", id="..'"
    ),
    pytest.param(
        {"S": {"Type": "Wait", "SecondsPath": "$.a.length()", "End": True}},
        {},
        "'S'",
        "SecondsPath",
        "function 'length()'",
        id="path function",
    ),
]


@pytest.mark.parametrize(("states", "top", "state", "fld", "says"), UNSUPPORTED)
def test_unsupported_constructs_fail_loudly(states, top, state, fld, says):
    reg = TaskRegistry()
    called = []
    reg.register(ECHO, lambda i, c: called.append(i))
    definition = {"StartAt": next(iter(states)), "States": states, **top}
    with pytest.raises(UnsupportedAslError) as static:
        check_supported(definition)
    with pytest.raises(UnsupportedAslError) as info:
        machine(states, registry=reg, **top)
    message = str(info.value)
    assert message == str(static.value)
    assert f"field '{fld}'" in message
    assert says in message
    if state:
        assert f"state {state}" in message
    assert not called


def test_check_supported_accepts_every_supported_construct():
    """One definition with each supported state type, field and operator kind passes."""
    definition = {
        "Comment": "all of it",
        "StartAt": "Init",
        "TimeoutSeconds": 3600,
        "States": {
            "Init": {
                "Type": "Pass",
                "InputPath": "$",
                "Parameters": {"run.$": "$$.Execution.Name", "items": [{"k.$": "$['a'][0]"}]},
                "ResultPath": "$.init",
                "OutputPath": "$",
                "Next": "Route",
            },
            "Route": {
                "Type": "Choice",
                "Choices": [
                    {
                        "And": [
                            {"Variable": "$.n", "NumericGreaterThanEqualsPath": "$.m"},
                            {"Not": {"Variable": "$.s", "StringMatches": "x*"}},
                            {"Or": [{"Variable": "$.b", "BooleanEquals": True}]},
                            {"Variable": "$.z", "IsNull": False},
                        ],
                        "Next": "Wait",
                    }
                ],
                "Default": "Done",
            },
            "Wait": {"Type": "Wait", "SecondsPath": "$.n", "Next": "Work"},
            "Work": {
                "Type": "Task",
                "Resource": "arn:aws:states:::glue:startJobRun.sync",
                "Parameters": {"Name.$": "States.Format('{}-{}', 'job', $$.Execution.Id)"},
                "ResultSelector": {"id.$": "$.Id"},
                "ResultPath": None,
                "TimeoutSeconds": 60,
                "HeartbeatSeconds": 30,
                "Retry": [
                    {
                        "ErrorEquals": ["States.Timeout"],
                        "IntervalSeconds": 5,
                        "MaxAttempts": 4,
                        "BackoffRate": 2,
                        "MaxDelaySeconds": 300,
                        "JitterStrategy": "FULL",
                    }
                ],
                "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Fail"}],
                "Next": "Notify",
            },
            "Notify": {
                "Type": "Task",
                "Resource": FN_ARN.format("notify"),
                "End": True,
            },
            "Done": {"Type": "Succeed", "Comment": "nothing to do"},
            "Fail": {"Type": "Fail", "Error": "Failed", "Cause": "see history"},
        },
    }
    assert check_supported(definition) is None
    assert check_supported(json.dumps(definition)) is None


@pytest.mark.parametrize(
    ("states", "fragment"),
    [
        ({"S": {"Type": "Pass", "Next": "Nowhere"}}, "unknown state 'Nowhere'"),
        ({"S": {"Type": "Pass"}}, "exactly one of Next or End"),
        ({"S": {"Type": "Wait", "End": True}}, "exactly one of Seconds"),
        ({"S": {**PASS_END, "ResultPath": "$$.Execution.Id"}}, "reference path on $"),
        ({"S": {**PASS_END, "Parameters": {"a": 1, "a.$": "$.a"}}}, "both 'a' and 'a.$'"),
        (
            {
                "S": {
                    "Type": "Task",
                    "Resource": ECHO,
                    "End": True,
                    "Retry": [{"ErrorEquals": ["States.ALL", "X"]}],
                }
            },
            "States.ALL must appear alone",
        ),
        (
            {
                "C": {
                    "Type": "Choice",
                    "Choices": [{"Variable": "$.a", "NumericEquals": "1", "Next": "C"}],
                }
            },
            "needs a num operand",
        ),
    ],
)
def test_invalid_definitions_are_rejected(states, fragment):
    with pytest.raises(InvalidDefinitionError) as info:
        machine(states)
    assert fragment in str(info.value)


def test_missing_task_handlers_are_listed_before_anything_runs():
    reg = TaskRegistry()
    called = []
    reg.register(ECHO, lambda i, c: called.append(i))
    states = {
        "First": {"Type": "Task", "Resource": ECHO, "Next": "Glue"},
        "Glue": {
            "Type": "Task",
            "Resource": "arn:aws:states:::glue:startJobRun.sync",
            "Next": "Fn",
        },
        "Fn": {"Type": "Task", "Resource": FN_ARN.format("register-model"), "End": True},
    }
    m = machine(states, registry=reg)
    with pytest.raises(MissingTaskHandlerError) as info:
        m.execute({})
    assert "glue:startJobRun.sync" in str(info.value)
    assert "'register-model'" in str(info.value)
    assert not called
