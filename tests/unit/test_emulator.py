"""The embedded AWS emulator: loopback only, boto3 wired to it, data-lake layout, clean stop."""

from __future__ import annotations

import os
import socket

import pytest

pytest.importorskip("moto.server", reason="moto[server] missing: pip install 'moto[server]'")

from clinical_ner.pipeline.stage_config import LAKE
from clinical_ner_local.emulator import LocalAws, create_data_lake


@pytest.fixture(scope="module")
def aws():
    with LocalAws() as emulator:
        yield emulator


def test_binds_loopback_on_a_free_port(aws):
    assert aws.endpoint_url.startswith("http://127.0.0.1:")
    assert aws.port > 0


def test_s3_put_get_in_the_data_lake(aws):
    lake = create_data_lake(aws)
    again = create_data_lake(aws)  # idempotent
    assert again == lake
    s3 = aws.client("s3")
    names = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert {lake.lake, lake.athena_results, lake.access_logs} <= names
    key = f"{LAKE.raw_notes}synthetic/note-1.txt"
    put = s3.put_object(Bucket=lake.lake, Key=key, Body=b"Patient denies chest pain.")
    assert put["ServerSideEncryption"] == "aws:kms"
    assert put["VersionId"]
    got = s3.get_object(Bucket=lake.lake, Key=key)
    assert got["Body"].read() == b"Patient denies chest pain."
    assert lake.uri("curated_notes", "dt=2024-01-01") == (
        f"s3://{lake.lake}/curated/notes/dt=2024-01-01"
    )
    assert set(lake.prefixes()) == set(LAKE.prefixes())


def test_activated_environment_reaches_plain_boto3_and_is_restored(aws):
    import boto3

    before = os.environ.get("AWS_ENDPOINT_URL")
    with aws.activated() as env:
        assert os.environ["AWS_ENDPOINT_URL"] == aws.endpoint_url == env["AWS_ENDPOINT_URL"]
        s3 = boto3.client("s3")  # what handler code does
        s3.create_bucket(Bucket="handler-bucket")
        assert "handler-bucket" in {b["Name"] for b in aws.client("s3").list_buckets()["Buckets"]}
    assert os.environ.get("AWS_ENDPOINT_URL") == before


def test_stops_cleanly_and_frees_the_port():
    emulator = LocalAws().start()
    port = emulator.port
    emulator.client("s3").list_buckets()
    emulator.stop()
    assert not emulator.running
    with socket.socket() as sock:  # nothing listens any more
        assert sock.connect_ex(("127.0.0.1", port)) != 0
    emulator.stop()  # idempotent


def test_update_endpoint_switches_to_the_new_config(aws):
    from botocore.exceptions import ClientError

    sm = aws.client("sagemaker")
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/ner:1"
    role = "arn:aws:iam::123456789012:role/model"
    for n in ("1", "2"):
        sm.create_model(
            ModelName=f"m{n}",
            PrimaryContainer={"Image": image, "ModelDataUrl": f"s3://b/{n}/model.tar.gz"},
            ExecutionRoleArn=role,
        )
        sm.create_endpoint_config(
            EndpointConfigName=f"c{n}",
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": f"m{n}",
                    "ServerlessConfig": {"MemorySizeInMB": 3072, "MaxConcurrency": 2},
                }
            ],
        )
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="c1")
    arn = sm.update_endpoint(EndpointName="ep", EndpointConfigName="c2")["EndpointArn"]
    desc = sm.describe_endpoint(EndpointName="ep")
    assert desc["EndpointArn"] == arn
    assert desc["EndpointConfigName"] == "c2" and desc["EndpointStatus"] == "InService"
    with pytest.raises(ClientError, match="Could not find endpoint"):
        sm.update_endpoint(EndpointName="nope", EndpointConfigName="c2")
    with pytest.raises(ClientError):
        sm.update_endpoint(EndpointName="ep", EndpointConfigName="missing")
    assert sm.describe_endpoint(EndpointName="ep")["EndpointConfigName"] == "c2"
