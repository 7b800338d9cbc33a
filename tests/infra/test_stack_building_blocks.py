"""The shared stack building blocks (stacks.common, stacks.aspects, step_functions.base) on
the synthesized app: one layer build, Powertools on every function, one logs-key policy, one
retry policy, and the Aspects that fail a synth when a function or log group breaks a rule."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from aws_cdk import App, Aspects, Duration, Stack
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk.assertions import Annotations, Match

from clinical_ner.pipeline.monitoring import NAMESPACE
from stacks.aspects import PREFIX, StageConventions
from stacks.common import LOGS_KEY_ACTIONS, POWERTOOLS_LAYER_VERSION

REPO_ROOT = Path(__file__).resolve().parents[2]
POWERTOOLS = "AWSLambdaPowertoolsPythonV3-python312-arm64"


def _functions(synth):
    for stack in synth.stacks.all():
        for lid, fn in synth.resources(stack, "AWS::Lambda::Function").items():
            yield stack, lid, fn["Properties"]


def test_every_function_has_core_and_powertools_layers_and_env(synth):
    seen = 0
    for stack, lid, props in _functions(synth):
        layers = props["Layers"]
        core = [x for x in layers if "Ref" in x and x["Ref"].startswith("CoreLayer")]
        assert len(core) == 1, (stack.stack_name, lid)
        powertools = [x for x in layers if POWERTOOLS in json.dumps(x)]
        assert len(powertools) == 1, (stack.stack_name, lid)
        arn = json.dumps(powertools[0])
        assert '{"Ref": "AWS::Region"}' in arn and f":{POWERTOOLS_LAYER_VERSION}" in arn
        assert ":017000801446:layer:" in arn
        env = props["Environment"]["Variables"]
        assert env["POWERTOOLS_SERVICE_NAME"] == "clinical-ner"
        assert env["POWERTOOLS_METRICS_NAMESPACE"] == NAMESPACE
        assert props["Architectures"] == ["arm64"] and props["Runtime"] == "python3.12"
        seen += 1
    # 5 training steps, 4 extraction steps, the retraining trigger, the review API
    assert seen == 11


def test_one_core_layer_per_stack_from_one_zip(synth):
    assets = set()
    stacks = synth.stacks
    for stack in (stacks.training, stacks.monitoring, stacks.extraction, stacks.review):
        layers = synth.resources(stack, "AWS::Lambda::LayerVersion")
        assert len(layers) == 1, stack.stack_name
        (layer,) = layers.values()
        assets.add(json.dumps(layer["Properties"]["Content"]["S3Key"]))
    assert len(assets) == 1  # the same content-addressed zip in every stack


def test_every_logs_key_has_the_one_logs_statement(synth):
    keys = 0
    for stack in synth.stacks.all():
        for key in synth.resources(stack, "AWS::KMS::Key").values():
            statements = key["Properties"]["KeyPolicy"]["Statement"]
            logs_stmts = [s for s in statements if "logs." in json.dumps(s.get("Principal"))]
            if not logs_stmts:
                continue
            keys += 1
            (stmt,) = logs_stmts
            assert stmt["Sid"] == "AllowCloudWatchLogsOfThisAccount"
            assert sorted(stmt["Action"]) == sorted(LOGS_KEY_ACTIONS)
            assert "kms:EncryptionContext:aws:logs:arn" in stmt["Condition"]["ArnLike"]
            assert key["Properties"]["EnableKeyRotation"] is True
    # the data key (Glue, extraction and monitoring logs), the pipeline key, the review key
    assert keys == 3


def test_both_state_machines_share_one_retry_policy(synth):
    from tests.infra.test_training_stack import resolve_definition

    policies = set()
    lambda_timeouts = {}
    for stack in (synth.stacks.training, synth.stacks.extraction):
        (sm,) = synth.resources(stack, "AWS::StepFunctions::StateMachine").values()
        states = resolve_definition(sm["Properties"]["DefinitionString"])["States"]
        for name, st in states.items():
            if st["Type"] != "Task":
                continue
            first = st["Retry"][0]
            policies.add(
                (
                    first["IntervalSeconds"],
                    first["MaxAttempts"],
                    first["BackoffRate"],
                    first["MaxDelaySeconds"],
                )
            )
            if ":lambda:" in st["Resource"] or "lambda:invoke" in st["Resource"]:
                lambda_timeouts[name] = st["TimeoutSeconds"]
    # ValidateNotes waits for a concurrent run (GLUE_BUSY_RETRY); every other first retrier
    # is TRANSIENT_RETRY.
    assert policies == {(5, 4, 2, 300), (30, 6, 2, 300)}
    # A Lambda task waits for its function's own timeout plus two minutes.
    assert lambda_timeouts["Gate"] == 3 * 60 + 120
    assert lambda_timeouts["ResolveModel"] == 2 * 60 + 120
    assert lambda_timeouts["PublishExtractions"] == 15 * 60 + 120


def test_no_stack_module_imports_another_stack_module():
    stack_modules = {
        "stacks.analytics",
        "stacks.data_lake",
        "stacks.data_prep",
        "stacks.extraction",
        "stacks.monitoring",
        "stacks.review",
        "stacks.serving",
        "stacks.training",
    }
    for module in stack_modules:
        tree = ast.parse((REPO_ROOT / (module.replace(".", "/") + ".py")).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in stack_modules:
                names = {a.name for a in node.names}
                # Receiving another stack as a constructor argument (its class, for the type)
                # is allowed; helpers from its module are not.
                assert all(n.endswith("Stack") for n in names), (module, node.module, names)


def _app_with(build) -> Stack:
    app = App()
    stack = Stack(app, "Probe")
    build(stack)
    Aspects.of(app).add(StageConventions())
    app.synth()
    return stack


def test_aspects_flag_a_bare_function_and_log_group():
    def build(stack: Stack) -> None:
        logs.LogGroup(stack, "Plain")  # no key, CDK's default retention
        lambda_.Function(
            stack,
            "Bare",
            runtime=lambda_.Runtime.PYTHON_3_12,
            handler="handler.handler",
            code=lambda_.Code.from_inline("def handler(e, c): return 1"),
            timeout=Duration.seconds(10),
        )

    annotations = Annotations.from_stack(_app_with(build))
    errors = annotations.find_error("*", Match.string_like_regexp(f"^{PREFIX}"))
    messages = {e.entry.data for e in errors}
    assert any("core layer" in m for m in messages)
    assert any("Powertools layer" in m for m in messages)
    assert any("reserved concurrency" in m for m in messages)
    assert any("does not log to a log group" in m for m in messages)
    assert any("not KMS-encrypted" in m for m in messages)


@pytest.mark.parametrize("stage", ["dev"])
def test_the_app_breaks_no_convention(dev, stage):
    for stack in dev.stacks.all():
        errors = Annotations.from_stack(stack).find_error(
            "*", Match.string_like_regexp(f"^{PREFIX}")
        )
        assert errors == [], [e.entry.data for e in errors]
