"""Fixtures shared by unit tests: `tiny_model_dir` (see tiny_model.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_model import train_tiny


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("tiny-model") / "model")
