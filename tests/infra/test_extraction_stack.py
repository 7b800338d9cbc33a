"""ExtractionStack: the S3 -> state machine rule, the definition (walked and asl-validated),
Batch Transform settings, failure notification, and the Lambdas' packaging and IAM."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ASL_VALIDATOR = REPO_ROOT / "node_modules" / ".bin" / "asl-validator"
ALLOWED_TYPES = {"Task", "Choice", "Pass", "Wait", "Succeed", "Fail"}


def _resolve(definition: Any) -> dict[str, Any]:
    if isinstance(definition, str):
        return json.loads(definition)
    out = []
    for p in definition["Fn::Join"][1]:
        if isinstance(p, str):
            out.append(p)
        elif "Fn::GetAtt" in p and p["Fn::GetAtt"][1] == "Arn":
            out.append(f"arn:aws:lambda:us-east-1:123456789012:function:{p['Fn::GetAtt'][0]}")
        elif p.get("Ref") == "AWS::Partition":
            out.append("aws")
        elif p.get("Ref") == "AWS::Region":
            out.append("us-east-1")
        elif p.get("Ref") == "AWS::AccountId":
            out.append("123456789012")
        elif "Fn::ImportValue" in p and "Topic" in json.dumps(p):
            out.append("arn:aws:sns:us-east-1:123456789012:alerts")
        else:
            out.append(f"token-{abs(hash(json.dumps(p, sort_keys=True))) % 10**8}")
    return json.loads("".join(out))


def _state_machine(synth) -> dict[str, Any]:
    (sm,) = synth.resources(synth.stacks.extraction, "AWS::StepFunctions::StateMachine").values()
    return sm


@pytest.fixture(scope="module")
def definition(dev):
    return _resolve(_state_machine(dev)["Properties"]["DefinitionString"])


def test_definition_walks_validate_transform_publish_monitor(definition):
    s = definition["States"]
    assert definition["StartAt"] == "IsRerun?"
    assert {st["Type"] for st in s.values()} <= ALLOWED_TYPES
    assert s["SetRunId"]["Next"] == "ValidateNotes"
    assert s["SetRunId"]["Parameters"] == {"run_id.$": "$$.Execution.Name"}
    assert s["SetRerunId"]["Next"] == "StageTransformInput"
    assert s["ValidateNotes"]["Resource"].endswith(":glue:startJobRun.sync")
    assert s["ValidateNotes"]["Parameters"]["Arguments"] == {"--run_id.$": "$.run.run_id"}
    assert s["ValidateNotes"]["Next"] == "StageTransformInput"
    assert s["StageTransformInput"]["Next"] == "AnyNotes?"
    assert s["AnyNotes?"]["Default"] == "NothingToExtract"
    assert s["AnyNotes?"]["Choices"][0]["Next"] == "ResolveModel"
    assert s["ResolveModel"]["Next"] == "BatchTransform"
    assert s["BatchTransform"]["Resource"].endswith(":sagemaker:createTransformJob.sync")
    assert s["BatchTransform"]["Next"] == "PublishExtractions"
    assert s["PublishExtractions"]["Next"] == "MonitorDrift"
    assert s["MonitorDrift"]["Next"] == "Done"
    assert s["NotifyFailure"]["Next"] == "ExtractionFailed"
    assert s["ExtractionFailed"]["Type"] == "Fail"
    # every Task retries and catches into the notification
    for name, st in s.items():
        if st["Type"] == "Task" and name != "NotifyFailure":
            assert st["Retry"], name
            assert st["Catch"][0]["ErrorEquals"] == ["States.ALL"], name
            assert st["Catch"][0]["Next"] == "NotifyFailure", name
    # no note text in the failure message: the error name only, not the cause
    msg = s["NotifyFailure"]["Parameters"]["Message"]
    assert "cause" not in json.dumps(msg).lower()
    assert msg["rerun_input"] == {"rerun_run_id.$": "$.run.run_id"}


def test_batch_transform_jsonlines_encrypted_from_stage_output(definition):
    p = definition["States"]["BatchTransform"]["Parameters"]
    assert p["ModelName.$"] == "$.model.model_name"
    assert p["TransformJobName.$"] == "$.stage.transform_job_name"
    assert p["BatchStrategy"] == "MultiRecord"
    assert p["TransformInput"]["ContentType"] == "application/jsonlines"
    assert p["TransformInput"]["SplitType"] == "Line"
    assert p["TransformOutput"]["AssembleWith"] == "Line"
    assert p["TransformOutput"]["KmsKeyId"] and p["TransformResources"]["VolumeKmsKeyId"]


def test_asl_validator_accepts_the_definition(definition, tmp_path):
    if not ASL_VALIDATOR.exists():
        pytest.skip("asl-validator missing: run `npm ci`")
    path = tmp_path / "extraction.asl.json"
    path.write_text(json.dumps(definition))
    result = subprocess.run([str(ASL_VALIDATOR), "--json-path", str(path)],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_new_notes_rule_starts_the_state_machine(synth):
    stack = synth.stacks.extraction
    rules = synth.resources(stack, "AWS::Events::Rule").values()
    (rule,) = [r for r in rules if "EventPattern" in r["Properties"]]  # + the capture schedule
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["detail"]["object"]["key"] == [{"prefix": "raw/notes/"}]
    (target,) = rule["Properties"]["Targets"]
    sm_id = stack.resolve(stack.state_machine.node.default_child.logical_id)
    assert target["Arn"] == {"Ref": sm_id}
    assert "RoleArn" in target


def test_lambdas_in_vpc_with_pandas_and_core_layers_and_names(synth):
    stack = synth.stacks.extraction
    fns = {
        r["Properties"]["FunctionName"]: r["Properties"]
        for r in synth.resources(stack, "AWS::Lambda::Function").values()
    }
    assert set(fns) == set(stack.names.values()) - {stack.names["state_machine"]}
    param = synth.template(stack)["Parameters"]["AwsSdkPandasLayerArn"]
    assert "AWSSDKPandas-Python312-Arm64" in param["AllowedPattern"]
    for props in fns.values():
        assert props["Runtime"] == "python3.12" and props["Architectures"] == ["arm64"]
        assert "VpcConfig" in props and props["ReservedConcurrentExecutions"] >= 1
        assert {"Ref": "AwsSdkPandasLayerArn"} in props["Layers"]
    monitor = fns[stack.names["monitor"]]["Environment"]["Variables"]
    assert json.loads(monitor["STAGE_CONFIG"])["drift"]["moderate"] == (
        synth.stacks.config.drift.moderate
    )


def test_transform_model_role_has_no_managed_policies(synth):
    stack = synth.stacks.extraction
    for role in synth.resources(stack, "AWS::IAM::Role").values():
        assert not role["Properties"].get("ManagedPolicyArns", []) or all(
            "aws:policy" not in json.dumps(a) for a in role["Properties"]["ManagedPolicyArns"]
        )
