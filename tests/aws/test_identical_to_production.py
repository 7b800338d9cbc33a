"""A retrained model identical to production (same model_version) is not registered.

The register Lambda in process against a moto server: the first model is registered and
approved; a retrain with the same model_version creates no package and says so; a retrain
with another version is registered as usual.
"""

from __future__ import annotations

import importlib.util
import io
import json
import tarfile
from pathlib import Path

import boto3
import pytest

from clinical_ner.pipeline.stage_config import load_stage_config

REPO_ROOT = Path(__file__).resolve().parents[2]
BUCKET = "lake-identical"
GROUP = "clinical-ner-dev-identical"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/cdk-assets:abc"


def handler(name: str):
    spec = importlib.util.spec_from_file_location(
        f"lambda_{name}_identical", REPO_ROOT / "lambdas" / name / "handler.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


def register(s3, job: str, model_version: str) -> dict:
    block = {"ents_f": 0.7, "per_label": {"DISEASE": {"f": 0.7}, "TREATMENT": {"f": 0.7}}}
    metrics = {"model_version": model_version, "labels": ["DISEASE", "TREATMENT"]}
    metrics |= {"dev": block, "test": block}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = json.dumps(metrics).encode()
        info = tarfile.TarInfo("metrics.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    key = f"models/{job}/output/model.tar.gz"
    s3.put_object(Bucket=BUCKET, Key=key, Body=buf.getvalue())
    return handler("register_model")(
        {
            "training": {"job_name": job, "model_data_url": f"s3://{BUCKET}/{key}", "image": IMAGE},
            "dataset": {"dataset_version": "ds-0123456789abcdef"},
            "trigger": "drift",
            "execution_id": "arn:aws:states:us-east-1:123456789012:execution:sm:run-1",
        }
    )


@pytest.fixture
def env(aws, monkeypatch):
    monkeypatch.setenv("MODEL_PACKAGE_GROUP", GROUP)
    monkeypatch.setenv("LAKE_BUCKET", BUCKET)
    monkeypatch.setenv("STAGE_CONFIG", load_stage_config("dev").to_json())
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    sm = boto3.client("sagemaker")
    sm.create_model_package_group(ModelPackageGroupName=GROUP)
    return s3, sm


def _packages(sm) -> list[dict]:
    return sm.list_model_packages(ModelPackageGroupName=GROUP)["ModelPackageSummaryList"]


def test_a_retrain_identical_to_production_is_not_registered(env):
    s3, sm = env
    first = register(s3, "job-1", "m-abc")
    assert first["registered"] is True and first["identical_to_production"] is False
    # Not approved yet: nothing is in production, so the same version is no reason to skip.
    assert register(s3, "job-1b", "m-abc")["registered"] is True
    handler("approve_or_reject")(
        {"action": "approve", "model_package_arn": first["model_package_arn"], "gate": {}}
    )
    before = len(_packages(sm))

    same = register(s3, "job-2", "m-abc")
    assert same["identical_to_production"] is True and same["registered"] is False
    assert same["summary"] == "identical to production (m-abc), not registered"
    assert same["production_package_arn"] == first["model_package_arn"]
    assert "model_package_arn" not in same
    assert len(_packages(sm)) == before

    other = register(s3, "job-3", "m-def")
    assert other["registered"] is True and other["identical_to_production"] is False
    assert len(_packages(sm)) == before + 1
