"""Token resolution of synthesized templates (no CDK needed: hand-made template fragments)."""

from __future__ import annotations

import pytest

from clinical_ner_local.cfn import (
    CloudAssembly,
    TemplateResolver,
    UnresolvedTokenError,
    resolve_definition,
)

TEMPLATE = {
    "Parameters": {"BootstrapVersion": {"Type": "String", "Default": "/cdk/version"}},
    "Resources": {
        "GateFn12345678": {
            "Type": "AWS::Lambda::Function",
            "Properties": {"FunctionName": "clinical-ner-dev-gate", "Handler": "handler.handler",
                           "Environment": {"Variables": {
                               "TOPIC": {"Ref": "Topic0000AAAA"},
                               "LAKE": {"Fn::ImportValue": "Lake:Ref"}}}},
        },
        "Topic0000AAAA": {"Type": "AWS::SNS::Topic", "Properties": {}},
        "JobBBBB1111": {"Type": "AWS::Glue::Job", "Properties": {"Name": "prep-job"}},
        "Machine0000CCCC": {
            "Type": "AWS::StepFunctions::StateMachine",
            "Properties": {
                "StateMachineName": "training",
                "DefinitionString": {"Fn::Join": ["", [
                    '{"StartAt":"G","States":{"G":{"Type":"Task","Resource":"',
                    {"Fn::GetAtt": ["GateFn12345678", "Arn"]},
                    '","Parameters":{"topic":"', {"Ref": "Topic0000AAAA"},
                    '","job":"', {"Ref": "JobBBBB1111"},
                    '","image":"', {"Fn::Sub": "${AWS::AccountId}.dkr.ecr.${AWS::Region}."
                                              "${AWS::URLSuffix}/repo:tag"},
                    '","quoted":"', {"Ref": "Quoted"},
                    '","p":"arn:', {"Ref": "AWS::Partition"}, '"},"End":true}}}',
                ]]},
            },
        },
    },
}  # fmt: skip


def test_definition_tokens_resolve_to_local_physical_values():
    resolver = TemplateResolver(TEMPLATE, stack_name="App-Training",
                                overrides={"Quoted": 'say "hi"'})  # fmt: skip
    definition = resolve_definition(TEMPLATE["Resources"]["Machine0000CCCC"], resolver)
    state = definition["States"]["G"]
    assert state["Resource"] == (
        "arn:aws:lambda:us-east-1:123456789012:function:clinical-ner-dev-gate"
    )
    assert state["Parameters"] == {
        "topic": "arn:aws:sns:us-east-1:123456789012:Topic0000AAAA",
        "job": "prep-job",
        "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/repo:tag",
        "quoted": 'say "hi"',  # escaped inside the JSON text, intact after parsing
        "p": "arn:aws",
    }


def test_tracking_server_arn_is_what_the_register_lambda_gets():
    from clinical_ner.pipeline.tracking import is_tracking_server_arn

    template = {"Resources": {"MlflowTrackingServer": {
        "Type": "AWS::SageMaker::MlflowTrackingServer",
        "Properties": {"TrackingServerName": "clinical-ner-dev-mlflow"},
    }}}  # fmt: skip
    arn = TemplateResolver(template).resolve(
        {"Fn::GetAtt": ["MlflowTrackingServer", "TrackingServerArn"]}
    )
    assert arn == (
        "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/clinical-ner-dev-mlflow"
    )
    assert is_tracking_server_arn(arn)


def test_unknown_tokens_fail_loudly():
    resolver = TemplateResolver(TEMPLATE)
    with pytest.raises(UnresolvedTokenError, match="Nope"):
        resolver.resolve({"Ref": "Nope"})
    with pytest.raises(UnresolvedTokenError, match="Fn::If"):
        resolver.resolve({"Fn::If": ["Cond", "a", "b"]})
    with pytest.raises(UnresolvedTokenError, match=r"JobBBBB1111\.Weird"):
        resolver.resolve({"Fn::GetAtt": ["JobBBBB1111", "Weird"]})
    with pytest.raises(UnresolvedTokenError, match="ImportValue"):
        resolver.resolve({"Fn::ImportValue": "x"})


def test_assembly_resolves_imports_through_the_exporting_stack():
    lake = {
        "Resources": {"Lake5F1B88EA": {"Type": "AWS::S3::Bucket", "Properties": {}}},
        "Outputs": {"O": {"Value": {"Ref": "Lake5F1B88EA"}, "Export": {"Name": "Lake:Ref"}}},
    }
    assembly = CloudAssembly({"App-DataLake": lake, "App-Training": TEMPLATE})
    assembly.set_overrides("DataLake", {"Lake5F1B88EA": "clinical-ner-local-lake"})
    assert assembly.find_resource("DataLake", "AWS::S3::Bucket", "Lake") == "Lake5F1B88EA"
    (fn,) = assembly.lambda_functions("Training")
    assert fn.environment == {
        "TOPIC": "arn:aws:sns:us-east-1:123456789012:Topic0000AAAA",
        "LAKE": "clinical-ner-local-lake",
    }
    with pytest.raises(UnresolvedTokenError, match="Ref Quoted"):
        assembly.state_machine("Training")
    assembly.set_overrides("Training", {"Quoted": "q"})
    info = assembly.state_machine("Training")
    assert (info.name, info.logical_id) == ("training", "Machine0000CCCC")
    assert info.definition["StartAt"] == "G"
