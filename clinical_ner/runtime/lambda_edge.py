"""The Lambda edge: Powertools logger and EMF metrics, event validation first, one step scaffold.

Every handler in ``lambdas/`` is ``@step(name, EventModel)`` over a function of its typed event
(the models: `clinical_ner.runtime.lambda_events`):

1. the Powertools logger takes the Lambda context (request id, function, cold start) and never
   logs the event (``log_event=False`` even if ``POWERTOOLS_LOGGER_LOG_EVENT`` says otherwise:
   events carry S3 keys and ids, and nothing of them is logged wholesale);
2. `parse` turns the raw event into the handler's event model (a frozen dataclass), so a
   malformed event is rejected before any work, with the same structured error line as a
   failed step and the error it raised (`PipelineStepError` names the key, never a value);
3. the work runs; AWS throttling / 5xx errors that survived boto3's retries become
   `TransientAwsError`, the one error name the state machines retry;
4. one log line per invocation (step, outcome, seconds, the ids the handler chose: never note
   text, never an exception message from the work) and one EMF count of the outcome.

Powertools comes from AWS's managed Lambda layer; only this module imports it, so Glue jobs,
SageMaker and the pipeline policy import without it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import sys
import time
import typing
import uuid
from collections.abc import Callable, Mapping
from typing import IO, Any, TypeVar

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.filters import SuppressFilter
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from clinical_ner.pipeline.aws_runtime import (
    PipelineStepError,
    TransientAwsError,
    error_code,
    is_transient,
)

# The stacks set both (stacks/common.py: one service; the namespace of
# `clinical_ner.pipeline.monitoring.NAMESPACE`, not imported here: it brings NumPy); the defaults
# are the same for tests and local mode.
SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "clinical-ner"
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "ClinicalNER"

Event = Mapping[str, Any]
E = TypeVar("E")


class JsonFormatter(LambdaPowertoolsFormatter):
    """The edge's JSON log format. A root handler formatting with it is a collector: the host
    (local mode's ``pipeline.log``) takes the edge's lines instead of stdout."""


class _EdgeHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """stdout (the function's log stream in Lambda), or a collector's stream (see above)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = self.target()
        super().emit(record)

    def target(self) -> IO[str]:
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and isinstance(
                handler.formatter, JsonFormatter
            ):
                # Powertools keeps root handlers of its time from repeating the edge's records;
                # a collector installed later gets the same filter.
                if not any(isinstance(f, SuppressFilter) for f in handler.filters):
                    handler.addFilter(SuppressFilter(SERVICE))
                return handler.stream  # type: ignore[no-any-return]
        return sys.stdout

    def write_line(self, line: str) -> None:
        with self.lock:  # type: ignore[union-attr]
            stream = self.target()
            stream.write(line + "\n")
            stream.flush()


_handler = _EdgeHandler()
logger = Logger(service=SERVICE, logger_handler=_handler, logger_formatter=JsonFormatter())
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


@dataclasses.dataclass(frozen=True)
class _DirectCall:
    """The context of a call from Python (tests, scripts) rather than from Lambda."""

    function_name: str = dataclasses.field(
        default_factory=lambda: os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "direct")
    )
    aws_request_id: str = dataclasses.field(default_factory=lambda: f"direct-{uuid.uuid4()}")
    invoked_function_arn: str = ""
    memory_limit_in_mb: int = 0


# ------------------------------------------------------------------ the step scaffold


def _count(step: str, outcome: str) -> None:
    """One EMF line: the outcome's count, dimensions service and step."""
    metrics.add_dimension(name="step", value=step)
    metrics.add_metric(name=outcome, unit=MetricUnit.Count, value=1)
    try:
        if not is_metrics_disabled():
            _handler.write_line(json.dumps(metrics.serialize_metric_set(), separators=(",", ":")))
    finally:
        metrics.clear_metrics()


def _failed(step: str, outcome: str, exc: BaseException, started: float, ids: Event) -> None:
    fields: dict[str, Any] = {
        "step": step,
        "outcome": outcome,
        "error_type": type(exc).__name__,
        "error_code": error_code(exc),
        "seconds": round(time.perf_counter() - started, 3),
        **ids,
    }
    if outcome == "invalid_event" and isinstance(exc, PipelineStepError):
        fields["reason"] = str(exc)  # the validators name the key, never its value
    logger.error("step failed", extra=fields)
    _count(
        step,
        {"invalid_event": "InvalidEvents", "transient_error": "TransientErrors"}.get(
            outcome, "StepErrors"
        ),
    )


def run_step(step: str, work: Callable[[], dict[str, Any]], **ids: Any) -> dict[str, Any]:
    """Run one step's work: transient-error classification, its log line and its count."""
    started = time.perf_counter()
    try:
        result = work()
    except Exception as exc:
        transient = is_transient(exc)
        _failed(step, "transient_error" if transient else "error", exc, started, ids)
        if transient:
            raise TransientAwsError(f"{step}: {type(exc).__name__} {error_code(exc)}") from exc
        raise
    logger.info(
        "step done",
        extra={
            "step": step,
            "outcome": "ok",
            "seconds": round(time.perf_counter() - started, 3),
            **ids,
        },
    )
    _count(step, "StepsSucceeded")
    return result


def _parse(step: str, parse: Callable[[Event], E], event: Any) -> E:
    """The typed event, or the structured error line and the error the state machine gets."""
    started = time.perf_counter()
    try:
        if not isinstance(event, Mapping):
            raise PipelineStepError("event must be a JSON object")
        return parse(event)
    except Exception as exc:
        _failed(step, "invalid_event", exc, started, {})
        raise


def step(
    name: str,
    model: type[E] | Callable[[Event], E],
    ids: Callable[[E], Mapping[str, Any]] | None = None,
) -> Callable[[Callable[[E], dict[str, Any]]], Callable[..., dict[str, Any]]]:
    """A Lambda handler ``(event, context=None)`` from ``work(typed_event)``: see the module.

    ``model`` is an event dataclass (read by `parse`; its ``at(log=True)`` fields name the
    log line) or a function of the raw event (then ``ids`` picks what the line names: ids and
    keys, never text)."""
    if dataclasses.is_dataclass(model):
        parser: Callable[[Event], E] = functools.partial(parse, model)  # type: ignore[arg-type]
        pick = ids or logged_fields
    else:
        parser, pick = model, ids or (lambda _: {})  # type: ignore[assignment]

    def wrap(work: Callable[[E], dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        def invoke(event: Any, context: Any) -> dict[str, Any]:
            typed = _parse(name, parser, event)
            return run_step(name, lambda: work(typed), **pick(typed))

        injected = logger.inject_lambda_context(invoke, log_event=False, clear_state=True)

        @functools.wraps(work)
        def handler(event: Any, context: Any = None) -> dict[str, Any]:
            # Called from Python (tests, scripts) there is no Lambda context: make one.
            return injected(event, _DirectCall() if context is None else context)  # type: ignore[no-any-return]

        return handler

    return wrap


# ------------------------------------------------------------------ event models


def at(
    *path: str,
    default: Any = dataclasses.MISSING,
    default_factory: Any = dataclasses.MISSING,
    log: bool = False,
) -> Any:
    """An event model field read from ``event[path[0]][path[1]]...`` (default: its own name);
    ``log=True`` puts it on the step's log line (ids and keys only, never text)."""
    return dataclasses.field(
        default=default, default_factory=default_factory, metadata={"path": path, "log": log}
    )


def parse(model: type[E], event: Event) -> E:
    """``model`` (a dataclass) from the raw event: each field from its path, checked against
    its annotation (``str``, ``int``, ``Mapping``, ``tuple[str, ...]``, optionally ``| None``);
    a missing required field or a wrong type is a `PipelineStepError` naming the key, never
    the value. Checks across fields belong in the model's ``__post_init__``."""
    hints = typing.get_type_hints(model)
    found: dict[str, Any] = {}
    for f in dataclasses.fields(model):  # type: ignore[arg-type]
        path = f.metadata.get("path") or (f.name,)
        try:
            raw = value(event, *path)
        except PipelineStepError:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise
            continue  # the dataclass default
        found[f.name] = _checked(raw, hints[f.name], ".".join(path))
    return model(**found)


def logged_fields(typed: Any) -> dict[str, Any]:
    """The fields of an event model marked ``at(log=True)``."""
    return {
        f.name: getattr(typed, f.name) for f in dataclasses.fields(typed) if f.metadata.get("log")
    }


def value(event: Event, *path: str) -> Any:
    """``event[path[0]][path[1]]...``, or a `PipelineStepError` naming the missing key."""
    node: Any = event
    for i, key in enumerate(path):
        if not isinstance(node, Mapping) or key not in node or node[key] in (None, ""):
            raise PipelineStepError(f"event lacks {'.'.join(path[: i + 1])}")
        node = node[key]
    return node


def _checked(raw: Any, hint: Any, where: str) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if type(None) in typing.get_args(hint) and len(args) == 1:
        hint = args[0]  # X | None: present, so an X
    origin = typing.get_origin(hint) or hint
    if hint is str and isinstance(raw, str):
        return raw
    if hint is int and not isinstance(raw, bool):
        if isinstance(raw, int):
            return raw
        if isinstance(raw, str) and raw.strip().isdecimal():
            return int(raw)
        raise PipelineStepError(f"event field {where} must be an integer")
    if origin in (Mapping, dict) and isinstance(raw, Mapping):
        return raw
    if origin is tuple and isinstance(raw, list) and all(isinstance(v, str) for v in raw):
        return tuple(raw)
    if hint in (str, int) or origin in (Mapping, dict, tuple):
        noun = {str: "a string", int: "an integer", tuple: "a list of strings"}.get(
            origin, "a JSON object"
        )
        raise PipelineStepError(f"event field {where} must be {noun}")
    raise TypeError(f"event models hold str, int, Mapping or tuple[str, ...], not {hint}")
