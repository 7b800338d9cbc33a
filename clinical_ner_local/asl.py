"""A States Language (JSONPath) interpreter trimmed to what our synthesized state machines use.

Local mode executes the state machine that CDK synthesizes (not a hand-written copy): the
definition is read out of the template (`clinical_ner_local.cfn`), checked here up front
(`check_supported`), and executed with every Task dispatched by its ``Resource`` ARN to a
Python handler registered in a `TaskRegistry`. It implements what the training and extraction
machines use (docs/local-mode.md lists it), with the Step Functions semantics:

* state types Task, Pass, Choice, Wait, Succeed, Fail;
* input/output processing InputPath -> Parameters -> (task) -> ResultSelector -> ResultPath ->
  OutputPath, with ``null`` paths, payload templates (``"key.$"``), the context object
  (``$$.Execution.Id``, ``$$.Execution.Name``, ``$$.State.Name``, ...) and ``States.Format``;
  JSONPath reference paths ``$``/``$$`` followed by ``.name``, ``['name']`` and ``[n]``;
* Task resources: a Lambda function ARN (CDK ``LambdaInvoke`` with ``payload_response_only``)
  or a service integration ``arn:aws:states:::<service>:<action>``, request-response or
  ``.sync``; task ``TimeoutSeconds``/``HeartbeatSeconds`` and the machine's ``TimeoutSeconds``;
* Choice rules: And/Or/Not and the String*, Numeric*, Boolean* comparisons (also their
  ``*Path`` forms), ``StringMatches``, IsPresent/IsNull/IsNumeric/IsString/IsBoolean;
* Wait ``Seconds``/``SecondsPath``, on a pluggable `Clock` so waits, retry back-off and
  timeouts never sleep in tests;
* Retry (ErrorEquals, IntervalSeconds, MaxAttempts, BackoffRate, MaxDelaySeconds,
  JitterStrategy) and Catch (ErrorEquals, ResultPath, Next), with the predefined error names
  (``States.ALL`` does not match ``States.Runtime``/``States.DataLimitExceeded``;
  ``States.TaskFailed`` matches every Task error except ``States.Timeout``);
* the 256 KiB payload limit (``States.DataLimitExceeded``).

Anything else (Parallel and Map states, intrinsics other than ``States.Format``, Timestamp
comparisons and waits, JSONPath wildcards and filters, the ``lambda:invoke`` and
``.waitForTaskToken`` integrations, JSONata, workflow variables, unknown fields) raises
`UnsupportedAslError` naming the state and the field when the definition is checked, before
any task has run: local mode never silently skips a construct the cloud would execute.
"""

from __future__ import annotations

import copy
import json
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

__all__ = [
    "PAYLOAD_LIMIT_BYTES",
    "AslError",
    "Clock",
    "ExecutionResult",
    "FakeClock",
    "HistoryEvent",
    "InvalidDefinitionError",
    "LambdaContext",
    "MissingTaskHandlerError",
    "StateMachine",
    "StatesError",
    "SystemClock",
    "TaskContext",
    "TaskRegistry",
    "UnsupportedAslError",
    "check_supported",
]

PAYLOAD_LIMIT_BYTES = 256 * 1024  # Step Functions: max input/output of a state
DEFAULT_MAX_TRANSITIONS = 10_000  # guard against loops (the service caps history at 25,000)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class AslError(Exception):
    """The definition (or the interpreter's configuration) cannot be executed locally."""

    def __init__(self, message: str, *, state: str | None = None, field: str | None = None) -> None:
        where = []
        if state is not None:
            where.append(f"state {state!r}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.state = state
        self.field = field
        self.detail = message


class InvalidDefinitionError(AslError):
    """The definition breaks the States Language spec (the service would reject it too)."""


class UnsupportedAslError(AslError):
    """A valid States Language construct that this interpreter does not implement."""


class MissingTaskHandlerError(AslError):
    """A Task's resource (or Lambda function) has no handler registered."""


class StatesError(Exception):
    """A runtime error with a Step Functions error name, matched by Retry/Catch ErrorEquals.

    Task handlers raise it (or any exception: its ``error`` attribute, else its class name, is
    the error name, like Lambda's ``errorType``) to make a task fail.
    """

    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(f"{error}: {cause}" if cause else error)
        self.error = error
        self.cause = cause


# Errors no `States.ALL` retrier or catcher handles: they always fail the execution.
_UNCATCHABLE = {"States.Runtime", "States.DataLimitExceeded"}


def _runtime(message: str) -> StatesError:
    return StatesError("States.Runtime", message)


# --------------------------------------------------------------------------------------------
# Clock
# --------------------------------------------------------------------------------------------


class Clock(Protocol):
    """Time source for Wait states, retry intervals and timeouts."""

    def now(self) -> datetime: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Real time (local runs)."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FakeClock:
    """Virtual time: `sleep` advances it instantly and records the requested durations."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2024, 1, 1, tzinfo=UTC)
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self._now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=max(0.0, seconds))


# --------------------------------------------------------------------------------------------
# JSONPath reference paths: $ or $$, then .name, ['name'], [n]
# --------------------------------------------------------------------------------------------

_NAME = re.compile(r"[^.\[\]\s()'\"]+")


@dataclass(frozen=True)
class _Path:
    text: str
    context: bool  # $$ (context object) rather than $ (state data)
    steps: tuple[str | int, ...]  # member name or array index


def _parse_path(text: str, *, state: str | None = None, fld: str | None = None) -> _Path:
    def bad(msg: str) -> UnsupportedAslError:
        return UnsupportedAslError(f"JSONPath {text!r}: {msg}", state=state, field=fld)

    if not isinstance(text, str) or not text.startswith("$"):
        raise InvalidDefinitionError(
            f"{text!r} is not a JSONPath (must start with '$')", state=state, field=fld
        )
    context = text.startswith("$$")
    i = 2 if context else 1
    steps: list[str | int] = []
    n = len(text)
    while i < n:
        c = text[i]
        if text.startswith("..", i):
            raise bad("deep scan '..' is not supported")
        if c == ".":
            if text.startswith(".*", i):
                raise bad("wildcard '.*' is not supported (reference paths only)")
            m = _NAME.match(text, i + 1)
            if not m:
                raise bad(f"expected a member name at offset {i + 1}")
            name = m.group(0)
            if text.startswith("(", m.end()):
                raise bad(f"function '{name}()' is not supported")
            steps.append(name)
            i = m.end()
        elif c == "[":
            end = text.find("]", i)
            if end < 0:
                raise bad("unclosed '['")
            inner = text[i + 1 : end].strip()
            if re.fullmatch(r"-?\d+", inner):
                steps.append(int(inner))
            elif len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "'\"":
                steps.append(inner[1:-1])
            else:
                raise bad(
                    f"subscript [{inner}] (wildcards, filters, slices, unions) is not supported"
                )
            i = end + 1
        else:
            raise bad(f"unexpected {c!r} at offset {i}")
    return _Path(text, context, tuple(steps))


_MISSING = object()


def _select(path: _Path, data: Any, context: Any) -> Any:
    """The value at `path`, `_MISSING` when a step does not exist."""
    node = context if path.context else data
    for step in path.steps:
        if isinstance(step, int):
            if not (isinstance(node, list) and -len(node) <= step < len(node)):
                return _MISSING
        elif not (isinstance(node, dict) and step in node):
            return _MISSING
        node = node[step]
    return node


def _get(path: _Path, data: Any, context: Any, *, what: str) -> Any:
    value = _select(path, data, context)
    if value is _MISSING:
        raise _runtime(f"The JSONPath '{path.text}' specified for {what} could not be found")
    return value


# --------------------------------------------------------------------------------------------
# Intrinsic functions: States.Format only
# --------------------------------------------------------------------------------------------

_LBRACE, _RBRACE = "\ue000", "\ue001"  # escaped braces inside string literals (States.Format)


def _unbrace(s: str) -> str:
    return s.replace(_LBRACE, "{").replace(_RBRACE, "}")


@dataclass(frozen=True)
class _Call:
    name: str
    args: tuple[Any, ...]  # _Lit | _Path | _Call


@dataclass(frozen=True)
class _Lit:
    value: Any


_INTRINSICS: dict[str, tuple[int, int]] = {  # name -> (min args, max args)
    "States.Format": (1, 10_000),
}


class _IntrinsicParser:
    def __init__(self, text: str, state: str | None, fld: str | None) -> None:
        self.text, self.i, self.state, self.fld = text, 0, state, fld

    def fail(self, msg: str, cls: type[AslError] = InvalidDefinitionError) -> AslError:
        return cls(f"intrinsic {self.text!r}: {msg}", state=self.state, field=self.fld)

    def ws(self) -> None:
        while self.i < len(self.text) and self.text[self.i].isspace():
            self.i += 1

    def parse(self) -> _Call:
        call = self.call()
        self.ws()
        if self.i != len(self.text):
            raise self.fail(f"unexpected text at offset {self.i}")
        return call

    def call(self) -> _Call:
        m = re.compile(r"States\.[A-Za-z0-9]+").match(self.text, self.i)
        if not m:
            raise self.fail(f"expected a States.* function at offset {self.i}")
        name = m.group(0)
        if name not in _INTRINSICS:
            raise self.fail(
                f"intrinsic function {name} is not supported (only {', '.join(_INTRINSICS)})",
                UnsupportedAslError,
            )
        self.i = m.end()
        self.ws()
        if not self.text.startswith("(", self.i):
            raise self.fail(f"expected '(' after {name}")
        self.i += 1
        args: list[Any] = []
        self.ws()
        if self.text.startswith(")", self.i):
            self.i += 1
        else:
            while True:
                self.ws()
                args.append(self.arg())
                self.ws()
                if self.text.startswith(",", self.i):
                    self.i += 1
                elif self.text.startswith(")", self.i):
                    self.i += 1
                    break
                else:
                    raise self.fail(f"expected ',' or ')' at offset {self.i}")
        lo, hi = _INTRINSICS[name]
        if not lo <= len(args) <= hi:
            raise self.fail(f"{name} takes {lo}..{hi} arguments, got {len(args)}")
        return _Call(name, tuple(args))

    def arg(self) -> Any:
        t, i = self.text, self.i
        if t.startswith("'", i):
            return _Lit(self.string())
        if t.startswith("States.", i):
            return self.call()
        if t.startswith("$", i):
            j, depth, quote = i, 0, None
            while j < len(t):
                c = t[j]
                if quote:
                    quote = None if c == quote else quote
                elif c in "'\"":
                    quote = c
                elif c == "[":
                    depth += 1
                elif c == "]":
                    depth -= 1
                elif depth == 0 and (c in ",)" or c.isspace()):
                    break
                j += 1
            self.i = j
            return _parse_path(t[i:j], state=self.state, fld=self.fld)
        m = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?|true|false|null").match(t, i)
        if not m:
            raise self.fail(f"cannot parse argument at offset {i}")
        self.i = m.end()
        return _Lit(json.loads(m.group(0)))

    def string(self) -> str:
        t = self.text
        self.i += 1
        out: list[str] = []
        while self.i < len(t):
            c = t[self.i]
            if c == "\\":
                if self.i + 1 >= len(t):
                    break
                nxt = t[self.i + 1]
                out.append({"{": _LBRACE, "}": _RBRACE}.get(nxt, nxt))
                self.i += 2
                continue
            if c == "'":
                self.i += 1
                return "".join(out)
            out.append(c)
            self.i += 1
        raise self.fail("unterminated string literal")


def _parse_intrinsic(text: str, *, state: str | None, fld: str | None) -> _Call:
    return _IntrinsicParser(text, state, fld).parse()


def _ifail(name: str, msg: str) -> StatesError:
    return StatesError("States.IntrinsicFailure", f"{name}: {msg}")


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _is_int(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    return isinstance(v, int) or (isinstance(v, float) and v.is_integer())


def _eval_intrinsic(call: _Call, data: Any, context: Any) -> Any:
    """States.Format (the only name `_IntrinsicParser` accepts)."""

    def value(a: Any, *, raw: bool = False) -> Any:
        if isinstance(a, _Lit):
            return a.value if raw or not isinstance(a.value, str) else _unbrace(a.value)
        if isinstance(a, _Path):
            return _get(a, data, context, what=f"an argument of {call.name}")
        return _eval_intrinsic(a, data, context)

    # The template keeps its escaped braces until the placeholders are filled.
    args = [value(a, raw=k == 0) for k, a in enumerate(call.args)]
    template = args[0]
    if not isinstance(template, str):
        raise _ifail(call.name, "the template must be a string")
    pieces = template.split("{}")
    if len(pieces) - 1 != len(args) - 1:
        raise _ifail(call.name, "placeholder count differs from argument count")
    out = [pieces[0]]
    for arg, piece in zip(args[1:], pieces[1:], strict=True):
        out.append(arg if isinstance(arg, str) else _compact(arg))
        out.append(piece)
    return _unbrace("".join(out))


# --------------------------------------------------------------------------------------------
# Payload templates (Parameters, ResultSelector) and path fields
# --------------------------------------------------------------------------------------------


def _compile_template(tpl: Any, state: str, fld: str) -> Any:
    """Validate a payload template and pre-parse its dynamic values."""
    if isinstance(tpl, dict):
        out: dict[str, Any] = {}
        for key, val in tpl.items():
            if key.endswith(".$"):
                base = key[:-2]
                if base in tpl:
                    raise InvalidDefinitionError(
                        f"both {base!r} and {key!r} are set", state=state, field=fld
                    )
                if not isinstance(val, str):
                    raise InvalidDefinitionError(
                        f"{key!r} must be a path or intrinsic string", state=state, field=fld
                    )
                out[key] = _compile_dynamic(val, state, f"{fld}.{key}")
            else:
                out[key] = _compile_template(val, state, fld)
        return out
    if isinstance(tpl, list):
        return [_compile_template(v, state, fld) for v in tpl]
    return tpl


def _compile_dynamic(text: str, state: str, fld: str) -> _Path | _Call:
    stripped = text.strip()
    if stripped.startswith("States."):
        return _parse_intrinsic(stripped, state=state, fld=fld)
    if stripped.startswith("$"):
        return _parse_path(stripped, state=state, fld=fld)
    raise InvalidDefinitionError(
        f"{text!r} is neither a JSONPath nor an intrinsic function", state=state, field=fld
    )


def _render_template(tpl: Any, data: Any, context: Any) -> Any:
    if isinstance(tpl, dict):
        out: dict[str, Any] = {}
        for key, val in tpl.items():
            if key.endswith(".$"):
                if isinstance(val, _Call):
                    out[key[:-2]] = _eval_intrinsic(val, data, context)
                else:
                    out[key[:-2]] = copy.deepcopy(
                        _get(val, data, context, what=f"the field '{key}'")
                    )
            else:
                out[key] = _render_template(val, data, context)
        return out
    if isinstance(tpl, list):
        return [_render_template(v, data, context) for v in tpl]
    return copy.deepcopy(tpl)


def _apply_result_path(raw_input: Any, result: Any, path: _Path | None, *, present: bool) -> Any:
    """ResultPath: absent -> result replaces input; null -> input kept; else insert result."""
    if not present:
        return result
    if path is None:
        return copy.deepcopy(raw_input)
    if not path.steps:
        return result
    out = copy.deepcopy(raw_input)
    if not isinstance(out, dict):
        raise StatesError(
            "States.ResultPathMatchFailure",
            f"Unable to apply ResultPath '{path.text}' to input that is not an object",
        )
    node = out
    for k, step in enumerate(path.steps):
        last = k == len(path.steps) - 1
        if isinstance(step, int):
            if not isinstance(node, list) or not -len(node) <= step < len(node):
                raise StatesError(
                    "States.ResultPathMatchFailure",
                    f"Unable to apply ResultPath '{path.text}': no array element {step}",
                )
            if last:
                node[step] = result
            else:
                node = node[step]
            continue
        if not isinstance(node, dict):
            raise StatesError(
                "States.ResultPathMatchFailure",
                f"Unable to apply ResultPath '{path.text}': '{step}' is under a non-object",
            )
        if last:
            node[step] = result
        else:
            if step not in node:
                node[step] = {}
            node = node[step]
    return out


# --------------------------------------------------------------------------------------------
# Choice rules
# --------------------------------------------------------------------------------------------

_COMPARATORS = {
    "StringEquals": ("str", "=="),
    "StringLessThan": ("str", "<"),
    "StringGreaterThan": ("str", ">"),
    "StringLessThanEquals": ("str", "<="),
    "StringGreaterThanEquals": ("str", ">="),
    "NumericEquals": ("num", "=="),
    "NumericLessThan": ("num", "<"),
    "NumericGreaterThan": ("num", ">"),
    "NumericLessThanEquals": ("num", "<="),
    "NumericGreaterThanEquals": ("num", ">="),
    "BooleanEquals": ("bool", "=="),
}
_TYPE_TESTS = ("IsNull", "IsPresent", "IsNumeric", "IsString", "IsBoolean")
_OPERATORS = (
    set(_COMPARATORS) | {f"{k}Path" for k in _COMPARATORS} | set(_TYPE_TESTS) | {"StringMatches"}
)


def _coerce(kind: str, v: Any) -> Any:
    """The value as `kind`, or None when it has another type (the comparison is then false)."""
    if kind == "str":
        return v if isinstance(v, str) else None
    if kind == "num":
        return v if isinstance(v, int | float) and not isinstance(v, bool) else None
    return v if isinstance(v, bool) else None


def _compare(op: str, a: Any, b: Any) -> bool:
    if op == "==":
        return a == b
    if op == "<":
        return a < b
    if op == ">":
        return a > b
    if op == "<=":
        return a <= b
    return a >= b


def _string_matches(value: str, pattern: str) -> bool:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "*" else re.escape(c))
        i += 1
    return re.fullmatch("".join(out), value, flags=re.DOTALL) is not None


@dataclass(frozen=True)
class _Rule:
    kind: str  # "and" | "or" | "not" | operator name
    children: tuple[_Rule, ...] = ()
    variable: _Path | None = None
    operand: Any = None  # literal, or _Path for *Path operators
    next: str | None = None


def _compile_rule(rule: Any, state: str, where: str, *, top: bool) -> _Rule:
    if not isinstance(rule, dict):
        raise InvalidDefinitionError("a choice rule must be an object", state=state, field=where)
    keys = set(rule) - {"Comment"}
    nxt = rule.get("Next")
    if top:
        if not isinstance(nxt, str):
            raise InvalidDefinitionError(
                "a top-level choice rule needs Next", state=state, field=where
            )
        keys.discard("Next")
    elif "Next" in rule:
        raise InvalidDefinitionError(
            "Next is only allowed on top-level rules", state=state, field=where
        )
    for jsonata in ("Condition", "Assign", "Output"):
        if jsonata in keys:
            raise UnsupportedAslError(
                f"'{jsonata}' (JSONata / workflow variables) is not supported",
                state=state,
                field=f"{where}.{jsonata}",
            )
    if keys & {"And", "Or"}:
        op = "And" if "And" in keys else "Or"
        if keys != {op}:
            raise InvalidDefinitionError(
                f"{op} cannot be combined with {sorted(keys - {op})}", state=state, field=where
            )
        items = rule[op]
        if not isinstance(items, list) or not items:
            raise InvalidDefinitionError(f"{op} needs a non-empty list", state=state, field=where)
        children = tuple(
            _compile_rule(r, state, f"{where}.{op}[{k}]", top=False) for k, r in enumerate(items)
        )
        return _Rule(op.lower(), children, next=nxt)
    if "Not" in keys:
        if keys != {"Not"}:
            raise InvalidDefinitionError(
                "Not cannot be combined with other fields", state=state, field=where
            )
        child = _compile_rule(rule["Not"], state, f"{where}.Not", top=False)
        return _Rule("not", (child,), next=nxt)
    ops = keys - {"Variable"}
    unknown = ops - _OPERATORS
    if unknown:
        raise UnsupportedAslError(
            f"choice operator(s) {sorted(unknown)} are not supported (Timestamp comparisons "
            "and IsTimestamp are not implemented)",
            state=state,
            field=where,
        )
    if "Variable" not in keys or len(ops) != 1:
        raise InvalidDefinitionError(
            "a choice rule needs Variable and exactly one comparison operator",
            state=state,
            field=where,
        )
    op = ops.pop()
    variable = _parse_path(rule["Variable"], state=state, fld=f"{where}.Variable")
    operand = rule[op]
    fld = f"{where}.{op}"
    if op.endswith("Path"):
        operand = _parse_path(operand, state=state, fld=fld)
    elif op in _TYPE_TESTS:
        if not isinstance(operand, bool):
            raise InvalidDefinitionError(f"{op} takes true or false", state=state, field=fld)
    elif op == "StringMatches":
        if not isinstance(operand, str):
            raise InvalidDefinitionError("StringMatches takes a string", state=state, field=fld)
    else:
        kind = _COMPARATORS[op][0]
        if _coerce(kind, operand) is None:
            raise InvalidDefinitionError(
                f"{op} needs a {kind} operand, got {operand!r}", state=state, field=fld
            )
    return _Rule(op, variable=variable, operand=operand, next=nxt)


def _eval_rule(rule: _Rule, data: Any, context: Any) -> bool:
    if rule.kind == "and":
        return all(_eval_rule(r, data, context) for r in rule.children)
    if rule.kind == "or":
        return any(_eval_rule(r, data, context) for r in rule.children)
    if rule.kind == "not":
        return not _eval_rule(rule.children[0], data, context)
    op = rule.kind
    assert rule.variable is not None
    value = _select(rule.variable, data, context)
    if op == "IsPresent":
        return (value is not _MISSING) == rule.operand
    if value is _MISSING:
        raise _runtime(
            f"Invalid path '{rule.variable.text}': the choice state's condition path "
            "references an invalid value"
        )
    if op in _TYPE_TESTS:
        actual = {
            "IsNull": value is None,
            "IsNumeric": _coerce("num", value) is not None,
            "IsString": isinstance(value, str),
            "IsBoolean": isinstance(value, bool),
        }[op]
        return actual == rule.operand
    if op == "StringMatches":
        return isinstance(value, str) and _string_matches(value, rule.operand)
    base = op[:-4] if op.endswith("Path") else op
    kind, cmp = _COMPARATORS[base]
    operand = rule.operand
    if isinstance(operand, _Path):
        operand = _get(operand, data, context, what=f"the choice operator '{op}'")
    a, b = _coerce(kind, value), _coerce(kind, operand)
    if a is None or b is None:
        return False
    return _compare(cmp, a, b)


# --------------------------------------------------------------------------------------------
# Definition model and validation
# --------------------------------------------------------------------------------------------

_COMMON = {"Type", "Comment", "QueryLanguage"}
_FLOW = {"Next", "End"}
_IO = {"InputPath", "OutputPath"}
_FIELDS: dict[str, set[str]] = {
    "Task": _COMMON
    | _FLOW
    | _IO
    | {
        "Resource",
        "Parameters",
        "ResultSelector",
        "ResultPath",
        "Retry",
        "Catch",
        "TimeoutSeconds",
        "HeartbeatSeconds",
    },
    "Pass": _COMMON | _FLOW | _IO | {"Result", "ResultPath", "Parameters"},
    "Wait": _COMMON | _FLOW | _IO | {"Seconds", "SecondsPath"},
    "Choice": _COMMON | _IO | {"Choices", "Default"},
    "Succeed": _COMMON | _IO,
    "Fail": _COMMON | {"Error", "Cause"},
}
# Valid ASL that this interpreter does not implement, with the reason given in the error.
_UNSUPPORTED_FIELDS = {
    "Arguments": "JSONata 'Arguments' is not supported (JSONPath definitions only)",
    "Output": "JSONata 'Output' is not supported (JSONPath definitions only)",
    "Assign": "workflow variables ('Assign') are not supported",
    "Credentials": "cross-account task 'Credentials' are not supported",
    "TimeoutSecondsPath": "a task timeout from the input is not supported (TimeoutSeconds only)",
    "HeartbeatSecondsPath": "a heartbeat from the input is not supported (HeartbeatSeconds only)",
    "ErrorPath": "a Fail state's ErrorPath is not supported (a static Error only)",
    "CausePath": "a Fail state's CausePath is not supported (a static Cause only)",
    "Timestamp": "waiting until a timestamp is not supported (Seconds or SecondsPath only)",
    "TimestampPath": "waiting until a timestamp is not supported (Seconds or SecondsPath only)",
}
_TOP_FIELDS = {"StartAt", "States", "Comment", "Version", "TimeoutSeconds", "QueryLanguage"}

_LAMBDA_ARN = re.compile(r"^arn:[\w-]+:lambda:[\w-]*:\d*:function:([\w-]+)(?::[\w$-]+)?$")
_LAMBDA_INVOKE = re.compile(r"^arn:[\w-]+:states:::lambda:invoke")
# Request-response or .sync (run a job) service integrations; not .waitForTaskToken, .sync:2.
_SERVICE_INTEGRATION = re.compile(r"^arn:[\w-]+:states:::[\w-]+:\w+(\.sync)?$")


@dataclass(frozen=True)
class _Retrier:
    errors: tuple[str, ...]
    interval: float
    max_attempts: int
    backoff: float
    max_delay: float | None
    jitter: bool


@dataclass(frozen=True)
class _Catcher:
    errors: tuple[str, ...]
    next: str
    result_path: _Path | None
    has_result_path: bool


@dataclass
class _State:
    name: str
    type: str
    raw: dict[str, Any]
    next: str | None = None
    end: bool = False
    input_path: _Path | None = None
    output_path: _Path | None = None
    has_input_path: bool = False
    has_output_path: bool = False
    parameters: Any = None
    has_parameters: bool = False
    result_selector: Any = None
    has_result_selector: bool = False
    result_path: _Path | None = None
    has_result_path: bool = False
    retry: tuple[_Retrier, ...] = ()
    catch: tuple[_Catcher, ...] = ()
    choices: tuple[_Rule, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # type-specific compiled values


@dataclass
class _Machine:
    start_at: str
    states: dict[str, _State]
    timeout: float | None = None


def _check_error_names(errors: Any, state: str, fld: str) -> tuple[str, ...]:
    if not isinstance(errors, list) or not errors or not all(isinstance(e, str) for e in errors):
        raise InvalidDefinitionError(
            "ErrorEquals must be a non-empty list of strings", state=state, field=fld
        )
    if "States.ALL" in errors and len(errors) != 1:
        raise InvalidDefinitionError(
            "States.ALL must appear alone in ErrorEquals", state=state, field=fld
        )
    return tuple(errors)


def _number(
    raw: Mapping[str, Any], key: str, state: str, *, integer: bool = False, minimum: float = 0
) -> float | None:
    if key not in raw:
        return None
    v = raw[key]
    ok = isinstance(v, int | float) and not isinstance(v, bool) and v >= minimum
    if integer:
        ok = ok and _is_int(v)
    if not ok:
        kind = "an integer" if integer else "a number"
        raise InvalidDefinitionError(f"must be {kind} >= {minimum}", state=state, field=key)
    return v


def _load(definition: Mapping[str, Any] | str) -> dict[str, Any]:
    if isinstance(definition, str):
        try:
            definition = json.loads(definition)
        except json.JSONDecodeError as exc:
            raise InvalidDefinitionError(f"definition is not JSON: {exc}") from None
    if not isinstance(definition, Mapping):
        raise InvalidDefinitionError("a state machine definition must be an object")
    return copy.deepcopy(dict(definition))


def check_supported(definition: Mapping[str, Any] | str) -> None:
    """Raise `UnsupportedAslError` (or `InvalidDefinitionError`) for anything not runnable here.

    Walks every state, field, path, intrinsic, choice rule, retrier, catcher and Task resource
    of `definition` (a dict or its JSON text); `StateMachine` runs the same check when built.
    """
    _compile_machine(_load(definition))


def _compile_machine(defn: dict[str, Any]) -> _Machine:
    if defn.get("QueryLanguage", "JSONPath") != "JSONPath":
        raise UnsupportedAslError(
            f"QueryLanguage {defn['QueryLanguage']!r} is not supported (JSONPath definitions only)",
            field="QueryLanguage",
        )
    unknown = set(defn) - _TOP_FIELDS
    if unknown:
        raise UnsupportedAslError(f"unknown top-level field(s) {sorted(unknown)}")
    states_raw = defn.get("States")
    start = defn.get("StartAt")
    if not isinstance(states_raw, dict) or not states_raw:
        raise InvalidDefinitionError("'States' must be a non-empty object")
    if start not in states_raw:
        raise InvalidDefinitionError(f"StartAt {start!r} is not a state")
    timeout = _number(defn, "TimeoutSeconds", "<top level>", integer=True, minimum=1)
    states = {name: _compile_state(name, raw) for name, raw in states_raw.items()}
    for st in states.values():
        targets = [("Next", st.next), ("Default", st.extra.get("default"))]
        targets += [(f"Choices[{k}].Next", r.next) for k, r in enumerate(st.choices)]
        targets += [(f"Catch[{k}].Next", c.next) for k, c in enumerate(st.catch)]
        for fld, target in targets:
            if target is not None and target not in states:
                raise InvalidDefinitionError(
                    f"transition to unknown state {target!r}", state=st.name, field=fld
                )
    return _Machine(start, states, timeout)


def _compile_state(name: str, raw: Any) -> _State:
    if not isinstance(raw, dict):
        raise InvalidDefinitionError("a state must be an object", state=name)
    stype = raw.get("Type")
    if stype not in _FIELDS:
        raise UnsupportedAslError(
            f"state type {stype!r} is not supported (only {', '.join(sorted(_FIELDS))})",
            state=name,
            field="Type",
        )
    if raw.get("QueryLanguage", "JSONPath") != "JSONPath":
        raise UnsupportedAslError(
            f"QueryLanguage {raw['QueryLanguage']!r} is not supported (JSONPath only)",
            state=name,
            field="QueryLanguage",
        )
    for key in raw:
        if key in _FIELDS[stype]:
            continue
        if key in _UNSUPPORTED_FIELDS:
            raise UnsupportedAslError(_UNSUPPORTED_FIELDS[key], state=name, field=key)
        raise UnsupportedAslError(
            f"field is not supported on a {stype} state", state=name, field=key
        )
    st = _State(name, stype, raw)
    if stype in ("Task", "Pass", "Wait"):
        has_next, has_end = "Next" in raw, raw.get("End") is True
        if has_next == has_end:
            raise InvalidDefinitionError("needs exactly one of Next or End: true", state=name)
        st.next, st.end = raw.get("Next"), has_end
    for key in ("InputPath", "OutputPath", "ResultPath"):
        if key in raw:
            setattr(st, "has_" + _snake(key), True)
            if raw[key] is not None:
                path = _parse_path(raw[key], state=name, fld=key)
                if key == "ResultPath" and path.context:
                    raise InvalidDefinitionError(
                        "ResultPath must be a reference path on $", state=name, field=key
                    )
                setattr(st, _snake(key), path)
    for key in ("Parameters", "ResultSelector"):
        if key in raw:
            if key == "ResultSelector" and not isinstance(raw[key], dict):
                raise InvalidDefinitionError("must be an object", state=name, field=key)
            setattr(st, "has_" + _snake(key), True)
            setattr(st, _snake(key), _compile_template(raw[key], name, key))
    st.retry = tuple(_compile_retry(name, raw.get("Retry", [])))
    st.catch = tuple(_compile_catch(name, raw.get("Catch", [])))
    getattr(_Compilers, stype)(st, raw)
    return st


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()


def _compile_retry(name: str, items: Any) -> Iterator[_Retrier]:
    if not isinstance(items, list):
        raise InvalidDefinitionError("must be a list", state=name, field="Retry")
    allowed = {
        "ErrorEquals",
        "IntervalSeconds",
        "MaxAttempts",
        "BackoffRate",
        "MaxDelaySeconds",
        "JitterStrategy",
        "Comment",
    }
    for k, r in enumerate(items):
        fld = f"Retry[{k}]"
        if not isinstance(r, dict):
            raise InvalidDefinitionError("a retrier must be an object", state=name, field=fld)
        unknown = set(r) - allowed
        if unknown:
            raise UnsupportedAslError(
                f"unknown retrier field(s) {sorted(unknown)}", state=name, field=fld
            )
        errors = _check_error_names(r.get("ErrorEquals"), name, f"{fld}.ErrorEquals")
        if "States.ALL" in errors and k != len(items) - 1:
            raise InvalidDefinitionError(
                "a States.ALL retrier must be the last", state=name, field=fld
            )
        jitter = r.get("JitterStrategy", "NONE")
        if jitter not in ("NONE", "FULL"):
            raise InvalidDefinitionError(
                "JitterStrategy must be FULL or NONE", state=name, field=f"{fld}.JitterStrategy"
            )
        interval = _number(r, "IntervalSeconds", name, integer=True, minimum=1)
        attempts = _number(r, "MaxAttempts", name, integer=True, minimum=0)
        backoff = _number(r, "BackoffRate", name, minimum=1)
        max_delay = _number(r, "MaxDelaySeconds", name, integer=True, minimum=1)
        yield _Retrier(
            errors,
            float(1 if interval is None else interval),
            int(3 if attempts is None else attempts),
            float(2.0 if backoff is None else backoff),
            None if max_delay is None else float(max_delay),
            jitter == "FULL",
        )


def _compile_catch(name: str, items: Any) -> Iterator[_Catcher]:
    if not isinstance(items, list):
        raise InvalidDefinitionError("must be a list", state=name, field="Catch")
    for k, c in enumerate(items):
        fld = f"Catch[{k}]"
        if not isinstance(c, dict):
            raise InvalidDefinitionError("a catcher must be an object", state=name, field=fld)
        unknown = set(c) - {"ErrorEquals", "Next", "ResultPath", "Comment"}
        if unknown:
            reason = (
                "JSONata / workflow variables are not supported"
                if unknown & {"Assign", "Output"}
                else "unknown catcher field(s)"
            )
            raise UnsupportedAslError(f"{reason}: {sorted(unknown)}", state=name, field=fld)
        errors = _check_error_names(c.get("ErrorEquals"), name, f"{fld}.ErrorEquals")
        if "States.ALL" in errors and k != len(items) - 1:
            raise InvalidDefinitionError(
                "a States.ALL catcher must be the last", state=name, field=fld
            )
        if not isinstance(c.get("Next"), str):
            raise InvalidDefinitionError("a catcher needs Next", state=name, field=fld)
        path = None
        if c.get("ResultPath") is not None:
            path = _parse_path(c["ResultPath"], state=name, fld=f"{fld}.ResultPath")
            if path.context:
                raise InvalidDefinitionError(
                    "ResultPath must be a reference path on $",
                    state=name,
                    field=f"{fld}.ResultPath",
                )
        yield _Catcher(errors, c["Next"], path, "ResultPath" in c)


class _Compilers:
    """Type-specific checks; each stores compiled values in `_State.extra`."""

    @staticmethod
    def Task(st: _State, raw: dict[str, Any]) -> None:
        res = raw.get("Resource")
        if not isinstance(res, str) or not res.startswith("arn:"):
            raise InvalidDefinitionError(
                "Resource must be an ARN string", state=st.name, field="Resource"
            )
        if res.endswith(".waitForTaskToken"):
            raise UnsupportedAslError(
                "the callback integration pattern (.waitForTaskToken) is not supported",
                state=st.name,
                field="Resource",
            )
        if _LAMBDA_INVOKE.match(res):
            raise UnsupportedAslError(
                "the lambda:invoke integration is not supported: call the function ARN "
                "(LambdaInvoke payload_response_only=True, as step_functions/base.py does)",
                state=st.name,
                field="Resource",
            )
        if not (_LAMBDA_ARN.match(res) or _SERVICE_INTEGRATION.match(res)):
            raise UnsupportedAslError(
                f"Resource {res!r} is not supported (a Lambda function ARN, or an "
                "arn:aws:states:::<service>:<action> integration, request-response or .sync)",
                state=st.name,
                field="Resource",
            )
        for key in ("TimeoutSeconds", "HeartbeatSeconds"):
            st.extra[key] = _number(raw, key, st.name, integer=True, minimum=1)

    @staticmethod
    def Pass(st: _State, raw: dict[str, Any]) -> None:
        pass

    @staticmethod
    def Wait(st: _State, raw: dict[str, Any]) -> None:
        keys = [k for k in ("Seconds", "SecondsPath") if k in raw]
        if len(keys) != 1:
            raise InvalidDefinitionError("needs exactly one of Seconds, SecondsPath", state=st.name)
        if keys[0] == "Seconds":
            st.extra["seconds"] = _number(raw, "Seconds", st.name, integer=True)
        else:
            st.extra["SecondsPath"] = _parse_path(
                raw["SecondsPath"], state=st.name, fld="SecondsPath"
            )

    @staticmethod
    def Choice(st: _State, raw: dict[str, Any]) -> None:
        choices = raw.get("Choices")
        if not isinstance(choices, list) or not choices:
            raise InvalidDefinitionError(
                "Choices must be a non-empty list", state=st.name, field="Choices"
            )
        st.choices = tuple(
            _compile_rule(r, st.name, f"Choices[{k}]", top=True) for k, r in enumerate(choices)
        )
        st.extra["default"] = raw.get("Default")

    @staticmethod
    def Succeed(st: _State, raw: dict[str, Any]) -> None:
        pass

    @staticmethod
    def Fail(st: _State, raw: dict[str, Any]) -> None:
        pass


# --------------------------------------------------------------------------------------------
# Task dispatch
# --------------------------------------------------------------------------------------------


@dataclass
class TaskContext:
    """What a task handler gets besides its input."""

    state_name: str
    resource: str
    context: dict[str, Any]  # the context object ($$): Execution, State, StateMachine
    clock: Clock
    execution: _Execution

    def heartbeat(self) -> None:
        """SendTaskHeartbeat: restarts the HeartbeatSeconds window."""
        self.execution.last_heartbeat = self.clock.now()

    def record(self, message: str, **details: Any) -> None:
        """Add a free-form event (progress of a long step) to the execution history."""
        self.execution.emit("TaskProgress", self.state_name, message=message, **details)


TaskHandler = Callable[[Any, TaskContext], Any]


@dataclass
class LambdaContext:
    """The part of the Lambda context object handlers use."""

    function_name: str
    aws_request_id: str
    invoked_function_arn: str
    memory_limit_in_mb: int = 1024
    deadline: float = field(default_factory=lambda: time.monotonic() + 900)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


LambdaHandler = Callable[[Any, LambdaContext], Any]


def _function_name(ref: str) -> str:
    """Lambda FunctionName as a name, a full ARN (with or without qualifier) or partial ARN."""
    m = _LAMBDA_ARN.match(ref)
    if m:
        return m.group(1)
    parts = ref.split(":")
    if len(parts) >= 3 and parts[-2] == "function":  # 123456789012:function:name
        return parts[-1]
    if len(parts) >= 3 and parts[-3] == "function":  # ...:function:name:qualifier
        return parts[-2]
    return ref.split(":")[0]


class TaskRegistry:
    """Maps Task ``Resource`` ARNs and Lambda functions to code.

    * `register(resource, handler)`: ``handler(effective_input, TaskContext) -> result``; the
      result must have the service integration's shape (e.g. a ``.sync`` Glue task returns the
      ``GetJobRun`` ``JobRun`` object).
    * `register_lambda(name, handler)`: a Lambda handler ``handler(event, LambdaContext)``,
      reached through a Lambda function ARN Resource (the result is the return value). An
      exception the handler raises fails the task with the exception's class name as error,
      and a cause in Lambda's ``{"errorMessage", "errorType"}`` JSON shape, as on AWS.
    """

    def __init__(self) -> None:
        self._services: dict[str, TaskHandler] = {}
        self._lambdas: dict[str, LambdaHandler] = {}
        self.calls: list[tuple[str, Any]] = []  # (resource or function name, input) in order

    def register(self, resource: str, handler: TaskHandler) -> None:
        self._services[resource] = handler

    def register_lambda(self, function: str, handler: LambdaHandler) -> None:
        self._lambdas[_function_name(function)] = handler

    def has_lambda(self, function: str) -> bool:
        return _function_name(function) in self._lambdas

    def resolve(self, resource: str) -> TaskHandler | None:
        if resource in self._services:
            return self._services[resource]
        m = _LAMBDA_ARN.match(resource)
        if m and m.group(1) in self._lambdas:
            return self._call_lambda_arn
        return None

    def _call_lambda_arn(self, event: Any, ctx: TaskContext) -> Any:
        name = _function_name(ctx.resource)
        handler = self._lambdas[name]
        self.calls.append((name, copy.deepcopy(event)))
        lambda_ctx = LambdaContext(name, str(uuid.uuid4()), ctx.resource)
        try:
            return handler(event, lambda_ctx)
        except StatesError:
            raise
        except Exception as exc:
            error = getattr(exc, "error", None) or type(exc).__name__
            cause = _compact({"errorMessage": str(exc), "errorType": error})
            raise StatesError(error, cause) from exc

    def call(self, resource: str, task_input: Any, ctx: TaskContext) -> Any:
        handler = self.resolve(resource)
        if handler is None:
            raise MissingTaskHandlerError(
                f"no handler registered for resource {resource!r}",
                state=ctx.state_name,
                field="Resource",
            )
        if handler != self._call_lambda_arn:
            self.calls.append((resource, copy.deepcopy(task_input)))
        return handler(task_input, ctx)


# --------------------------------------------------------------------------------------------
# Execution
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryEvent:
    """One entry of the execution history."""

    type: str  # ExecutionStarted, StateEntered, StateExited, TaskScheduled, TaskSucceeded,
    # TaskFailed, TaskRetryScheduled, TaskProgress, CatchTaken, ExecutionSucceeded/Failed/TimedOut
    state: str | None
    timestamp: datetime  # on the execution's clock
    elapsed_wall_seconds: float  # real time since the execution started
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExecutionResult:
    execution_arn: str
    name: str
    status: str  # SUCCEEDED | FAILED | TIMED_OUT
    input: Any
    output: Any
    error: str | None
    cause: str | None
    start: datetime
    stop: datetime
    history: list[HistoryEvent]

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"

    def states_entered(self) -> list[str]:
        """State names in the order they were entered."""
        return [e.state for e in self.history if e.type == "StateEntered" and e.state]

    def state_durations(self) -> list[dict[str, Any]]:
        """One row per state visit: name, clock and wall-clock seconds, outcome."""
        rows: list[dict[str, Any]] = []
        open_: dict[str, list[HistoryEvent]] = {}
        for e in self.history:
            if e.type == "StateEntered" and e.state:
                open_.setdefault(e.state, []).append(e)
            elif e.type in ("StateExited", "StateFailed") and e.state and open_.get(e.state):
                start = open_[e.state].pop()
                rows.append(
                    {
                        "state": e.state,
                        "seconds": (e.timestamp - start.timestamp).total_seconds(),
                        "wall_seconds": e.elapsed_wall_seconds - start.elapsed_wall_seconds,
                        "outcome": "succeeded" if e.type == "StateExited" else "failed",
                        "error": e.details.get("error"),
                    }
                )
        return rows


class _Execution:
    def __init__(
        self,
        machine: StateMachine,
        name: str,
        execution_input: Any,
        on_event: Callable[[HistoryEvent], None] | None,
    ) -> None:
        self.machine = machine
        self.clock = machine.clock
        self.name = name
        self.arn = f"{machine.arn.replace(':stateMachine:', ':execution:')}:{name}"
        self.start = self.clock.now()
        self.wall0 = time.perf_counter()
        self.history: list[HistoryEvent] = []
        self.on_event = on_event
        self.transitions = 0
        self.last_heartbeat: datetime | None = None
        self.context_base = {
            "Execution": {
                "Id": self.arn,
                "Input": copy.deepcopy(execution_input),
                "Name": name,
                "RoleArn": machine.role_arn,
                "StartTime": _iso(self.start),
                "RedriveCount": 0,
            },
            "StateMachine": {"Id": machine.arn, "Name": machine.name},
        }

    def emit(self, type_: str, state: str | None, **details: Any) -> None:
        event = HistoryEvent(
            type_, state, self.clock.now(), time.perf_counter() - self.wall0, details
        )
        self.history.append(event)
        if self.on_event is not None:
            self.on_event(event)

    def check_deadline(self) -> None:
        timeout = self.machine._machine.timeout
        if timeout is not None and (self.clock.now() - self.start).total_seconds() > timeout:
            raise _ExecutionTimedOut()


class _ExecutionTimedOut(Exception):
    pass


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error_matches(names: tuple[str, ...], error: str) -> bool:
    """ErrorEquals semantics of the predefined error names on a Task ("Error handling")."""
    if error in names:
        return True
    if error in _UNCATCHABLE:
        return False
    if "States.ALL" in names:
        return True
    timeout = error in ("States.Timeout", "States.HeartbeatTimeout")
    if timeout and "States.Timeout" in names:  # a missed heartbeat is a kind of timeout
        return True
    return "States.TaskFailed" in names and not timeout


def _check_size(value: Any, what: str) -> None:
    size = len(_compact(value).encode())
    if size > PAYLOAD_LIMIT_BYTES:
        raise StatesError(
            "States.DataLimitExceeded",
            f"{what} is {size} bytes, over the {PAYLOAD_LIMIT_BYTES}-byte payload limit",
        )


def _jsonable(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise StatesError("States.Runtime", f"{what} is not JSON: {exc}") from None


class StateMachine:
    """A checked, executable state machine.

    Building it runs `check_supported` on the definition (states, fields, transitions, paths,
    intrinsic functions, choice rules, resources) and raises `InvalidDefinitionError`/
    `UnsupportedAslError`; `execute` runs one execution to its end and returns an
    `ExecutionResult` (it does not raise for a failed execution, only for interpreter misuse
    such as a missing task handler).
    """

    def __init__(
        self,
        definition: Mapping[str, Any] | str,
        tasks: TaskRegistry,
        *,
        clock: Clock | None = None,
        name: str = "StateMachine",
        arn: str | None = None,
        role_arn: str = "arn:aws:iam::123456789012:role/local-state-machine",
        max_transitions: int = DEFAULT_MAX_TRANSITIONS,
        seed: int | None = None,
    ) -> None:
        self.definition = _load(definition)
        self._machine = _compile_machine(self.definition)
        self.tasks = tasks
        self.clock: Clock = clock or SystemClock()
        self.name = name
        self.arn = arn or f"arn:aws:states:us-east-1:123456789012:stateMachine:{name}"
        self.role_arn = role_arn
        self.max_transitions = max_transitions
        self._rng = random.Random(seed)

    # -- static checks -----------------------------------------------------------------------

    def task_resources(self) -> list[tuple[str, str]]:
        """(state name, Resource) of every Task."""
        return [
            (st.name, st.raw["Resource"])
            for st in self._machine.states.values()
            if st.type == "Task"
        ]

    def check_handlers(self) -> None:
        """Raise `MissingTaskHandlerError` listing every Task nothing is registered for."""
        missing = []
        for name, resource in self.task_resources():
            if self.tasks.resolve(resource) is None:
                m = _LAMBDA_ARN.match(resource)
                missing.append(
                    f"{name}: Lambda function {m.group(1)!r}" if m else f"{name}: {resource}"
                )
        if missing:
            raise MissingTaskHandlerError("no task handler for: " + "; ".join(missing))

    # -- execution ---------------------------------------------------------------------------

    def execute(
        self,
        execution_input: Any = None,
        *,
        name: str | None = None,
        on_event: Callable[[HistoryEvent], None] | None = None,
    ) -> ExecutionResult:
        self.check_handlers()
        execution_input = _jsonable({} if execution_input is None else execution_input, "input")
        ex = _Execution(
            self, name or str(uuid.UUID(int=self._rng.getrandbits(128))), execution_input, on_event
        )
        ex.emit("ExecutionStarted", None, input=execution_input)
        status, output, error, cause = "SUCCEEDED", None, None, None
        try:
            output = self._run(execution_input, ex)
        except _ExecutionTimedOut:
            status, error = "TIMED_OUT", "States.Timeout"
            cause = f"execution exceeded TimeoutSeconds={self._machine.timeout}"
        except StatesError as exc:
            status, error, cause = "FAILED", exc.error, exc.cause
        ex.emit(
            f"Execution{status.title().replace('_', '')}",
            None,
            output=output,
            error=error,
            cause=cause,
        )
        return ExecutionResult(
            ex.arn,
            ex.name,
            status,
            execution_input,
            output,
            error,
            cause,
            ex.start,
            self.clock.now(),
            ex.history,
        )

    def _run(self, data: Any, ex: _Execution) -> Any:
        m = self._machine
        name = m.start_at
        while True:
            ex.transitions += 1
            if ex.transitions > self.max_transitions:
                raise AslError(f"more than {self.max_transitions} state transitions: a loop?")
            ex.check_deadline()
            st = m.states[name]
            entered = ex.clock.now()
            ctx = {
                **copy.deepcopy(ex.context_base),
                "State": {"Name": name, "EnteredTime": _iso(entered), "RetryCount": 0},
            }
            ex.emit("StateEntered", name, input=data)
            try:
                _check_size(data, f"the input of state '{name}'")
                output, nxt = self._run_state(st, data, ex, ctx)
                _check_size(output, f"the output of state '{name}'")
            except StatesError as err:
                ex.emit("StateFailed", name, error=err.error, cause=err.cause)
                catcher = next((c for c in st.catch if _error_matches(c.errors, err.error)), None)
                if catcher is None:
                    raise
                error_output = {"Error": err.error, "Cause": err.cause}
                data = _apply_result_path(
                    data, error_output, catcher.result_path, present=catcher.has_result_path
                )
                ex.emit("CatchTaken", name, error=err.error, next=catcher.next)
                name = catcher.next
                continue
            ex.emit("StateExited", name, output=output)
            if nxt is None:
                return output
            data, name = output, nxt

    def _with_retry(
        self, st: _State, ex: _Execution, ctx: dict[str, Any], attempt: Callable[[], Any]
    ) -> Any:
        counts = [0] * len(st.retry)
        while True:
            try:
                return attempt()
            except StatesError as err:
                idx = next(
                    (k for k, r in enumerate(st.retry) if _error_matches(r.errors, err.error)),
                    None,
                )
                if idx is None:
                    raise
                r = st.retry[idx]
                if counts[idx] >= r.max_attempts:
                    raise
                delay = r.interval * (r.backoff ** counts[idx])
                if r.max_delay is not None:
                    delay = min(delay, r.max_delay)
                if r.jitter:
                    delay = self._rng.uniform(0, delay)
                counts[idx] += 1
                ctx["State"]["RetryCount"] = sum(counts)
                ex.emit(
                    "TaskRetryScheduled",
                    st.name,
                    error=err.error,
                    attempt=counts[idx],
                    delay_seconds=delay,
                )
                ex.clock.sleep(delay)
                ex.check_deadline()

    def _input(self, st: _State, raw: Any, ctx: dict[str, Any]) -> Any:
        if not st.has_input_path:
            return copy.deepcopy(raw)
        if st.input_path is None:
            return {}
        return copy.deepcopy(_get(st.input_path, raw, ctx, what="InputPath"))

    def _output(self, st: _State, value: Any, ctx: dict[str, Any]) -> Any:
        if not st.has_output_path:
            return value
        if st.output_path is None:
            return {}
        return copy.deepcopy(_get(st.output_path, value, ctx, what="OutputPath"))

    def _run_state(
        self, st: _State, raw: Any, ex: _Execution, ctx: dict[str, Any]
    ) -> tuple[Any, str | None]:
        nxt = None if st.end else st.next
        t = st.type
        if t == "Pass":
            eff = self._input(st, raw, ctx)
            if st.has_parameters:
                eff = _render_template(st.parameters, eff, ctx)
            result = copy.deepcopy(st.raw["Result"]) if "Result" in st.raw else eff
            out = _apply_result_path(raw, result, st.result_path, present=st.has_result_path)
            return self._output(st, out, ctx), nxt
        if t == "Succeed":
            return self._output(st, self._input(st, raw, ctx), ctx), None
        if t == "Fail":
            raise StatesError(st.raw.get("Error", "States.Fail"), st.raw.get("Cause", ""))
        if t == "Choice":
            eff = self._input(st, raw, ctx)
            for rule in st.choices:
                if _eval_rule(rule, eff, ctx):
                    return self._output(st, eff, ctx), rule.next
            default = st.extra.get("default")
            if default is None:
                raise StatesError(
                    "States.NoChoiceMatched",
                    f"no choice rule matched in state '{st.name}' and no Default",
                )
            return self._output(st, eff, ctx), default
        if t == "Wait":
            eff = self._input(st, raw, ctx)
            self._wait(st, eff, ctx, ex)
            return self._output(st, eff, ctx), nxt
        if t == "Task":
            return self._with_retry(st, ex, ctx, lambda: self._task(st, raw, ex, ctx)), nxt
        raise UnsupportedAslError(f"state type {t!r} is not supported", state=st.name)

    def _wait(self, st: _State, eff: Any, ctx: dict[str, Any], ex: _Execution) -> None:
        if "seconds" in st.extra:
            seconds = float(st.extra["seconds"])
        else:
            v = _get(st.extra["SecondsPath"], eff, ctx, what="SecondsPath")
            if not _is_int(v) or v < 0:
                raise _runtime(f"SecondsPath of state '{st.name}' is not a non-negative integer")
            seconds = float(v)
        timeout = self._machine.timeout
        if timeout is not None:
            left = timeout - (ex.clock.now() - ex.start).total_seconds()
            if seconds > left:
                ex.clock.sleep(max(0.0, left) + 1e-3)
                raise _ExecutionTimedOut()
        ex.clock.sleep(max(0.0, seconds))

    def _task(self, st: _State, raw: Any, ex: _Execution, ctx: dict[str, Any]) -> Any:
        resource = st.raw["Resource"]
        eff_in = self._input(st, raw, ctx)
        task_ctx = copy.deepcopy(ctx)
        eff = eff_in
        if st.has_parameters:
            eff = _render_template(st.parameters, eff_in, task_ctx)
        _check_size(eff, f"the task input of state '{st.name}'")
        ex.emit("TaskScheduled", st.name, resource=resource, parameters=eff)
        started = ex.clock.now()
        ex.last_heartbeat = started
        handle = TaskContext(st.name, resource, task_ctx, ex.clock, ex)
        try:
            result = self.tasks.call(resource, eff, handle)
        except StatesError as err:
            ex.emit("TaskFailed", st.name, error=err.error, cause=err.cause)
            raise
        except AslError:
            raise
        except Exception as exc:  # a handler bug or a task failure it did not name
            error = getattr(exc, "error", None) or type(exc).__name__
            ex.emit("TaskFailed", st.name, error=error, cause=str(exc))
            raise StatesError(error, str(exc)) from exc
        now = ex.clock.now()
        timeout, heartbeat = st.extra["TimeoutSeconds"], st.extra["HeartbeatSeconds"]
        if timeout is not None and (now - started).total_seconds() > timeout:
            ex.emit("TaskFailed", st.name, error="States.Timeout")
            raise StatesError("States.Timeout", f"task exceeded TimeoutSeconds={timeout}")
        if heartbeat is not None and (now - ex.last_heartbeat).total_seconds() > heartbeat:
            ex.emit("TaskFailed", st.name, error="States.HeartbeatTimeout")
            raise StatesError(
                "States.HeartbeatTimeout", f"no heartbeat within HeartbeatSeconds={heartbeat}"
            )
        result = _jsonable(result, f"the result of task state '{st.name}'")
        _check_size(result, f"the result of task state '{st.name}'")
        ex.emit("TaskSucceeded", st.name, output=result, seconds=(now - started).total_seconds())
        ex.check_deadline()
        if st.has_result_selector:
            result = _render_template(st.result_selector, result, ctx)
        out = _apply_result_path(raw, result, st.result_path, present=st.has_result_path)
        return self._output(st, out, ctx)
