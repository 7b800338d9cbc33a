"""An embedded moto server on 127.0.0.1 (free port) that boto3 reaches via AWS_ENDPOINT_URL."""

from __future__ import annotations

import pytest

moto_server = pytest.importorskip("moto.server", reason="moto[server] missing")


@pytest.fixture(scope="session")
def aws_endpoint():
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(aws_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    import requests

    requests.post(f"{aws_endpoint}/moto-api/reset", timeout=10)  # isolate tests
    return aws_endpoint
