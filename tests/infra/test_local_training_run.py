"""The local ASL interpreter runs the training state machine exactly as CDK synthesized it.

The definition is read from the synthesized template (tokens resolved by
`clinical_ner_local.cfn`), every Task is dispatched by its Resource ARN to a fake handler that
records the call and answers in the service's result shape, and the routes are asserted:
gate pass (auto approval in dev; pending approval then the approval event in prod), gate fail,
and a failed training job (Catch -> SNS notification -> Fail).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from clinical_ner.pipeline.stage_config import ApprovalMode
from clinical_ner_local.asl import FakeClock, StateMachine, StatesError, TaskRegistry
from clinical_ner_local.cfn import CloudAssembly

GLUE = "arn:aws:states:::glue:startJobRun.sync"
TRAIN = "arn:aws:states:::sagemaker:createTrainingJob.sync"
SNS = "arn:aws:states:::sns:publish"
PACKAGE_ARN = "arn:aws:sagemaker:us-east-1:123456789012:model-package/clinical-ner-dev-ner/3"


class FakePipeline:
    """Fake service integrations and Lambda handlers, keyed like the synthesized template."""

    def __init__(
        self,
        assembly: CloudAssembly,
        *,
        gate_passes: bool = True,
        train_fails: bool = False,
        production_model: str = "",
    ) -> None:
        self.gate_passes = gate_passes
        self.production_model = production_model
        self.train_fails = train_fails
        self.calls: list[tuple[str, Any]] = []
        self.published: list[dict[str, Any]] = []
        self.status_polls = 0
        self.registry = TaskRegistry()
        self.registry.register(GLUE, self.glue)
        self.registry.register(TRAIN, self.train)
        self.registry.register(SNS, self.sns)
        handlers = {
            "resolve-dataset": self.resolve_dataset,
            "register-model": self.register_model,
            "gate-model": self.gate_model,
            "approve-or-reject": self.approve_or_reject,
            "deploy-model": self.deploy_model,
        }
        for fn in assembly.lambda_functions("Training"):
            suffix = next(s for s in handlers if fn.function_name.endswith(s))
            self.registry.register_lambda(fn.function_name, handlers[suffix])

    def record(self, name: str, payload: Any) -> None:
        self.calls.append((name, copy.deepcopy(payload)))

    # ---- service integrations (result shapes of the .sync integrations)

    def glue(self, params, ctx):
        self.record("glue", params)
        assert params["JobName"] and params["Arguments"]["--run_id"]
        return {"Id": "jr_0123", "JobName": params["JobName"], "JobRunState": "SUCCEEDED"}

    def train(self, params, ctx):
        self.record("train", params)
        if self.train_fails:
            raise StatesError("States.TaskFailed", '{"FailureReason": "AlgorithmError"}')
        ctx.clock.sleep(600)  # ten virtual minutes of training
        return {
            "TrainingJobName": params["TrainingJobName"],
            "TrainingJobStatus": "Completed",
            "ModelArtifacts": {"S3ModelArtifacts": "s3://lake/models/job/output/model.tar.gz"},
            "AlgorithmSpecification": params["AlgorithmSpecification"],
        }

    def sns(self, params, ctx):
        self.record("sns", params)
        assert params["TopicArn"].startswith("arn:aws:sns:")
        self.published.append(params["Message"])
        return {"MessageId": f"msg-{len(self.published)}"}

    # ---- Lambda handlers (payload_response_only: the return value is the task result)

    def resolve_dataset(self, event, context):
        self.record("resolve_dataset", event)
        version = "ds-2024-01-01"
        base = f"s3://lake/curated/training/{version}"
        out = {
            "dataset_version": version,
            "train_uri": f"{base}/train/",
            "dev_uri": f"{base}/dev/",
            "test_uri": f"{base}/test/",
        }
        if self.production_model:
            out["production"] = {
                "model_package_arn": "arn:pkg/2",
                "model_data_url": self.production_model,
            }
        return out

    def register_model(self, event, context):
        self.record("register_model", event)
        return {"model_package_arn": PACKAGE_ARN}

    def gate_model(self, event, context):
        self.record("gate_model", event)
        if self.gate_passes:
            return {"passed": True, "summary": "f1 0.81 >= 0.79", "failed": []}
        return {"passed": False, "summary": "f1 0.41 < floor 0.50", "failed": ["f1_floor"]}

    def approve_or_reject(self, event, context):
        self.record(f"approve_or_reject:{event['action']}", event)
        return {"status": event["action"]}

    def deploy_model(self, event, context):
        self.record(f"deploy_model:{event['action']}", event)
        deployment = {
            "endpoint_name": "clinical-ner-dev-ner",
            "endpoint_config_name": "cfg-3",
            "model_package_arn": "arn:pkg/3",
            "guardrails": False,
        }
        if event["action"] == "deploy":
            return {**deployment, "phase": "in_progress"}
        if event["action"] == "status":
            self.status_polls += 1
            return {**deployment, "phase": "in_progress" if self.status_polls < 2 else "deployed"}
        return {**deployment, "phase": "healthy"}  # verify


@pytest.fixture(scope="module", params=["dev", "prod"])
def assembly(request) -> CloudAssembly:
    synth = request.getfixturevalue(request.param)
    return CloudAssembly.from_directory(synth.outdir)


def execute(assembly: CloudAssembly, fakes: FakePipeline, execution_input: dict) -> Any:
    info = assembly.state_machine("Training")
    machine = StateMachine(
        info.definition, fakes.registry, clock=FakeClock(), name=info.name, arn=info.arn, seed=1
    )
    return machine.execute(execution_input, name="exec-1")


def approval_mode(assembly: CloudAssembly) -> ApprovalMode:
    stack = assembly.resolver("Training").stack_name
    return ApprovalMode.MANUAL if stack.startswith("ClinicalNer-Prod") else ApprovalMode.AUTO


def test_definition_comes_from_the_template_with_every_token_resolved(assembly):
    info = assembly.state_machine("Training")
    resources = {s["Resource"] for s in _task_states(info.definition)}
    assert {GLUE, TRAIN, SNS} <= resources
    assert all(r.startswith("arn:aws:") for r in resources)
    assert info.arn.startswith("arn:aws:states:us-east-1:123456789012:stateMachine:")


def _task_states(definition: dict) -> list[dict]:
    return [s for s in definition["States"].values() if s["Type"] == "Task"]


def test_gate_pass_route(assembly):
    fakes = FakePipeline(assembly, gate_passes=True)
    result = execute(assembly, fakes, {"trigger": "new_annotations"})
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    steps = [name for name, _ in fakes.calls]
    prefix = ["glue", "resolve_dataset", "train", "register_model", "gate_model"]
    assert steps[:5] == prefix
    train_params = fakes.calls[2][1]
    assert train_params["TrainingJobName"].endswith("-exec-1")
    assert train_params["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == (
        "s3://lake/curated/training/ds-2024-01-01/train/"
    )
    assert fakes.calls[3][1]["trigger"] == "new_annotations"
    if approval_mode(assembly) is ApprovalMode.AUTO:
        assert steps[5:] == [
            "approve_or_reject:approve",
            "deploy_model:deploy",
            "deploy_model:status",
            "deploy_model:status",
            "deploy_model:verify",
            "sns",
        ]
        assert fakes.published[-1]["event"] == "model_deployed"
        assert result.states_entered()[-1] == "Deployed"
        waited = [d for d in result.state_durations() if d["state"] == "WaitForEndpoint"]
        assert len(waited) == 2 and all(d["seconds"] > 0 for d in waited)
    else:
        assert steps[5:] == ["approve_or_reject:pending", "sns"]
        assert fakes.published[-1]["event"] == "approval_needed"
        assert result.states_entered()[-1] == "AwaitingApproval"
        # The registry's approval event starts a second execution that deploys.
        approved = execute(
            assembly, fakes, {"trigger": "approval", "model_package_arn": "arn:pkg/3"}
        )
        assert approved.status == "SUCCEEDED", (approved.error, approved.cause)
        assert approved.states_entered()[:2] == ["RouteTrigger", "FromApprovalEvent"]
        assert fakes.published[-1]["event"] == "model_deployed"


def test_a_production_model_is_scored_by_the_training_job(assembly):
    url = "s3://lake/models/clinical-ner-dev-exec-0/output/model.tar.gz"
    fakes = FakePipeline(assembly, production_model=url)
    result = execute(assembly, fakes, {"trigger": "drift", "dataset_version": "ds-2024-01-01"})
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    entered = result.states_entered()
    assert "TrainAgainstProduction" in entered and "Train" not in entered
    train_params = next(p for name, p in fakes.calls if name == "train")
    channels = {
        c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
        for c in train_params["InputDataConfig"]
    }
    assert channels["production"] == url
    assert set(channels) == {"train", "dev", "test", "production"}
    first = FakePipeline(assembly)  # no Approved package yet: the plain Train state
    entered = execute(assembly, first, {"trigger": "manual"}).states_entered()
    assert "Train" in entered and "TrainAgainstProduction" not in entered


def test_gate_fail_route(assembly):
    fakes = FakePipeline(assembly, gate_passes=False)
    result = execute(assembly, fakes, {"trigger": "drift", "dataset_version": "ds-2024-01-01"})
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    steps = [name for name, _ in fakes.calls]
    # A given dataset version skips data preparation.
    assert steps == [
        "resolve_dataset",
        "train",
        "register_model",
        "gate_model",
        "approve_or_reject:reject",
        "sns",
    ]
    assert fakes.published == [
        {
            "event": "model_rejected",
            "model_package_arn": PACKAGE_ARN,
            "summary": "f1 0.41 < floor 0.50",
            "failed_checks": ["f1_floor"],
            "dataset_version": "ds-2024-01-01",
            "execution": result.execution_arn,
        }
    ]
    assert result.states_entered()[-1] == "ModelRejected"
    assert "Deploy" not in result.states_entered()


def test_failed_training_job_notifies_and_fails(assembly):
    fakes = FakePipeline(assembly, train_fails=True)
    result = execute(assembly, fakes, {"trigger": "manual", "dataset_version": "ds-1"})
    assert (result.status, result.error) == ("FAILED", "PipelineFailed")
    assert [n for n, _ in fakes.calls] == ["resolve_dataset", "train", "sns"]
    assert fakes.published[0]["event"] == "pipeline_failed"
    assert fakes.published[0]["error"] == "States.TaskFailed"


def test_invalid_input_fails_without_calling_anything(assembly):
    fakes = FakePipeline(assembly)
    result = execute(assembly, fakes, {"dataset_version": "ds-1"})
    assert (result.status, result.error) == ("FAILED", "InvalidInput")
    assert fakes.calls == []
