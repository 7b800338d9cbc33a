"""cdk-nag (AwsSolutions + HIPAA Security) on every synth, acknowledgement hygiene, cfn-lint,
and the real `cdk synth` CLI offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_s3 as s3

from stacks.checks import (
    RULE_PACK_PREFIXES,
    acknowledge,
    acknowledgements,
    add_compliance_checks,
    reason_problem,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
CFN_LINT = Path(sys.executable).with_name("cfn-lint")


def test_synth_passes_both_packs_with_no_findings(synth):
    report = json.loads((synth.outdir / "validation-report.json").read_text())
    assert report["pluginReports"] == []
    manifest = (synth.outdir / "manifest.json").read_text()
    for marker in ("AwsSolutions-", "HIPAA.Security-"):
        assert marker not in manifest, "cdk-nag left a warning or error in the assembly"


def test_checks_really_run_and_fail_a_noncompliant_stack(tmp_path):
    app = App(outdir=str(tmp_path))
    stack = Stack(app, "Bad")
    s3.Bucket(stack, "Plain")  # no logging, no TLS policy, no CMK, no versioning
    add_compliance_checks(app)
    with pytest.raises(Exception, match="ValidationFailed") as info:
        app.synth()
    del info
    text = (tmp_path / "validation-report.json").read_text()
    for rule in (
        "AwsSolutions-S1",
        "AwsSolutions-S10",
        "HIPAA.Security-S3BucketVersioningEnabled",
        "HIPAA.Security-S3DefaultEncryptionKMS",
    ):
        assert rule in text


def test_every_acknowledgement_names_rule_resource_and_specific_reason(synth):
    acks = acknowledgements(synth.app)
    assert acks, "expected the documented acknowledgements"
    stack_paths = {s.node.path for s in synth.stacks.all()}
    for ack in acks:
        assert ack.rule.startswith(RULE_PACK_PREFIXES)
        assert ack.path not in stack_paths and "/" in ack.path  # a resource, not a stack
        assert reason_problem(ack.rule, ack.reason) is None, (ack.rule, ack.path)
    assert len({(a.rule, a.path) for a in acks}) == len(acks)


def test_acknowledged_findings_are_exactly_the_documented_ones(dev):
    got = sorted((a.path.split("/", 1)[1], a.rule) for a in acknowledgements(dev.app))
    doc = "\n".join(
        (REPO_ROOT / "docs" / name).read_text()
        for name in ("infrastructure.md", "training-pipeline.md", "monitoring.md")
    )
    lake_export = f"{dev.stacks.data_lake.stack_name}-LakeBucketArn/"
    for path, rule in got:
        assert path.split("/")[-1] in doc, path  # the resource is named
        if lake_export in rule:  # one per lake prefix, documented as a pattern + prefix list
            prefix = rule.split(lake_export, 1)[1].removesuffix("*]")
            assert "`AwsSolutions-IAM5[Resource::<stack>-LakeBucketArn/<prefix>*]`" in doc
            assert f"`{prefix}`" in doc, prefix
        else:
            assert f"`{rule}`" in doc, rule
    rules = {r.split("[")[0] for _, r in got}
    assert rules == {
        "AwsSolutions-S1",
        "HIPAA.Security-S3BucketLoggingEnabled",
        "HIPAA.Security-S3DefaultEncryptionKMS",
        "HIPAA.Security-S3BucketReplicationEnabled",
        "AwsSolutions-IAM5",
        # training + serving stacks (docs/training-pipeline.md)
        "AwsSolutions-L1",
        "HIPAA.Security-LambdaDLQ",
        "HIPAA.Security-IAMNoInlinePolicy",
        "HIPAA.Security-VPCDefaultSecurityGroupClosed",
        # monitoring + extraction stacks (docs/monitoring.md)
        "AwsSolutions-SQS3",
        "HIPAA.Security-LambdaInsideVPC",
        # review stack (docs/infrastructure.md): the static page's public routes, PITR
        "AwsSolutions-APIG4",
        "HIPAA.Security-DynamoDBInBackupPlan",
    }


@pytest.mark.parametrize(
    "reason",
    [
        "",
        "   ",
        "n/a",
        "False positive",
        "Not needed.",
        "ok",
        "TODO: fix later",
        "short but specific-ish reason",
        "AwsSolutions-S1 is acknowledged for this bucket here, ok",
    ],
)
def test_generic_reasons_are_refused(reason, tmp_path):
    stack = Stack(App(outdir=str(tmp_path)), "S")
    bucket = s3.Bucket(stack, "B")
    with pytest.raises(ValueError):
        acknowledge(bucket, "AwsSolutions-S1", reason)


def test_acknowledgements_must_target_a_resource_and_a_known_pack(tmp_path):
    app = App(outdir=str(tmp_path))
    stack = Stack(app, "S")
    reason = "A specific, long enough explanation of why this resource is an exception here."
    with pytest.raises(ValueError, match="on the resource"):
        acknowledge(stack, "AwsSolutions-S1", reason)
    with pytest.raises(ValueError, match="not a rule"):
        acknowledge(s3.Bucket(stack, "B"), "S1", reason)


def _cfn_lint(paths: list[Path]) -> subprocess.CompletedProcess:
    if not CFN_LINT.exists():
        pytest.skip("cfn-lint missing: pip install '.[infra]'")
    return subprocess.run(
        [str(CFN_LINT), "--format", "parseable", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cfn_lint_finds_no_errors(dev, prod):
    templates = dev.templates() + prod.templates()
    assert len(templates) == len(dev.stacks.all()) + len(prod.stacks.all())
    result = _cfn_lint(templates)
    errors = [line for line in result.stdout.splitlines() if ":E" in line]
    assert not errors, "\n".join(errors)
    assert result.returncode & 2 == 0, result.stdout + result.stderr  # bit 2 = errors


def test_cfn_lint_catches_a_broken_template(tmp_path):
    bad = tmp_path / "bad.template.json"
    bad.write_text(
        json.dumps(
            {
                "Resources": {
                    "B": {"Type": "AWS::S3::Bucket", "Properties": {"VersioningConfiguration": 7}}
                }
            }
        )
    )
    result = _cfn_lint([bad])
    assert result.returncode & 2 and ":E" in result.stdout


def test_cdk_cli_synth_offline(tmp_path):
    npx = shutil.which("npx")
    cli = REPO_ROOT / "node_modules" / ".bin" / "cdk"
    if npx is None or not cli.exists():
        pytest.skip("cdk CLI not installed: run `npm ci` in the repository root")
    env = {
        **os.environ,
        "CDK_DISABLE_CLI_TELEMETRY": "true",
        "CDK_DISABLE_VERSION_CHECK": "1",
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [
            npx,
            "--no-install",
            "cdk",
            "synth",
            "--no-notices",
            "--quiet",
            "--app",
            f"{sys.executable} app.py",
            "--output",
            str(tmp_path / "out"),
            "-c",
            "stage=staging",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    names = sorted(p.name for p in (tmp_path / "out").glob("*.template.json"))
    assert set(names) >= {
        "ClinicalNer-Staging-DataLake.template.json",
        "ClinicalNer-Staging-DataPrep.template.json",
        "ClinicalNer-Staging-Serving.template.json",
        "ClinicalNer-Staging-Training.template.json",
    }
