"""DataPrepStack: Glue jobs, security configuration, catalog tables, least-privilege IAM."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from clinical_ner.data import data_prep as dp
from clinical_ner.data.schemas import QUARANTINE_SCHEMA
from stacks.packaging import build_core_zip, package_files

REPO_ROOT = Path(__file__).resolve().parents[2]
LAKE_ARN_IMPORT = {"Fn::ImportValue": "ClinicalNer-{stage}-DataLake-LakeBucketArn"}


def _jobs(synth):
    return {
        j["Properties"]["Name"]: j["Properties"]
        for j in synth.resources(synth.stacks.data_prep, "AWS::Glue::Job").values()
    }


def _asset_file(synth, s3_url: dict) -> Path:
    key = s3_url["Fn::Sub"].rsplit("/", 1)[1]
    return synth.outdir / f"asset.{key}"


def test_two_glue_5_jobs_with_security_configuration(synth):
    cfg = synth.stacks.config
    jobs = _jobs(synth)
    prefix = cfg.resource_prefix
    assert set(jobs) == {f"{prefix}-validate-notes", f"{prefix}-prepare-training-data"}
    (sec,) = synth.resources(synth.stacks.data_prep, "AWS::Glue::SecurityConfiguration").values()
    for job in jobs.values():
        assert job["GlueVersion"] == "5.0"
        assert job["Command"]["Name"] == "glueetl" and job["Command"]["PythonVersion"] == "3"
        assert job["SecurityConfiguration"] == sec["Properties"]["Name"]
        assert job["WorkerType"] == cfg.glue.worker_type
        assert job["NumberOfWorkers"] == cfg.glue.number_of_workers
        assert job["Timeout"] == cfg.glue.timeout_minutes
        assert job["ExecutionProperty"] == {"MaxConcurrentRuns": 1}
        args = job["DefaultArguments"]
        assert args["--job-bookmark-option"] == "job-bookmark-disable"
        assert args["--enable-continuous-cloudwatch-log"] == "true"
        assert args["--extra-py-files"]["Fn::Sub"].endswith(".zip")
        assert "--lake_root" in args


def test_security_configuration_encrypts_s3_logs_and_bookmarks_with_the_lake_key(synth):
    (sec,) = synth.resources(synth.stacks.data_prep, "AWS::Glue::SecurityConfiguration").values()
    enc = sec["Properties"]["EncryptionConfiguration"]
    assert enc["S3Encryptions"][0]["S3EncryptionMode"] == "SSE-KMS"
    assert enc["CloudWatchEncryption"]["CloudWatchEncryptionMode"] == "SSE-KMS"
    assert enc["JobBookmarksEncryption"]["JobBookmarksEncryptionMode"] == "CSE-KMS"
    arns = {
        json.dumps(enc["S3Encryptions"][0]["KmsKeyArn"]),
        json.dumps(enc["CloudWatchEncryption"]["KmsKeyArn"]),
        json.dumps(enc["JobBookmarksEncryption"]["KmsKeyArn"]),
    }
    assert len(arns) == 1 and "DataKey" in arns.pop()


def test_job_log_groups_are_encrypted_with_retention(synth):
    groups = synth.resources(synth.stacks.data_prep, "AWS::Logs::LogGroup")
    assert len(groups) == 2
    for g in groups.values():
        assert g["Properties"]["RetentionInDays"] == synth.stacks.config.retention.log_group_days
        assert "KmsKeyId" in g["Properties"]


def test_scripts_and_core_package_are_the_repository_files(synth):
    for name, job in _jobs(synth).items():
        script = _asset_file(synth, job["Command"]["ScriptLocation"])
        src = (
            REPO_ROOT
            / "glue_jobs"
            / f"{dp.VALIDATE_JOB if 'validate' in name else dp.PREPARE_JOB}.py"
        )
        assert script.read_bytes() == src.read_bytes()
        core = _asset_file(synth, job["DefaultArguments"]["--extra-py-files"])
        with zipfile.ZipFile(core) as zf:
            names = set(zf.namelist())
        assert {
            "clinical_ner/__init__.py",
            "clinical_ner/data/data_prep.py",
            "clinical_ner/data/notes.py",
            "clinical_ner/pipeline/stage_config.py",
            "clinical_ner/data/schemas.py",
        } <= names
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_core_zip_is_deterministic(tmp_path):
    a = build_core_zip(out_dir=tmp_path / "a")
    b = build_core_zip(out_dir=tmp_path / "b")
    assert a.name == b.name and a.read_bytes() == b.read_bytes()
    with zipfile.ZipFile(a) as zf:
        assert sorted(zf.namelist()) == [p.as_posix() for p in package_files()]


def test_jobs_install_nothing_at_start(synth):
    # The core zip imports spaCy lazily, so neither job needs PyPI from inside the VPC.
    for job in _jobs(synth).values():
        assert "--additional-python-modules" not in job["DefaultArguments"]


def _policies(synth):
    out = {}
    for res in synth.resources(synth.stacks.data_prep, "AWS::IAM::ManagedPolicy").values():
        desc = res["Properties"]["Description"]
        name = "validate_notes" if "validate-notes" in desc else "prepare_training_data"
        out[name] = res["Properties"]["PolicyDocument"]["Statement"]
    return out


def _object_prefixes(statement, stage) -> set[str]:
    """Lake prefixes of Fn::Join(import(lake ARN), '/prefix*') resources in a statement."""
    imp = {"Fn::ImportValue": LAKE_ARN_IMPORT["Fn::ImportValue"].format(stage=stage)}
    res = statement["Resource"]
    out = set()
    for r in res if isinstance(res, list) else [res]:
        parts = r["Fn::Join"][1]
        assert parts[0] == imp, f"object ARN not built on the lake bucket: {r}"
        assert parts[1].startswith("/") and parts[1].endswith("*")
        out.add(parts[1][1:-1])
    return out


def _by_sid(statements):
    return {s["Sid"]: s for s in statements}


EXPECTED = {
    "validate_notes": {
        "ReadInputs": {
            "raw/notes/",
            "curated/notes/",
            "quarantine/",
            "_state/validate_notes/",
            "_state/glue-temp/validate_notes/",
        },
        "WriteOutputs": {
            "curated/notes/",
            "quarantine/",
            "_state/validate_notes/",
            "_runs/validate_notes/",
            "_state/glue-temp/validate_notes/",
        },
        "DeleteSparkTemporaries": {
            "curated/notes/",
            "quarantine/",
            "_state/validate_notes/",
            "_state/glue-temp/validate_notes/",
        },
    },
    "prepare_training_data": {
        "ReadInputs": {
            "raw/annotations/",
            "curated/training/",
            "_state/glue-temp/prepare_training_data/",
        },
        "WriteOutputs": {
            "curated/training/",
            "_runs/prepare_training_data/",
            "_state/glue-temp/prepare_training_data/",
        },
        "DeleteSparkTemporaries": {"_state/glue-temp/prepare_training_data/"},
    },
}


@pytest.mark.parametrize("job", sorted(EXPECTED))
def test_s3_access_is_limited_to_the_jobs_prefixes(synth, job):
    stage = synth.stacks.config.stage.value.capitalize()
    statements = _by_sid(_policies(synth)[job])
    for sid, prefixes in EXPECTED[job].items():
        assert _object_prefixes(statements[sid], stage) == prefixes, sid
    writes = EXPECTED[job]["WriteOutputs"] | EXPECTED[job]["DeleteSparkTemporaries"]
    assert not [p for p in writes if p.startswith("raw/")], "raw data must stay immutable"
    listing = statements["ListOwnPrefixes"]
    assert listing["Action"] == "s3:ListBucket"
    assert set(listing["Condition"]["StringLike"]["s3:prefix"]) >= {
        p + "*" for p in EXPECTED[job]["ReadInputs"]
    }


def test_prepare_role_cannot_delete_datasets(synth):
    statements = _by_sid(_policies(synth)["prepare_training_data"])
    stage = synth.stacks.config.stage.value.capitalize()
    assert "curated/training/" not in _object_prefixes(statements["DeleteSparkTemporaries"], stage)


def test_no_wildcard_actions_and_resource_star_only_for_metrics(synth):
    for statements in _policies(synth).values():
        for s in statements:
            actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
            assert all("*" not in a for a in actions), actions
            if s["Resource"] == "*":
                assert actions == ["cloudwatch:PutMetricData"]
                assert s["Condition"] == {"StringEquals": {"cloudwatch:namespace": "Glue"}}
        kms = _by_sid(statements)["UseLakeKey"]
        assert "Fn::ImportValue" in json.dumps(kms["Resource"])


def test_roles_have_no_inline_or_aws_managed_policies(synth):
    template = synth.template(synth.stacks.data_prep)
    assert not [r for r in template["Resources"].values() if r["Type"] == "AWS::IAM::Policy"]
    for role in synth.resources(synth.stacks.data_prep, "AWS::IAM::Role").values():
        props = role["Properties"]
        assert "Policies" not in props and "ManagedPolicyArns" not in props
        (stmt,) = props["AssumeRolePolicyDocument"]["Statement"]
        assert stmt["Principal"] == {"Service": "glue.amazonaws.com"}


@pytest.mark.parametrize(
    ("table", "schema"),
    [("curated_notes", dp.CURATED_NOTE_SCHEMA), ("quarantine", QUARANTINE_SCHEMA)],
)
def test_catalog_tables_follow_the_code_contracts(synth, table, schema):
    tables = {
        t["Properties"]["TableInput"]["Name"]: t["Properties"]
        for t in synth.resources(synth.stacks.data_prep, "AWS::Glue::Table").values()
    }
    props = tables[table]
    assert props["DatabaseName"] == f"clinical_ner_{synth.stacks.config.stage.value}"
    ti = props["TableInput"]
    cols = [c["Name"] for c in ti["StorageDescriptor"]["Columns"]]
    assert cols == [n for n in schema.names if n != "dt"]
    assert [k["Name"] for k in ti["PartitionKeys"]] == ["dt"]
    assert ti["Parameters"]["projection.enabled"] == "true"
    assert ti["Parameters"]["classification"] == "parquet"
    assert all(len(c.get("Comment", "")) <= 255 for c in ti["StorageDescriptor"]["Columns"])
