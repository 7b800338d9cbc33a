"""Local Spark for the Glue job tests: one SparkSession (local[2]) for the whole session.

The Glue scripts are loaded from ``glue_jobs/`` by path, exactly the files CDK uploads.
Tests skip only when Java or pyspark is really missing (install: ``apt-get install
openjdk-17-jre-headless`` and the ``infra`` extra).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


# py4j logs "Closing down clientserver connection" from an atexit hook, after pytest has
# closed the stream its log handler writes to; the message carries nothing worth keeping.
logging.getLogger("py4j").setLevel(logging.WARNING)


def _load_script(name: str) -> ModuleType:
    path = REPO_ROOT / "glue_jobs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"glue_jobs_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def validate_job() -> ModuleType:
    return _load_script("validate_notes")


@pytest.fixture(scope="session")
def prepare_job() -> ModuleType:
    return _load_script("prepare_training_data")


@pytest.fixture(scope="session")
def spark():
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("Java is not installed (apt-get install openjdk-17-jre-headless)")
    pyspark = pytest.importorskip("pyspark", reason="pyspark missing: pip install '.[infra]'")
    del pyspark
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master("local[2]")
        .appName("clinical-ner-glue-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.driver.memory", "1g")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
