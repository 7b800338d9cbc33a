"""A local MLflow tracking server process: the stand-in for the managed one in local mode and tests.

It is the real ``mlflow server`` (SQLite backend, artifacts on disk) on 127.0.0.1. The register
step reaches it exactly as it reaches the SageMaker managed server, through the REST client in
`pipeline.tracking` with ``MLFLOW_SAGEMAKER_ENDPOINT`` pointing here; the server ignores
the SigV4 headers the client adds.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

START_TIMEOUT_SECONDS = 90


class MlflowServerError(RuntimeError):
    """The MLflow server could not be started (the log file has the details)."""


def mlflow_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("mlflow.server") is not None


class LocalMlflowServer:
    """``mlflow server`` under `workdir` (``mlflow.db``, ``artifacts/``, ``mlflow-server.log``)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.started_seconds = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mlflow-server.log"

    def start(self) -> LocalMlflowServer:
        if not mlflow_installed():
            raise MlflowServerError("the mlflow package (with its server) is not installed")
        from clinical_ner_local.net import free_port

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        started = time.monotonic()
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mlflow",
                    "server",
                    "--backend-store-uri",
                    f"sqlite:///{(self.workdir / 'mlflow.db').resolve()}",
                    "--default-artifact-root",
                    (self.workdir / "artifacts").resolve().as_uri(),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,  # its own process group: stop() ends uvicorn too
            )
        deadline = started + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise MlflowServerError(
                    f"mlflow server exited with {self.process.returncode}; see {self.log_path}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        self.started_seconds = round(time.monotonic() - started, 1)
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise MlflowServerError(f"mlflow server did not answer /health; see {self.log_path}")

    def stop(self) -> None:
        if self.process is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=15)
                break
            except subprocess.TimeoutExpired:
                continue
        self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalMlflowServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
