"""TrainingStack + the synthesized state machine: walk the definition, validate it as ASL,
check the training job's isolation and encryption, and the IAM of the pipeline."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from clinical_ner.pipeline.stage_config import ApprovalMode

REPO_ROOT = Path(__file__).resolve().parents[2]
ASL_VALIDATOR = REPO_ROOT / "node_modules" / ".bin" / "asl-validator"


def resolve_definition(definition_string: Any) -> dict[str, Any]:
    """Turn the template's Fn::Join definition into plain ASL JSON.

    CloudFormation tokens (Lambda ARNs, the topic, the Glue job name, ...) become readable,
    well-formed placeholders: an ARN for ``Fn::GetAtt [X, Arn]`` and ``Ref`` of a topic,
    ``<token:...>`` for the rest.
    """
    if isinstance(definition_string, str):
        return json.loads(definition_string)
    parts = definition_string["Fn::Join"][1]
    out = []
    for p in parts:
        if isinstance(p, str):
            out.append(p)
        elif "Fn::GetAtt" in p and p["Fn::GetAtt"][1] == "Arn":
            out.append(f"arn:aws:lambda:us-east-1:123456789012:function:{p['Fn::GetAtt'][0]}")
        elif "Ref" in p and p["Ref"] == "AWS::Partition":
            out.append("aws")
        elif "Ref" in p and p["Ref"] == "AWS::Region":
            out.append("us-east-1")
        elif "Ref" in p and p["Ref"] == "AWS::AccountId":
            out.append("123456789012")
        elif "Ref" in p and p["Ref"].startswith("Notifications"):
            out.append(f"arn:aws:sns:us-east-1:123456789012:{p['Ref']}")
        else:
            out.append(f"token-{abs(hash(json.dumps(p, sort_keys=True))) % 10**8}")
    return json.loads("".join(out))


def _state_machine(synth) -> dict[str, Any]:
    (sm,) = synth.resources(synth.stacks.training, "AWS::StepFunctions::StateMachine").values()
    return sm


@pytest.fixture(scope="module")
def definitions(dev, prod):
    return {
        "dev": resolve_definition(_state_machine(dev)["Properties"]["DefinitionString"]),
        "prod": resolve_definition(_state_machine(prod)["Properties"]["DefinitionString"]),
    }


ALLOWED_STATE_TYPES = {"Task", "Choice", "Pass", "Succeed", "Fail", "Wait"}


def _states(definition) -> dict[str, dict]:
    return definition["States"]


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_every_task_has_retry_and_a_catch_that_notifies_and_fails(definitions, stage):
    states = _states(definitions[stage])
    assert {s["Type"] for s in states.values()} <= ALLOWED_STATE_TYPES
    tasks = {n: s for n, s in states.items() if s["Type"] == "Task"}
    assert len(tasks) >= 12
    for name, task in tasks.items():
        assert task.get("Catch"), f"{name} has no Catch"
        targets = {c["Next"] for c in task["Catch"]}
        if name == "NotifyFailure":
            assert targets == {"PipelineFailed"}
        else:
            assert targets == {"NotifyFailure"}, name
            assert task["Catch"][0]["ErrorEquals"] == ["States.ALL"]
            assert task["Catch"][0]["ResultPath"] == "$.error"
        assert task.get("Retry"), f"{name} has no Retry"
        for r in task["Retry"]:
            assert "States.ALL" not in r["ErrorEquals"], "never blindly retry every error"
    assert states["NotifyFailure"]["Next"] == "PipelineFailed"
    assert states["PipelineFailed"]["Type"] == "Fail"


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_notifications_carry_no_cause_text(definitions, stage):
    # A failed step's Cause can quote data (a Spark or container message): e-mails get the
    # error name and the execution id only.
    for name, state in _states(definitions[stage]).items():
        if state["Type"] == "Task" and "sns:publish" in state["Resource"]:
            message = json.dumps(state["Parameters"])
            assert "Cause" not in message, name


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_chain_order(definitions, stage):
    s = _states(definitions[stage])
    assert definitions[stage]["StartAt"] == "RouteTrigger"
    assert s["PrepareData"]["Resource"].endswith(":::glue:startJobRun.sync")
    assert s["PrepareData"]["Next"] == "ResolveDataset"
    assert s["ResolveDataset"]["Next"] == "HasProductionModel"
    # production and a validated evaluation set (reviewed notes) -> both models scored on it
    validated, rule = s["HasProductionModel"]["Choices"]
    assert validated == {
        "And": [
            {"Variable": "$.dataset.production.model_data_url", "IsPresent": True},
            {"Variable": "$.dataset.validated_eval_uri", "IsPresent": True},
        ],
        "Next": "TrainAgainstProductionValidated",
    }
    assert rule == {
        "Variable": "$.dataset.production.model_data_url",
        "IsPresent": True,
        "Next": "TrainAgainstProduction",
    }
    assert s["HasProductionModel"]["Default"] == "Train"  # the first model
    channels = {
        c["ChannelName"]
        for c in s["TrainAgainstProductionValidated"]["Parameters"]["InputDataConfig"]
    }
    assert {"production", "validated_eval"} <= channels
    for train in ("Train", "TrainAgainstProduction", "TrainAgainstProductionValidated"):
        assert s[train]["Resource"].endswith(":::sagemaker:createTrainingJob.sync")
        assert s[train]["Next"] == "Register"
    assert s["Register"]["Next"] == "IdenticalToProduction"
    identical = s["IdenticalToProduction"]
    assert identical["Default"] == "Gate"
    assert [c["Next"] for c in identical["Choices"]] == ["NotRegisteredIdentical"]
    assert s["NotRegisteredIdentical"]["Type"] == "Succeed"
    assert s["Gate"]["Next"] == "GatePassed"
    assert s["Deploy"]["Next"] == "WaitForEndpoint"


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_gate_choice_routes_pass_and_fail(definitions, stage):
    s = _states(definitions[stage])
    choice = s["GatePassed"]
    (rule,) = choice["Choices"]
    assert rule == {"Variable": "$.gate.passed", "BooleanEquals": True, "Next": rule["Next"]}
    assert choice["Default"] == "Reject"
    assert s["Reject"]["Parameters"]["action"] == "reject"
    assert s["Reject"]["Next"] == "NotifyRejected"
    assert s[s["NotifyRejected"]["Next"]]["Type"] == "Succeed"
    if stage == "dev":  # auto approval
        assert rule["Next"] == "Approve"
        assert s["Approve"]["Parameters"]["action"] == "approve"
        assert s["Approve"]["Next"] == "Deploy"
    else:  # prod: manual approval, the package stays pending and the team is e-mailed
        assert rule["Next"] == "MarkPendingApproval"
        assert s["MarkPendingApproval"]["Parameters"]["action"] == "pending"
        assert s["MarkPendingApproval"]["Next"] == "NotifyApprovalNeeded"
        assert s[s["NotifyApprovalNeeded"]["Next"]]["Type"] == "Succeed"
        assert "Approve" not in s


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_trigger_routing_and_approval_continuation(definitions, stage):
    s = _states(definitions[stage])
    route = s["RouteTrigger"]
    assert route["Default"] == "InvalidInput"
    nexts = [c["Next"] for c in route["Choices"]]
    assert nexts == ["InvalidInput", "FromApprovalEvent", "HasDatasetVersion"]
    triggers = {c["StringEquals"] for c in route["Choices"][2]["Or"]}
    assert triggers == {"new_annotations", "drift", "manual", "schedule", "reviewed_annotations"}
    assert s["FromApprovalEvent"]["Next"] == "Deploy"
    assert s["NeedsDataPrep"]["Choices"][0] == {
        "Variable": "$.dataset_version",
        "StringEquals": "latest",
        "Next": "PrepareData",
    }
    assert s["NeedsDataPrep"]["Default"] == "ResolveDataset"


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_deployment_loop_and_serverless_bake(definitions, stage):
    s = _states(definitions[stage])
    phase = {c.get("StringEquals") or "and": c["Next"] for c in s["EndpointPhase"]["Choices"]}
    assert phase["in_progress"] == "WaitForEndpoint"
    assert phase["rolled_back"] == "NotifyRolledBack"
    assert phase["deployed"] == "BakeWait"
    assert phase["and"] == "NotifyDeployed"  # guardrails: SageMaker already baked
    assert s["EndpointPhase"]["Default"] == "EndpointFailed"
    assert s["BakeWait"]["Next"] == "VerifyDeployment"
    assert s["NotifyRolledBack"]["Next"] == "DeploymentRolledBack"
    assert s["DeploymentRolledBack"]["Type"] == "Fail"


@pytest.mark.parametrize("state", ["Train", "TrainAgainstProduction"])
def test_training_job_isolation_vpc_kms_and_image(definitions, dev, state):
    params = _states(definitions["dev"])[state]["Parameters"]
    assert params["EnableNetworkIsolation"] is True
    vpc = params["VpcConfig"]
    assert len(vpc["Subnets"]) == 2 and len(vpc["SecurityGroupIds"]) >= 1
    assert params["ResourceConfig"]["VolumeKmsKeyId"]
    assert params["OutputDataConfig"]["KmsKeyId"]
    assert params["OutputDataConfig"]["S3OutputPath"].endswith("/models/")
    channels = {c["ChannelName"]: c for c in params["InputDataConfig"]}
    if state == "Train":
        assert set(channels) == {"train", "dev", "test"}
    else:  # the production model, scored by the job on the candidate's dev/test data
        assert set(channels) == {"train", "dev", "test", "production"}
        source = channels["production"]["DataSource"]["S3DataSource"]
        assert source["S3Uri.$"] == "$.dataset.production.model_data_url"
    assert params["TrainingJobName.$"].startswith("States.Format(")
    # the KMS keys are the lake key (an import from the data-lake stack)
    raw = json.dumps(_state_machine(dev)["Properties"]["DefinitionString"])
    assert "ExportsOutputFnGetAttDataKey" in raw
    assert "dkr.ecr" in raw  # our image from the CDK asset repository


def test_asl_validator_accepts_the_definitions(definitions, tmp_path):
    if not ASL_VALIDATOR.exists():
        pytest.skip("asl-validator missing: run `npm ci`")
    for stage, definition in definitions.items():
        path = tmp_path / f"{stage}.asl.json"
        path.write_text(json.dumps(definition))
        result = subprocess.run(
            [str(ASL_VALIDATOR), "--json-path", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_asl_validator_rejects_a_broken_definition(tmp_path):
    if not ASL_VALIDATOR.exists():
        pytest.skip("asl-validator missing: run `npm ci`")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"StartAt": "A", "States": {"A": {"Type": "Task"}}}))
    result = subprocess.run(
        [str(ASL_VALIDATOR), "--json-path", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0


def test_state_machine_logging_tracing_timeout(synth):
    props = _state_machine(synth)["Properties"]
    assert props["TracingConfiguration"] == {"Enabled": True}
    assert props["LoggingConfiguration"]["Level"] == "ALL"
    assert props["LoggingConfiguration"]["IncludeExecutionData"] is False  # no PHI in logs
    definition = resolve_definition(props["DefinitionString"])
    assert definition["TimeoutSeconds"] == 12 * 3600


def test_approval_rule_only_in_manual_mode(synth):
    rules = synth.resources(synth.stacks.training, "AWS::Events::Rule")
    if synth.stacks.config.approval_mode is ApprovalMode.AUTO:
        assert rules == {}
        return
    (rule,) = rules.values()
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["detail-type"] == ["SageMaker Model Package State Change"]
    assert pattern["detail"]["ModelApprovalStatus"] == ["Approved"]
    assert pattern["detail"]["ModelPackageGroupName"] == [
        f"{synth.stacks.config.resource_prefix}-ner"
    ]
    (target,) = rule["Properties"]["Targets"]
    transformer = target["InputTransformer"]
    assert transformer["InputPathsMap"] == {"detail-ModelPackageArn": "$.detail.ModelPackageArn"}
    assert '"trigger":"approval"' in transformer["InputTemplate"]


def test_topic_encrypted_with_email_subscription(synth):
    (topic,) = synth.resources(synth.stacks.training, "AWS::SNS::Topic").values()
    assert "KmsMasterKeyId" in topic["Properties"]
    (sub,) = synth.resources(synth.stacks.training, "AWS::SNS::Subscription").values()
    assert sub["Properties"]["Protocol"] == "email"
    assert sub["Properties"]["Endpoint"] == synth.stacks.config.alarm_email


def test_vpc_is_isolated_with_endpoints_and_flow_logs(synth):
    t = synth.stacks.training
    assert synth.resources(t, "AWS::EC2::NatGateway") == {}
    assert synth.resources(t, "AWS::EC2::InternetGateway") == {}
    endpoints = synth.resources(t, "AWS::EC2::VPCEndpoint").values()
    names = json.dumps([e["Properties"]["ServiceName"] for e in endpoints])
    for service in ("s3", "sagemaker.api", "experiments", "monitoring", "application-autoscaling"):
        assert service in names
    assert len(synth.resources(t, "AWS::EC2::FlowLog")) == 1


def test_managed_mlflow_tracking_server_and_the_register_step_logging_to_it(synth):
    t = synth.stacks.training
    (lid, server), *rest = synth.resources(t, "AWS::SageMaker::MlflowTrackingServer").items()
    assert not rest
    p = server["Properties"]
    cfg = synth.stacks.config
    assert p["TrackingServerName"] == f"{cfg.resource_prefix}-mlflow"
    assert p["TrackingServerSize"] == cfg.tracking_server_size
    assert p["AutomaticModelRegistration"] is False  # only the gated pipeline registers models
    store = json.dumps(p["ArtifactStoreUri"])
    assert "s3://" in store and f"/{cfg.lake.experiments}" in store
    role_id = p["RoleArn"]["Fn::GetAtt"][0]
    role = synth.resources(t, "AWS::IAM::Role")[role_id]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "sagemaker.amazonaws.com"
    }
    server_statements = _statements(synth, t, "MlflowTrackingServerPolicy")
    object_grants = [s for s in server_statements if "s3:PutObject" in s["Action"]]
    assert len(object_grants) == 1 and f"/{cfg.lake.experiments}*" in json.dumps(object_grants)
    # the register Lambda logs there: its env names the server and the VPC has the endpoint
    fns = synth.resources(t, "AWS::Lambda::Function").values()
    (register,) = [f for f in fns if "register-model" in f["Properties"]["FunctionName"]]
    env = register["Properties"]["Environment"]["Variables"]
    assert env["MLFLOW_TRACKING_URI"] == {"Fn::GetAtt": [lid, "TrackingServerArn"]}
    assert env["MLFLOW_EXPERIMENT_NAME"] == cfg.resource_prefix
    (grant,) = [
        s
        for s in _statements(synth, t, "RegisterModelPolicy")
        if any(a.startswith("sagemaker-mlflow:") for a in s["Action"])
    ]
    assert grant["Resource"] == {"Fn::GetAtt": [lid, "TrackingServerArn"]}
    assert set(grant["Action"]) == {
        "sagemaker-mlflow:GetExperimentByName",
        "sagemaker-mlflow:CreateExperiment",
        "sagemaker-mlflow:SearchRuns",
        "sagemaker-mlflow:CreateRun",
        "sagemaker-mlflow:LogBatch",
        "sagemaker-mlflow:UpdateRun",
        "sagemaker-mlflow:SetTag",
    }
    (experiments,) = [
        e["Properties"]
        for e in synth.resources(t, "AWS::EC2::VPCEndpoint").values()
        if "experiments" in json.dumps(e["Properties"]["ServiceName"])
    ]
    assert experiments["PrivateDnsEnabled"] is True
    assert experiments["VpcEndpointType"] == "Interface"


def test_lambdas_are_thin_in_vpc_with_layer_and_encrypted_logs(synth):
    t = synth.stacks.training
    fns = synth.resources(t, "AWS::Lambda::Function")
    assert len(fns) == 5
    for fn in fns.values():
        p = fn["Properties"]
        assert p["Handler"] == "handler.handler"
        assert p["VpcConfig"]["SubnetIds"] and p["ReservedConcurrentExecutions"] >= 1
        assert len(p["Layers"]) == 2  # the core layer and the managed Powertools layer
    for group in synth.resources(t, "AWS::Logs::LogGroup").values():
        assert "KmsKeyId" in group["Properties"]


def test_layer_zip_has_the_core_package_under_python(tmp_path):
    import zipfile

    from stacks.packaging import build_layer_zip

    z = build_layer_zip(out_dir=tmp_path)
    with zipfile.ZipFile(z) as zf:
        names = set(zf.namelist())
    assert {
        "python/clinical_ner/pipeline/gating.py",
        "python/clinical_ner/pipeline/registry.py",
        "python/clinical_ner/pipeline/deployment.py",
        "python/clinical_ner/pipeline/stage_config.py",
    } <= names
    # local mode (the ASL interpreter, the emulator, the CloudFormation reader) never ships
    assert not [n for n in names if "clinical_ner_local" in n or n.endswith("/asl.py")]
    assert build_layer_zip(out_dir=tmp_path / "again").read_bytes() == z.read_bytes()


def test_lambda_core_modules_import_without_spacy_or_numpy():
    code = (
        "import sys; import clinical_ner.pipeline.gating, clinical_ner.pipeline.registry;"
        "import clinical_ner.pipeline.deployment, clinical_ner.pipeline.tracking;"
        "import clinical_ner.pipeline.aws_runtime; bad = {'spacy','numpy','pyarrow','pandas'} & "
        "set(sys.modules); assert not bad, bad"
    )
    subprocess.run([__import__("sys").executable, "-c", code], check=True, cwd=REPO_ROOT)


def _statements(synth, stack, logical_prefix):
    out = []
    for lid, res in synth.resources(stack, "AWS::IAM::ManagedPolicy").items():
        if lid.startswith(logical_prefix):
            out.extend(res["Properties"]["PolicyDocument"]["Statement"])
    return out


def test_iam_scoped(synth):
    t = synth.stacks.training
    roles = synth.resources(t, "AWS::IAM::Role")
    for role in roles.values():
        assert "ManagedPolicyArns" not in role["Properties"], "no AWS-managed policies"
        assert "Policies" not in role["Properties"]
    inline = synth.resources(t, "AWS::IAM::Policy")
    assert [k for k in inline] == [k for k in inline if k.startswith("StateMachineRole")]
    for lid, res in synth.resources(t, "AWS::IAM::ManagedPolicy").items():
        for s in res["Properties"]["PolicyDocument"]["Statement"]:
            actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
            assert all(not a.endswith(":*") and a != "*" for a in actions), (lid, actions)
            if s["Resource"] == "*":
                allowed = {
                    "ec2:",
                    "ecr:GetAuthorizationToken",
                    "cloudwatch:PutMetricData",
                    "sagemaker:ListModelPackages",
                }
                assert all(any(a.startswith(x) for x in allowed) for a in actions), (lid, actions)
    # the approve/reject Lambda can change approval status and nothing else
    approve = _statements(synth, t, "ApproveOrRejectPolicy")
    actions = {
        a
        for s in approve
        for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    }
    assert "sagemaker:UpdateModelPackage" in actions
    assert not [a for a in actions if a.startswith("s3:")]
