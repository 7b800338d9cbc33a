"""What both state machines share: retry policies, the failure path and the Lambda task.

`PipelineDefinition` is the base of `TrainingPipeline` and `ExtractionPipeline`. It builds the
failure path (``NotifyFailure`` SNS publish -> a Fail state; the message names the execution
and the failed state's error, never its cause text, which could quote data) and gives the
helpers every task goes through, so both machines retry and time out the same way:

- every Task retries the transient errors of its own integration (`TRANSIENT_RETRY`) and
  catches everything else into ``$.error`` -> ``NotifyFailure``;
- waiting for a busy resource (another Glue run of a single-run job, an endpoint being
  updated) is a separate, named policy, because it waits for minutes, not seconds;
- a Lambda task's timeout is its function's own timeout plus `LAMBDA_TASK_MARGIN`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from clinical_ner.pipeline.aws_runtime import TRANSIENT_ERROR

# Errors worth a retry, per integration. TRANSIENT_ERROR is what our handlers raise for
# throttling and 5xx of the AWS APIs they call (clinical_ner.pipeline.aws_runtime).
LAMBDA_RETRYABLE = (
    TRANSIENT_ERROR,
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
)
GLUE_RETRYABLE = ("Glue.ThrottlingException", "Glue.ConcurrentRunsExceededException")
# SageMaker's generic API error carries the real code in its cause; a validation error fails
# again after the few attempts of TRANSIENT_RETRY.
SAGEMAKER_RETRYABLE = ("SageMaker.ThrottlingException", "SageMaker.AmazonSageMakerException")
SNS_RETRYABLE = ("SNS.ThrottledException", "SNS.InternalErrorException")


@dataclass(frozen=True)
class RetryPolicy:
    interval: Duration
    max_attempts: int
    backoff_rate: float = 2.0
    max_delay: Duration = field(default_factory=lambda: Duration.minutes(5))
    jitter: bool = True  # full jitter: concurrent executions do not retry in lockstep

    def apply(self, task: sfn.TaskStateBase, errors: Sequence[str]) -> None:
        task.add_retry(
            errors=list(errors),
            interval=self.interval,
            max_attempts=self.max_attempts,
            backoff_rate=self.backoff_rate,
            max_delay=self.max_delay,
            jitter_strategy=sfn.JitterType.FULL if self.jitter else None,
        )


# The one policy for transient errors (throttling, service hiccups) in both machines:
# 5 s, 10 s, 20 s, 40 s (full jitter). Its 5-minute max delay never binds at 4 attempts; it is
# the cap of every policy here, chosen for the busy-resource waits below, where it does
# (the extraction copy had 5 min, the training copy 2 min: 5 min lets a validate run that
# holds the single Glue slot finish before the retries run out).
TRANSIENT_RETRY = RetryPolicy(interval=Duration.seconds(5), max_attempts=4)
# Another run of a MaxConcurrentRuns=1 Glue job holds the slot: 30 s, 1, 2, 4, 5, 5 min.
GLUE_BUSY_RETRY = RetryPolicy(interval=Duration.seconds(30), max_attempts=6)
# The endpoint is being updated by another deployment: every 2-15 min, ten times (no jitter:
# one deployment per stage at a time).
ENDPOINT_BUSY_RETRY = RetryPolicy(
    interval=Duration.minutes(2),
    max_attempts=10,
    backoff_rate=1.5,
    max_delay=Duration.minutes(15),
    jitter=False,
)
# A Lambda task waits for its function's own timeout plus this margin (invoke round trip and
# a cold start in the VPC), so the function's timeout, not the state's, ends a slow run and
# States.Timeout only means a lost invoke, which is safe to retry.
LAMBDA_TASK_MARGIN = Duration.minutes(2)


class PipelineDefinition(Construct):
    """Base of a state machine definition: the failure path and the task helpers.

    Subclasses build their chain and set `definition`; `tasks` lists every Task that catches
    into the failure path (the stacks and tests walk it).
    """

    definition: sfn.IChainable

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        topic: sns.ITopic,
        failed_state: str,
        failed_cause: str,
        failure_subject: str,
        failure_event: str,
        failure_context: Mapping[str, Any] | None = None,
        failure_follow_up: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic = topic
        self.tasks: list[sfn.TaskStateBase] = []
        failed = sfn.Fail(self, failed_state, error=failed_state, cause=failed_cause)
        self.notify_failure = tasks.SnsPublish(
            self,
            "NotifyFailure",
            topic=topic,
            subject=failure_subject,
            message=sfn.TaskInput.from_object(
                {
                    "event": failure_event,
                    "execution": sfn.JsonPath.execution_id,
                    **(failure_context or {}),
                    # The error name only: a service's cause text (a Spark or container
                    # message) could quote data; it stays in the access-controlled history.
                    "error": sfn.JsonPath.string_at("$.error.Error"),
                    **(failure_follow_up or {}),
                }
            ),
            result_path=sfn.JsonPath.DISCARD,
        )
        TRANSIENT_RETRY.apply(self.notify_failure, SNS_RETRYABLE)
        self.notify_failure.add_catch(failed, result_path="$.notify_error")
        self.notify_failure.next(failed)

    def guard(
        self,
        task: sfn.TaskStateBase,
        errors: Sequence[str],
        policy: RetryPolicy = TRANSIENT_RETRY,
    ) -> sfn.TaskStateBase:
        """Retry `errors` of `task` by `policy`; everything else -> the failure path."""
        policy.apply(task, errors)
        task.add_catch(self.notify_failure, errors=["States.ALL"], result_path="$.error")
        self.tasks.append(task)
        return task

    def lambda_task(
        self,
        state_id: str,
        fn: lambda_.Function,
        payload: Mapping[str, Any],
        result_path: str,
        *,
        busy_errors: Sequence[str] = (),
    ) -> tasks.LambdaInvoke:
        """Invoke `fn` with `payload`, its answer at `result_path`.

        `busy_errors` (the handler's "resource busy" errors) are retried by
        `ENDPOINT_BUSY_RETRY`, after the transient errors' policy.
        """
        if fn.timeout is None:
            raise ValueError(f"{state_id}: the function needs an explicit timeout")
        task = tasks.LambdaInvoke(
            self,
            state_id,
            lambda_function=fn,
            payload=sfn.TaskInput.from_object(dict(payload)),
            payload_response_only=True,
            retry_on_service_exceptions=False,
            result_path=result_path,
            task_timeout=sfn.Timeout.duration(
                Duration.seconds(fn.timeout.to_seconds() + LAMBDA_TASK_MARGIN.to_seconds())
            ),
        )
        TRANSIENT_RETRY.apply(task, [*LAMBDA_RETRYABLE, "States.Timeout"])
        if busy_errors:
            ENDPOINT_BUSY_RETRY.apply(task, busy_errors)
        task.add_catch(self.notify_failure, errors=["States.ALL"], result_path="$.error")
        self.tasks.append(task)
        return task

    def notify(self, state_id: str, subject: str, message: Mapping[str, Any]) -> tasks.SnsPublish:
        """Publish `message` (object keys, ids, summaries; never note text) to the topic."""
        task = tasks.SnsPublish(
            self,
            state_id,
            topic=self.topic,
            subject=subject,
            message=sfn.TaskInput.from_object(dict(message)),
            result_path=sfn.JsonPath.DISCARD,
        )
        self.guard(task, SNS_RETRYABLE)
        return task
