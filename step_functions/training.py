"""The training pipeline as a Step Functions chain (aws_stepfunctions_tasks).

    RouteTrigger (Choice)
      approval event --------------------------------------------> FromApprovalEvent -> Deploy
      new_annotations | reviewed_annotations | drift | manual | schedule:
        dataset_version given? -- no --> DefaultDatasetVersion
        dataset_version == "latest"? -- yes --> PrepareData (Glue .sync)
        ResolveDataset (Lambda: dataset channels + the production model, if any)
        HasProductionModel? (Choice)
          yes -> TrainAgainstProduction (SageMaker .sync; extra channel ``production`` = the
                 Approved package's model.tar.gz, scored on the candidate's dev/test data),
                 or TrainAgainstProductionValidated when the validated evaluation set exists
                 (one more channel ``validated_eval``: both models scored on reviewed notes)
          no  -> Train (SageMaker .sync)
        -> Register (Lambda)
        IdenticalToProduction? (Choice: the candidate's model_version is production's, so the
          Register step created no package) -- yes --> NotRegisteredIdentical (Succeed)
        -> Gate (Lambda)
        GatePassed? (Choice)
          pass, auto   -> Approve (Lambda) -> Deploy
          pass, manual -> MarkPendingApproval (Lambda) -> NotifyApprovalNeeded (SNS) -> Succeed;
                          the EventBridge rule on the package's approval starts a new execution
                          with trigger "approval", which goes straight to Deploy
          fail         -> Reject (Lambda) -> NotifyRejected (SNS) -> Succeed (ModelRejected)
      anything else -> InvalidInput (Fail)

    Deploy (Lambda) -> WaitForEndpoint -> EndpointStatus (Lambda) -> EndpointPhase (Choice)
      in_progress -> WaitForEndpoint;  failed -> failure path;  rolled_back -> NotifyRolledBack
      deployed + guardrails (SageMaker baked and watched the alarms) -> NotifyDeployed
      deployed, serverless -> BakeWait -> VerifyDeployment (Lambda: alarms; roll back) ->
        healthy -> NotifyDeployed -> Succeed;  rolled_back -> NotifyRolledBack -> Fail

Every Task retries transient errors (throttling, Lambda service errors, ``TransientAwsError``)
with backoff and catches everything else into ``$.error`` -> NotifyFailure (SNS) -> Fail
(`step_functions.base`: one retry policy and failure path for both machines).

The definition uses only Task, Choice, Pass, Wait, Succeed and Fail with JSONPath
InputPath/Parameters/ResultSelector/ResultPath and the ``States.Format`` intrinsic (for the
training job name), so the local ASL runner can execute the synthesized definition as is.
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

from clinical_ner.model.recipes import get_recipe
from clinical_ner.pipeline.aws_runtime import ENDPOINT_BUSY_ERROR
from clinical_ner.pipeline.registry import LATEST, TRIGGERS
from clinical_ner.pipeline.stage_config import ApprovalMode
from step_functions.base import GLUE_RETRYABLE, SAGEMAKER_RETRYABLE, PipelineDefinition

APPROVAL_TRIGGER = "approval"
# Label-independent names only: MetricDefinitions are fixed at synth time, but the label set
# is the trained model's own (per-label F1 is in its metrics.json, which the gate reads).
TRAINING_METRICS = ("dev_f1", "test_f1", "dev_min_label_f1", "test_min_label_f1")


@dataclass(frozen=True)
class TrainingJobSettings:
    image: tasks.DockerImage
    role: iam.IRole
    vpc: ec2.IVpc
    subnets: ec2.SubnetSelection
    security_group: ec2.ISecurityGroup
    key: kms.IKey  # volume + output encryption (the lake key)
    output_location: tasks.S3Location  # s3://<lake>/models/
    instance_type: str = "ml.m5.xlarge"
    volume_gb: int = 30
    max_runtime_hours: int = 4
    name_prefix: str = "clinical-ner"


@dataclass(frozen=True)
class PipelineFunctions:
    resolve_dataset: lambda_.Function
    register_model: lambda_.Function
    gate_model: lambda_.Function
    approve_or_reject: lambda_.Function
    deploy_model: lambda_.Function


class TrainingPipeline(PipelineDefinition):
    """Builds `definition` (the chain); the stack wraps it in a StateMachine."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        glue_job_name: str,
        training: TrainingJobSettings,
        functions: PipelineFunctions,
        topic: sns.ITopic,
        approval_mode: ApprovalMode,
        bake_time: Duration | None = None,
        poll_interval: Duration | None = None,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            topic=topic,
            failed_state="PipelineFailed",
            failed_cause="a pipeline step failed; see the SNS notification and the execution "
            "history",
            failure_subject="Clinical NER training pipeline FAILED",
            failure_event="pipeline_failed",
        )
        bake_time = bake_time or Duration.minutes(10)
        poll_interval = poll_interval or Duration.minutes(1)

        deploy = self._deployment(functions, bake_time, poll_interval)
        gate_choice = self._gate_routing(functions, approval_mode, deploy)
        version_choice = self._training(glue_job_name, training, functions, gate_choice)
        from_approval = sfn.Pass(
            self,
            "FromApprovalEvent",
            parameters={
                "trigger": APPROVAL_TRIGGER,
                "register": {"model_package_arn": sfn.JsonPath.string_at("$.model_package_arn")},
            },
        )
        from_approval.next(deploy)
        default_version = sfn.Pass(
            self,
            "DefaultDatasetVersion",
            parameters={"trigger": sfn.JsonPath.string_at("$.trigger"), "dataset_version": LATEST},
        )
        default_version.next(version_choice)
        invalid = sfn.Fail(
            self,
            "InvalidInput",
            error="InvalidInput",
            cause="input needs trigger (new_annotations|reviewed_annotations|drift|manual|"
            "schedule) and an optional dataset_version, or trigger=approval with "
            "model_package_arn",
        )
        has_version = (
            sfn.Choice(self, "HasDatasetVersion")
            .when(sfn.Condition.is_present("$.dataset_version"), version_choice)
            .otherwise(default_version)
        )
        # Rules are evaluated in order, so $.trigger is known to exist after the first one.
        self.definition = (
            sfn.Choice(self, "RouteTrigger")
            .when(sfn.Condition.not_(sfn.Condition.is_present("$.trigger")), invalid)
            .when(sfn.Condition.string_equals("$.trigger", APPROVAL_TRIGGER), from_approval)
            .when(
                sfn.Condition.or_(*[sfn.Condition.string_equals("$.trigger", t) for t in TRIGGERS]),
                has_version,
            )
            .otherwise(invalid)
        )

    def _decision(
        self, functions: PipelineFunctions, state_id: str, action: str
    ) -> tasks.LambdaInvoke:
        """approve_or_reject with one action (approve / reject / pending) for the candidate."""
        return self.lambda_task(
            state_id,
            functions.approve_or_reject,
            {
                "action": action,
                "model_package_arn": sfn.JsonPath.string_at("$.register.model_package_arn"),
                "gate": sfn.JsonPath.object_at("$.gate"),
            },
            "$.approval",
        )

    def _training(
        self,
        glue_job_name: str,
        training: TrainingJobSettings,
        functions: PipelineFunctions,
        gate_choice: sfn.Choice,
    ) -> sfn.Choice:
        """NeedsDataPrep -> PrepareData -> ResolveDataset -> Train* -> Register -> Gate."""
        prepare = tasks.GlueStartJobRun(
            self,
            "PrepareData",
            glue_job_name=glue_job_name,
            integration_pattern=sfn.IntegrationPattern.RUN_JOB,
            arguments=sfn.TaskInput.from_object({"--run_id": sfn.JsonPath.execution_name}),
            result_selector={"job_run_id": sfn.JsonPath.string_at("$.Id")},
            result_path="$.prepare",
            task_timeout=sfn.Timeout.duration(Duration.hours(3)),
        )
        resolve = self.lambda_task(
            "ResolveDataset",
            functions.resolve_dataset,
            {"dataset_version": sfn.JsonPath.string_at("$.dataset_version")},
            "$.dataset",
        )
        train = self._training_job("Train", training, against_production=False)
        train_against_production = self._training_job(
            "TrainAgainstProduction", training, against_production=True
        )
        # + channel validated_eval (reviewed notes never trained on, docs/review.md): added only
        # when ResolveDataset found that set, since a channel over an empty prefix fails a job.
        train_validated = self._training_job(
            "TrainAgainstProductionValidated",
            training,
            against_production=True,
            validated_eval=True,
        )
        register = self.lambda_task(
            "Register",
            functions.register_model,
            {
                "training": sfn.JsonPath.object_at("$.training"),
                "dataset": sfn.JsonPath.object_at("$.dataset"),
                "trigger": sfn.JsonPath.string_at("$.trigger"),
                "execution_id": sfn.JsonPath.execution_id,
            },
            "$.register",
        )
        gate = self.lambda_task(
            "Gate",
            functions.gate_model,
            {"model_package_arn": sfn.JsonPath.string_at("$.register.model_package_arn")},
            "$.gate",
        )

        version_choice = (
            sfn.Choice(self, "NeedsDataPrep")
            .when(sfn.Condition.string_equals("$.dataset_version", LATEST), prepare)
            .otherwise(resolve)
        )
        prepare.next(resolve)
        resolve.next(
            sfn.Choice(self, "HasProductionModel")
            .when(
                sfn.Condition.and_(
                    sfn.Condition.is_present("$.dataset.production.model_data_url"),
                    sfn.Condition.is_present("$.dataset.validated_eval_uri"),
                ),
                train_validated,
            )
            .when(
                sfn.Condition.is_present("$.dataset.production.model_data_url"),
                train_against_production,
            )
            .otherwise(train)
        )
        train.next(register)
        train_against_production.next(register)
        train_validated.next(register)
        # A retrained model identical to production (same model_version) is not registered:
        # nothing to gate or deploy, and the execution says so in $.register.summary.
        register.next(
            sfn.Choice(self, "IdenticalToProduction")
            .when(
                sfn.Condition.and_(
                    sfn.Condition.is_present("$.register.identical_to_production"),
                    sfn.Condition.boolean_equals("$.register.identical_to_production", True),
                ),
                sfn.Succeed(
                    self,
                    "NotRegisteredIdentical",
                    comment="identical to production, not registered",
                ),
            )
            .otherwise(gate)
        )
        gate.next(gate_choice)

        self.guard(prepare, GLUE_RETRYABLE)
        self.guard(train, SAGEMAKER_RETRYABLE)
        self.guard(train_against_production, SAGEMAKER_RETRYABLE)
        self.guard(train_validated, SAGEMAKER_RETRYABLE)
        return version_choice

    def _deployment(
        self, functions: PipelineFunctions, bake_time: Duration, poll_interval: Duration
    ) -> tasks.LambdaInvoke:
        """Deploy -> wait for the endpoint -> bake and verify (serverless) -> notify."""
        deploy = self.lambda_task(
            "Deploy",
            functions.deploy_model,
            {
                "action": "deploy",
                "model_package_arn": sfn.JsonPath.string_at("$.register.model_package_arn"),
            },
            "$.deployment",
            busy_errors=[ENDPOINT_BUSY_ERROR],
        )
        wait_endpoint = sfn.Wait(self, "WaitForEndpoint", time=sfn.WaitTime.duration(poll_interval))
        endpoint_status = self.lambda_task(
            "EndpointStatus",
            functions.deploy_model,
            {"action": "status", "deployment": sfn.JsonPath.object_at("$.deployment")},
            "$.deployment",
        )
        bake = sfn.Wait(self, "BakeWait", time=sfn.WaitTime.duration(bake_time))
        verify = self.lambda_task(
            "VerifyDeployment",
            functions.deploy_model,
            {"action": "verify", "deployment": sfn.JsonPath.object_at("$.deployment")},
            "$.deployment",
        )
        notify_deployed = self.notify(
            "NotifyDeployed",
            "Clinical NER model deployed",
            {
                "event": "model_deployed",
                "endpoint": sfn.JsonPath.string_at("$.deployment.endpoint_name"),
                "endpoint_config": sfn.JsonPath.string_at("$.deployment.endpoint_config_name"),
                "model_package_arn": sfn.JsonPath.string_at("$.deployment.model_package_arn"),
                "execution": sfn.JsonPath.execution_id,
            },
        )
        notify_deployed.next(sfn.Succeed(self, "Deployed"))
        notify_rolled_back = self.notify(
            "NotifyRolledBack",
            "Clinical NER deployment ROLLED BACK",
            {
                "event": "deployment_rolled_back",
                "endpoint": sfn.JsonPath.string_at("$.deployment.endpoint_name"),
                "rejected_endpoint_config": sfn.JsonPath.string_at(
                    "$.deployment.endpoint_config_name"
                ),
                "model_package_arn": sfn.JsonPath.string_at("$.deployment.model_package_arn"),
                "execution": sfn.JsonPath.execution_id,
            },
        )
        notify_rolled_back.next(
            sfn.Fail(
                self,
                "DeploymentRolledBack",
                error="DeploymentRolledBack",
                cause="rollback alarms fired during the deployment; the previous model serves",
            )
        )
        endpoint_failed = sfn.Pass(
            self,
            "EndpointFailed",
            parameters={
                "Error": "EndpointDeploymentFailed",
                "Cause": sfn.JsonPath.format(
                    "endpoint {} did not reach InService with {}",
                    sfn.JsonPath.string_at("$.deployment.endpoint_name"),
                    sfn.JsonPath.string_at("$.deployment.endpoint_config_name"),
                ),
            },
            result_path="$.error",
        )
        endpoint_failed.next(self.notify_failure)

        deploy.next(wait_endpoint)
        wait_endpoint.next(endpoint_status)
        endpoint_status.next(
            sfn.Choice(self, "EndpointPhase")
            .when(sfn.Condition.string_equals("$.deployment.phase", "in_progress"), wait_endpoint)
            .when(
                sfn.Condition.string_equals("$.deployment.phase", "rolled_back"), notify_rolled_back
            )
            .when(
                sfn.Condition.and_(
                    sfn.Condition.string_equals("$.deployment.phase", "deployed"),
                    sfn.Condition.boolean_equals("$.deployment.guardrails", True),
                ),
                notify_deployed,
            )
            .when(sfn.Condition.string_equals("$.deployment.phase", "deployed"), bake)
            .otherwise(endpoint_failed)
        )
        bake.next(verify)
        verify.next(
            sfn.Choice(self, "DeploymentHealthy")
            .when(sfn.Condition.string_equals("$.deployment.phase", "healthy"), notify_deployed)
            .otherwise(notify_rolled_back)
        )

        return deploy

    def _gate_routing(
        self, functions: PipelineFunctions, approval_mode: ApprovalMode, deploy: sfn.IChainable
    ) -> sfn.Choice:
        """GatePassed: approve and deploy (auto) or ask for approval (manual); else reject."""
        reject = self._decision(functions, "Reject", "reject")
        notify_rejected = self.notify(
            "NotifyRejected",
            "Clinical NER candidate model rejected by the gate",
            {
                "event": "model_rejected",
                "model_package_arn": sfn.JsonPath.string_at("$.register.model_package_arn"),
                "summary": sfn.JsonPath.string_at("$.gate.summary"),
                "failed_checks": sfn.JsonPath.list_at("$.gate.failed"),
                "dataset_version": sfn.JsonPath.string_at("$.dataset.dataset_version"),
                "execution": sfn.JsonPath.execution_id,
            },
        )
        reject.next(notify_rejected)
        notify_rejected.next(sfn.Succeed(self, "ModelRejected"))

        if approval_mode is ApprovalMode.AUTO:
            on_pass: sfn.IChainable = self._decision(functions, "Approve", "approve")
            on_pass.next(deploy)  # type: ignore[attr-defined]
        else:
            pending = self._decision(functions, "MarkPendingApproval", "pending")
            notify_pending = self.notify(
                "NotifyApprovalNeeded",
                "Clinical NER model awaiting approval",
                {
                    "event": "approval_needed",
                    "model_package_arn": sfn.JsonPath.string_at("$.register.model_package_arn"),
                    "summary": sfn.JsonPath.string_at("$.gate.summary"),
                    "how_to_approve": "Approve or reject this package in the SageMaker Model "
                    "Registry; approval starts the deployment automatically.",
                    "execution": sfn.JsonPath.execution_id,
                },
            )
            pending.next(notify_pending)
            notify_pending.next(sfn.Succeed(self, "AwaitingApproval"))
            on_pass = pending
        gate_choice = (
            sfn.Choice(self, "GatePassed")
            .when(sfn.Condition.boolean_equals("$.gate.passed", True), on_pass)
            .otherwise(reject)
        )

        return gate_choice

    def _training_job(
        self,
        state_id: str,
        t: TrainingJobSettings,
        *,
        against_production: bool,
        validated_eval: bool = False,
    ) -> tasks.SageMakerCreateTrainingJob:
        def channel(name: str, uri_path: str, content_type: str) -> tasks.Channel:
            return tasks.Channel(
                channel_name=name,
                content_type=content_type,
                data_source=tasks.DataSource(
                    s3_data_source=tasks.S3DataSource(
                        s3_location=tasks.S3Location.from_json_expression(uri_path),
                        s3_data_type=tasks.S3DataType.S3_PREFIX,
                        s3_data_distribution_type=tasks.S3DataDistributionType.FULLY_REPLICATED,
                    )
                ),
            )

        channels = [
            channel(name, f"$.dataset.{name}_uri", "application/jsonlines")
            for name in ("train", "dev", "test")
        ]
        if against_production:
            # The object key is the prefix: SageMaker copies exactly that model.tar.gz.
            channels.append(
                channel("production", "$.dataset.production.model_data_url", "application/gzip")
            )
        if validated_eval:
            channels.append(
                channel("validated_eval", "$.dataset.validated_eval_uri", "application/jsonlines")
            )
        job = tasks.SageMakerCreateTrainingJob(
            self,
            state_id,
            training_job_name=sfn.JsonPath.format(
                "{}-{}", t.name_prefix, sfn.JsonPath.execution_name
            ),
            role=t.role,
            algorithm_specification=tasks.AlgorithmSpecification(
                training_image=t.image,
                training_input_mode=tasks.InputMode.FILE,
                metric_definitions=[
                    tasks.MetricDefinition(name=m, regex=f"METRIC {m}=([0-9.eE+-]+)")
                    for m in TRAINING_METRICS
                ],
            ),
            input_data_config=channels,
            output_data_config=tasks.OutputDataConfig(
                s3_output_location=t.output_location,
                encryption_key=t.key,
            ),
            resource_config=tasks.ResourceConfig(
                instance_count=1,
                instance_type=ec2.InstanceType(t.instance_type.removeprefix("ml.")),
                volume_size=Size.gibibytes(t.volume_gb),
                volume_encryption_key=t.key,
            ),
            stopping_condition=tasks.StoppingCondition(
                max_runtime=Duration.hours(t.max_runtime_hours)
            ),
            vpc_config=tasks.VpcConfig(vpc=t.vpc, subnets=t.subnets),
            enable_network_isolation=True,
            # The pipeline retrains the product model: the product recipe's seed, labels and
            # config overrides, on the annotations gathered in the channels.
            hyperparameters=get_recipe("product").hyperparameters(),
            integration_pattern=sfn.IntegrationPattern.RUN_JOB,
            result_selector={
                "job_name": sfn.JsonPath.string_at("$.TrainingJobName"),
                "model_data_url": sfn.JsonPath.string_at("$.ModelArtifacts.S3ModelArtifacts"),
                "image": sfn.JsonPath.string_at("$.AlgorithmSpecification.TrainingImage"),
            },
            result_path="$.training",
        )
        job.add_security_group(t.security_group)
        return job
