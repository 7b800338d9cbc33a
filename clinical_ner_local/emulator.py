"""An embedded AWS API emulator (moto server on 127.0.0.1) for local mode and tests.

`LocalAws` starts moto's threaded server on a free loopback port, hands out boto3 sessions and
clients bound to it, and can put the process environment in a state where unmodified handler
code (``boto3.client("s3")``) talks to it: fake credentials, a region, ``AWS_ENDPOINT_URL``
(honoured by boto3 >= 1.28 for every service) and no proxy for the loopback address. Nothing
ever leaves the machine: the server binds 127.0.0.1 only, and credentials are dummies.

`create_data_lake` lays out the buckets of `stacks.data_lake` (lake, Athena results, access
logs) with the lake's versioning and SSE-KMS default encryption, and returns the
``s3://`` URI of every prefix of `clinical_ner.pipeline.stage_config.LAKE`.

moto keeps its state in process-global backends: every `LocalAws` (and any ``mock_aws`` in the
same process) sees the same accounts, so only one emulator should run per process at a time;
`LocalAws` resets the state when it starts unless asked not to.

    with LocalAws() as aws, aws.activated():
        lake = create_data_lake(aws)
        boto3.client("s3").put_object(Bucket=lake.lake, Key="raw/notes/a.txt", Body=b"...")
"""

from __future__ import annotations

import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from clinical_ner.pipeline.stage_config import LAKE, LakeLayout

__all__ = ["DEFAULT_ACCOUNT", "DEFAULT_REGION", "LakeBuckets", "LocalAws", "create_data_lake"]

DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT = "123456789012"  # moto's default account id
LOOPBACK = "127.0.0.1"

# Variables that would make boto3 pick other credentials, endpoints or a proxy.
_CLEARED_ENV = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


class EmulatorError(RuntimeError):
    """The emulator could not be started or used."""


class LocalAws:
    """moto server on 127.0.0.1 (a free port) plus boto3 plumbing; a context manager."""

    def __init__(
        self,
        *,
        region: str = DEFAULT_REGION,
        port: int = 0,
        reset: bool = True,
        start_timeout: float = 30.0,
    ) -> None:
        self.region = region
        self.account = DEFAULT_ACCOUNT
        self._port = port
        self._reset_on_start = reset
        self._start_timeout = start_timeout
        self._server: Any = None
        self._endpoint: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LocalAws:
        if self._server is not None:
            raise EmulatorError("the emulator is already running")
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise EmulatorError(
                "local mode needs moto's server: pip install 'moto[server]'"
            ) from exc
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
        install_sagemaker_update_endpoint()
        server = ThreadedMotoServer(ip_address=LOOPBACK, port=self._port, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        self._server = server
        self._endpoint = f"http://{host}:{port}"
        try:
            self._wait_ready()
            if self._reset_on_start:
                self.reset()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        server, self._server, self._endpoint = self._server, None, None
        if server is not None:
            server.stop()

    def __enter__(self) -> LocalAws:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def endpoint_url(self) -> str:
        if self._endpoint is None:
            raise EmulatorError("the emulator is not running (call start() or use `with`)")
        return self._endpoint

    @property
    def port(self) -> int:
        return int(self.endpoint_url.rsplit(":", 1)[1])

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._start_timeout
        url = f"{self.endpoint_url}/moto-api/"
        while True:
            try:
                with _no_proxy_opener().open(url, timeout=2) as resp:
                    if resp.status < 500:
                        return
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise EmulatorError(f"moto server at {self.endpoint_url} did not answer")
            time.sleep(0.05)

    def reset(self) -> None:
        """Forget every resource (moto's ``/moto-api/reset``)."""
        req = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with _no_proxy_opener().open(req, timeout=10) as resp:
            if resp.status != 200:
                raise EmulatorError(f"moto reset answered HTTP {resp.status}")

    # -- boto3 -------------------------------------------------------------------------------

    def environ(self) -> dict[str, str]:
        """Environment variables that point boto3 (and the AWS CLI) at the emulator."""
        no_proxy = ",".join(v for v in (os.environ.get("NO_PROXY", ""), LOOPBACK, "localhost") if v)
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
        }

    @contextmanager
    def activated(self) -> Iterator[dict[str, str]]:
        """Set `environ()` in ``os.environ`` (and clear profile/role variables), then restore."""
        changes: dict[str, str | None] = dict(self.environ())
        changes.update({k: None for k in _CLEARED_ENV})
        saved = {k: os.environ.get(k) for k in changes}
        try:
            for k, v in changes.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            yield self.environ()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def session(self) -> Any:
        """A boto3 session with the fake credentials and the emulator's region."""
        import boto3

        return boto3.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            aws_session_token="testing",
            region_name=self.region,
        )

    def client(self, service: str, **kwargs: Any) -> Any:
        """A boto3 client for `service` bound to the emulator's endpoint."""
        from botocore.config import Config

        kwargs.setdefault("endpoint_url", self.endpoint_url)
        kwargs.setdefault(
            "config", Config(retries={"max_attempts": 2, "mode": "standard"}, proxies={})
        )
        return self.session().client(service, **kwargs)


def install_sagemaker_update_endpoint() -> None:
    """Give moto's SageMaker the UpdateEndpoint action it lacks (moto 5.2).

    A second deployment updates the endpoint to a new config. Like moto's CreateEndpoint, the
    endpoint is InService at once, serving the new config's variants; deployment guardrails
    (blue/green, rollback alarms) are not emulated (docs/local-mode.md, limits).
    """
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.responses import SageMakerResponse

    if hasattr(SageMakerResponse, "update_endpoint"):
        return

    def update_endpoint(self: Any) -> Any:
        backend = self.sagemaker_backend
        name = self._get_param("EndpointName")
        endpoint = backend.endpoints.get(name)
        if endpoint is None:
            raise ValidationError(message=f"Could not find endpoint '{name}'.")
        config_name = self._get_param("EndpointConfigName")
        config = backend.describe_endpoint_config(config_name)  # raises when it is missing
        endpoint.endpoint_config_name = config_name
        endpoint.production_variants = endpoint._process_production_variants(
            config["ProductionVariants"]
        )
        endpoint.endpoint_status = "InService"
        endpoint.last_modified_time = utcnow()
        return ActionResult({"EndpointArn": endpoint.arn})

    SageMakerResponse.update_endpoint = update_endpoint


def _no_proxy_opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class LakeBuckets:
    """Bucket names and prefix URIs of the local data lake (mirrors `stacks.data_lake`)."""

    lake: str
    athena_results: str
    access_logs: str
    kms_key_arn: str | None
    layout: LakeLayout

    @property
    def lake_root(self) -> str:
        """``s3://<lake>``: the ``--lake_root`` argument the Glue jobs take."""
        return f"s3://{self.lake}"

    def uri(self, prefix_name: str, *parts: str) -> str:
        """``s3://<lake>/<prefix>`` for a `LakeLayout` field name, with optional sub-keys."""
        prefix = self.layout.prefixes()[prefix_name]
        return f"s3://{self.lake}/{prefix}" + "/".join(p.strip("/") for p in parts)

    def prefixes(self) -> dict[str, str]:
        return {name: self.uri(name) for name in self.layout.prefixes()}


def create_data_lake(
    aws: LocalAws,
    *,
    name_prefix: str = "clinical-ner-local",
    layout: LakeLayout = LAKE,
    kms: bool = True,
    folder_markers: bool = False,
) -> LakeBuckets:
    """Create the lake, Athena-results and access-log buckets (idempotent).

    As in `stacks.data_lake`: the lake and the Athena results bucket are versioned and
    encrypted by default with a customer-managed KMS key (``kms=True``), the access-log bucket
    uses SSE-S3. S3 has no folders; ``folder_markers=True`` also writes a zero-byte
    ``<prefix>`` object per lake prefix for browsing tools. It is off by default because a
    reader listing ``raw/notes/`` would see the marker as an (empty) input object.
    """
    s3 = aws.client("s3")
    key_arn = None
    if kms:
        kms_client = aws.client("kms")
        alias = f"alias/{name_prefix}-data"
        aliases = kms_client.list_aliases().get("Aliases", [])
        existing = next((a for a in aliases if a["AliasName"] == alias), None)
        if existing is not None:
            key_arn = kms_client.describe_key(KeyId=existing["TargetKeyId"])["KeyMetadata"]["Arn"]
        else:
            meta = kms_client.create_key(Description=f"{name_prefix} data lake (local)")
            key_arn = meta["KeyMetadata"]["Arn"]
            kms_client.create_alias(AliasName=alias, TargetKeyId=meta["KeyMetadata"]["KeyId"])
    buckets = LakeBuckets(
        lake=f"{name_prefix}-lake",
        athena_results=f"{name_prefix}-athena-results",
        access_logs=f"{name_prefix}-access-logs",
        kms_key_arn=key_arn,
        layout=layout,
    )
    existing_buckets = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for name, encrypted in (
        (buckets.access_logs, False),
        (buckets.lake, True),
        (buckets.athena_results, True),
    ):
        if name not in existing_buckets:
            kwargs: dict[str, Any] = {"Bucket": name}
            if aws.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": aws.region}
            s3.create_bucket(**kwargs)
        s3.put_public_access_block(
            Bucket=name,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
        if encrypted:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        rule: dict[str, Any] = (
            {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn}
            if encrypted and key_arn
            else {"SSEAlgorithm": "AES256"}
        )
        s3.put_bucket_encryption(
            Bucket=name,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {
                        "ApplyServerSideEncryptionByDefault": rule,
                        "BucketKeyEnabled": bool(encrypted and key_arn),
                    }
                ]
            },
        )
    if folder_markers:
        for prefix in layout.prefixes().values():
            s3.put_object(Bucket=buckets.lake, Key=prefix, Body=b"")
    return buckets
