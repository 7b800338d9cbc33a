"""The extraction state machine's definition: ingest -> extract -> publish -> monitor.

::

    Start ─ IsRerun? ─┬─ (rerun_run_id given) SetRerunId ─────────────────┐
                      └─ SetRunId ─ ValidateNotes (Glue .sync) ───────────┤
                                                                          v
      StageTransformInput (Lambda) ─ AnyNotes? ─ no ─> NothingToExtract (Succeed)
                                         └ yes ─ ResolveModel (Lambda) ─ BatchTransform
      (SageMaker .sync) ─ PublishExtractions (Lambda) ─ MonitorDrift (Lambda) ─ Done

Every Task retries transient errors with backoff and catches everything else into ``$.error``
-> NotifyFailure (SNS: execution id, failed state's error name; no cause text, which could
quote a container's output) -> Fail (`step_functions.base`, shared with the training
machine). ValidateNotes waits longer for a concurrent validate run (`GLUE_BUSY_RETRY`).
Nothing in the definition deletes or moves input: a
failed run leaves ``raw/notes/`` and the curated notes untouched, and is re-run by starting an
execution with ``{"rerun_run_id": "<run id of the failed execution>"}``, which skips
validation (the Glue ledger has already admitted those notes) and extracts that run's notes.

Only Task, Choice, Pass, Succeed and Fail with JSONPath paths/Parameters/ResultSelector are
used (no Map/Parallel, no intrinsic functions), so the local ASL runner can execute the
synthesized definition as is.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, Size
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from clinical_ner.runtime.serve import JSONLINES
from step_functions.base import (
    GLUE_BUSY_RETRY,
    GLUE_RETRYABLE,
    SAGEMAKER_RETRYABLE,
    PipelineDefinition,
)


@dataclass(frozen=True)
class TransformSettings:
    instance_type: str
    instance_count: int
    max_payload_mb: int
    max_concurrent_transforms: int
    timeout: Duration


@dataclass(frozen=True)
class ExtractionFunctions:
    stage: lambda_.Function
    resolve_model: lambda_.Function
    publish: lambda_.Function
    monitor: lambda_.Function


class ExtractionPipeline(PipelineDefinition):
    """Builds `definition`; the stack wraps it in a StateMachine."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        validate_job_name: str,
        functions: ExtractionFunctions,
        topic: sns.ITopic,
        transform: TransformSettings,
        volume_key: kms.IKey,
        output_key: kms.IKey,
        transform_role: iam.IRole,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            topic=topic,
            failed_state="ExtractionFailed",
            failed_cause="an extraction step failed; see the SNS notification and execution "
            "history",
            failure_subject="Clinical NER extraction FAILED",
            failure_event="extraction_failed",
            failure_context={"run_id": sfn.JsonPath.string_at("$.run.run_id")},
            failure_follow_up={
                "rerun_input": {"rerun_run_id": sfn.JsonPath.string_at("$.run.run_id")}
            },
        )

        set_run_id = sfn.Pass(
            self,
            "SetRunId",
            parameters={"run_id": sfn.JsonPath.execution_name},
            result_path="$.run",
        )
        set_rerun_id = sfn.Pass(
            self,
            "SetRerunId",
            parameters={"run_id": sfn.JsonPath.string_at("$.rerun_run_id")},
            result_path="$.run",
        )
        validate = tasks.GlueStartJobRun(
            self,
            "ValidateNotes",
            glue_job_name=validate_job_name,
            integration_pattern=sfn.IntegrationPattern.RUN_JOB,
            arguments=sfn.TaskInput.from_object(
                {"--run_id": sfn.JsonPath.string_at("$.run.run_id")}
            ),
            result_selector={
                "job_run_id": sfn.JsonPath.string_at("$.Id"),
                "state": sfn.JsonPath.string_at("$.JobRunState"),
            },
            result_path="$.validate",
        )
        self.guard(validate, GLUE_RETRYABLE, GLUE_BUSY_RETRY)

        stage = self.lambda_task(
            "StageTransformInput",
            functions.stage,
            {"run_id": sfn.JsonPath.string_at("$.run.run_id")},
            "$.stage",
        )
        resolve = self.lambda_task("ResolveModel", functions.resolve_model, {}, "$.model")
        batch = tasks.SageMakerCreateTransformJob(
            self,
            "BatchTransform",
            transform_job_name=sfn.JsonPath.string_at("$.stage.transform_job_name"),
            model_name=sfn.JsonPath.string_at("$.model.model_name"),
            integration_pattern=sfn.IntegrationPattern.RUN_JOB,
            batch_strategy=tasks.BatchStrategy.MULTI_RECORD,
            max_payload=Size.mebibytes(transform.max_payload_mb),
            max_concurrent_transforms=transform.max_concurrent_transforms,
            transform_input=tasks.TransformInput(
                transform_data_source=tasks.TransformDataSource(
                    s3_data_source=tasks.TransformS3DataSource(
                        s3_uri=sfn.JsonPath.string_at("$.stage.input_uri"),
                        s3_data_type=tasks.S3DataType.S3_PREFIX,
                    )
                ),
                content_type=JSONLINES,
                split_type=tasks.SplitType.LINE,
            ),
            transform_output=tasks.TransformOutput(
                s3_output_path=sfn.JsonPath.string_at("$.stage.output_uri"),
                accept=JSONLINES,
                assemble_with=tasks.AssembleWith.LINE,
                encryption_key=output_key,
            ),
            transform_resources=tasks.TransformResources(
                instance_count=transform.instance_count,
                # "ml.m5.xlarge" -> InstanceType("m5.xlarge"); the task adds the "ml." prefix.
                instance_type=ec2.InstanceType(transform.instance_type.removeprefix("ml.")),
                volume_encryption_key=volume_key,
            ),
            result_selector={
                "job_name": sfn.JsonPath.string_at("$.TransformJobName"),
                "status": sfn.JsonPath.string_at("$.TransformJobStatus"),
            },
            result_path="$.transform",
            # Without a role the task construct creates one with AmazonSageMakerFullAccess.
            role=transform_role.without_policy_updates()
            if isinstance(transform_role, iam.Role)
            else transform_role,
            task_timeout=sfn.Timeout.duration(transform.timeout),
        )
        self.guard(batch, SAGEMAKER_RETRYABLE)

        publish = self.lambda_task(
            "PublishExtractions",
            functions.publish,
            {
                "run_id": sfn.JsonPath.string_at("$.run.run_id"),
                "dt": sfn.JsonPath.string_at("$.stage.dt"),
                # The label set is the transform model's own (its metrics.json).
                "model_data_url": sfn.JsonPath.string_at("$.model.model_data_url"),
            },
            "$.publish",
        )
        monitor = self.lambda_task(
            "MonitorDrift",
            functions.monitor,
            {
                "run_id": sfn.JsonPath.string_at("$.run.run_id"),
                "dt": sfn.JsonPath.string_at("$.stage.dt"),
                "model_version": sfn.JsonPath.string_at("$.publish.model_version"),
                "entity_keys": sfn.JsonPath.list_at("$.publish.keys.entities"),
                "model_data_url": sfn.JsonPath.string_at("$.model.model_data_url"),
            },
            "$.drift",
        )
        done = sfn.Succeed(self, "Done")
        nothing = sfn.Succeed(
            self, "NothingToExtract", comment="the run admitted no new notes (e.g. a re-drop)"
        )

        extract = resolve.next(batch).next(publish).next(monitor).next(done)
        stage.next(
            sfn.Choice(self, "AnyNotes?")
            .when(sfn.Condition.number_greater_than("$.stage.notes", 0), extract)
            .otherwise(nothing)
        )
        set_run_id.next(validate).next(stage)
        set_rerun_id.next(stage)
        self.definition = (
            sfn.Choice(self, "IsRerun?")
            .when(sfn.Condition.is_present("$.rerun_run_id"), set_rerun_id)
            .otherwise(set_run_id)
        )
