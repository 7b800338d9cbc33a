"""DataLakeStack: encryption, public access, TLS-only policies, versioning, lifecycle, logs."""

from __future__ import annotations

import json

import pytest


def _buckets(synth):
    return synth.resources(synth.stacks.data_lake, "AWS::S3::Bucket")


def _logical(synth, construct):
    return synth.stacks.data_lake.get_logical_id(construct.node.default_child)


def test_key_rotates_and_logs_use_is_scoped(synth):
    (key,) = synth.resources(synth.stacks.data_lake, "AWS::KMS::Key").values()
    assert key["Properties"]["EnableKeyRotation"] is True
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    logs = [s for s in statements if s.get("Sid") == "AllowCloudWatchLogsOfThisAccount"]
    assert len(logs) == 1
    assert "kms:EncryptionContext:aws:logs:arn" in logs[0]["Condition"]["ArnLike"]
    # No statement other than the account root's administrative one grants kms:* to anyone.
    for s in statements:
        if s["Action"] == "kms:*":
            assert "root" in json.dumps(s["Principal"])


def test_every_bucket_blocks_public_access_and_enforces_ownership(synth):
    buckets = _buckets(synth)
    assert len(buckets) == 3
    for b in buckets.values():
        p = b["Properties"]
        assert p["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        assert p["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
        assert p["VersioningConfiguration"] == {"Status": "Enabled"}


def test_encryption_cmk_for_data_sse_s3_only_for_access_logs(synth):
    buckets = _buckets(synth)
    lake = synth.stacks.data_lake
    key_id = lake.get_logical_id(lake.key.node.default_child)
    for name in (_logical(synth, lake.lake), _logical(synth, lake.athena_results)):
        (rule,) = buckets[name]["Properties"]["BucketEncryption"][
            "ServerSideEncryptionConfiguration"
        ]
        default = rule["ServerSideEncryptionByDefault"]
        assert default["SSEAlgorithm"] == "aws:kms"
        assert default["KMSMasterKeyID"] == {"Fn::GetAtt": [key_id, "Arn"]}
        assert rule["BucketKeyEnabled"] is True
    logs = buckets[_logical(synth, lake.access_logs)]["Properties"]
    (rule,) = logs["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


def test_bucket_policies_deny_plain_http_and_old_tls(synth):
    policies = synth.resources(synth.stacks.data_lake, "AWS::S3::BucketPolicy")
    assert len(policies) == 3
    for policy in policies.values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        denies = [s for s in statements if s["Effect"] == "Deny"]
        assert any(
            s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            and s["Action"] == "s3:*"
            and s["Principal"] == {"AWS": "*"}
            for s in denies
        )
        assert any(s["Condition"] == {"NumericLessThan": {"s3:TlsVersion": 1.2}} for s in denies)
        # Nothing is granted to everyone.
        assert not [s for s in statements if s["Effect"] == "Allow" and s["Principal"] == "*"]


def test_server_access_logging_and_eventbridge(synth):
    lake = synth.stacks.data_lake
    buckets = _buckets(synth)
    logs_ref = {"Ref": _logical(synth, lake.access_logs)}
    lake_props = buckets[_logical(synth, lake.lake)]["Properties"]
    assert lake_props["LoggingConfiguration"] == {
        "DestinationBucketName": logs_ref,
        "LogFilePrefix": "lake/",
    }
    athena = buckets[_logical(synth, lake.athena_results)]["Properties"]
    assert athena["LoggingConfiguration"]["DestinationBucketName"] == logs_ref
    assert lake_props["NotificationConfiguration"] == {
        "EventBridgeConfiguration": {"EventBridgeEnabled": True}
    }
    # EventBridge is switched on natively: no notification custom resource, no Lambda.
    template = synth.template(lake)
    assert not [
        r
        for r in template["Resources"].values()
        if r["Type"] in ("AWS::Lambda::Function", "Custom::S3BucketNotifications")
    ]


def test_lake_lifecycle_follows_the_stage_config(synth):
    cfg = synth.stacks.config
    lake = synth.stacks.data_lake
    rules = {
        r["Id"]: r
        for r in _buckets(synth)[_logical(synth, lake.lake)]["Properties"][
            "LifecycleConfiguration"
        ]["Rules"]
    }
    assert rules["abort-incomplete-uploads"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 7
    }
    raw = rules["raw-noncurrent-versions"]
    assert raw["Prefix"] == "raw/" and "ExpirationInDays" not in raw  # raw is never expired
    assert raw["NoncurrentVersionExpiration"]["NoncurrentDays"] == cfg.retention.raw_noncurrent_days
    quarantine = rules["quarantine-expiry"]
    assert quarantine["Prefix"] == cfg.lake.quarantine
    assert quarantine["ExpirationInDays"] == cfg.retention.quarantine_days
    for rid, prefix in (
        ("curated-noncurrent-versions", "curated/"),
        ("models-noncurrent-versions", "models/"),
        ("experiments-noncurrent-versions", "mlflow/"),  # MLflow run artifacts are kept
    ):
        assert rules[rid]["Prefix"] == prefix
        assert "ExpirationInDays" not in rules[rid]  # current models/curated data never expire
        assert (
            rules[rid]["NoncurrentVersionExpiration"]["NoncurrentDays"]
            == cfg.retention.derived_noncurrent_days
        )
    ia = rules["inference-tiering"].get("Transitions", [])
    if cfg.retention.inference_ia_after_days:
        assert ia == [
            {
                "StorageClass": "STANDARD_IA",
                "TransitionInDays": cfg.retention.inference_ia_after_days,
            }
        ]
    else:
        assert ia == []
    capture = rules["capture-expiry"]  # endpoint data capture holds note text
    assert capture["Prefix"] == f"{cfg.lake.monitoring}capture/"
    assert capture["ExpirationInDays"] == cfg.retention.capture_days
    assert capture["NoncurrentVersionExpiration"]["NoncurrentDays"] == 1
    expiring = [r.get("Prefix") for r in rules.values() if "ExpirationInDays" in r]
    assert expiring == [cfg.lake.quarantine, f"{cfg.lake.monitoring}capture/"]


@pytest.mark.parametrize(("stage", "policy"), [("dev", "Delete"), ("prod", "Retain")])
def test_retention_on_stack_deletion(stage, policy, dev, prod):
    synth = {"dev": dev, "prod": prod}[stage]
    template = synth.template(synth.stacks.data_lake)
    for r in template["Resources"].values():
        if r["Type"] in ("AWS::S3::Bucket", "AWS::KMS::Key"):
            assert r["DeletionPolicy"] == policy


def test_zero_retention_periods_drop_rules_instead_of_emitting_empty_ones():
    """A period of 0 means keep forever: the rule disappears rather than becoming invalid."""
    import dataclasses

    from aws_cdk import App
    from aws_cdk.assertions import Template

    from clinical_ner.pipeline.stage_config import load_stage_config
    from stacks.data_lake import DataLakeStack
    from stacks.stage import cdk_json_context

    cfg = load_stage_config("dev")
    cfg = dataclasses.replace(
        cfg, retention=dataclasses.replace(cfg.retention, derived_noncurrent_days=0)
    )
    stack = DataLakeStack(App(context=cdk_json_context()), "ZeroRetention", config=cfg)
    buckets = Template.from_stack(stack).find_resources("AWS::S3::Bucket")
    (lake,) = [b for k, b in buckets.items() if k.startswith("Lake")]
    rules = {r["Id"]: r for r in lake["Properties"]["LifecycleConfiguration"]["Rules"]}
    assert "curated-noncurrent-versions" not in rules
    assert "inference-tiering" not in rules  # dev has no IA transition either
    actions = (
        "AbortIncompleteMultipartUpload",
        "ExpirationInDays",
        "ExpiredObjectDeleteMarker",
        "NoncurrentVersionExpiration",
        "Transitions",
    )
    assert all(any(a in r for a in actions) for r in rules.values())
