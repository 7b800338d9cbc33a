"""Synthesize the CDK app once per stage per test session (synth costs ~20 s on 2 cores).

The app is built exactly as ``app.py`` builds it (`stacks.stage.build_app`, the context of
cdk.json), with the cdk-nag AwsSolutions and HIPAA Security packs registered; a finding
that is not acknowledged makes `app.synth()` raise, which fails every test here.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `stacks` is not an installed package
    sys.path.insert(0, str(REPO_ROOT))

if shutil.which("node") is None:
    pytest.skip("Node.js is not installed (needed by the CDK)", allow_module_level=True)
pytest.importorskip("aws_cdk", reason="aws-cdk-lib missing: pip install '.[infra]'")

from aws_cdk import App  # noqa: E402

from stacks.stage import StageStacks, build_app, cdk_json_context  # noqa: E402


@dataclass
class Synth:
    app: App
    stacks: StageStacks
    outdir: Path

    def template(self, stack: Any) -> dict[str, Any]:
        return json.loads((self.outdir / f"{stack.artifact_id}.template.json").read_text())

    def resources(self, stack: Any, rtype: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.template(stack)["Resources"].items() if v["Type"] == rtype}

    def templates(self) -> list[Path]:
        return sorted(self.outdir.glob("*.template.json"))


_CACHE: dict[str, Synth] = {}


def synthesize(stage: str, tmp_path_factory: pytest.TempPathFactory) -> Synth:
    if stage not in _CACHE:
        outdir = tmp_path_factory.mktemp(f"cdk-out-{stage}")
        app = App(context={**cdk_json_context(), "stage": stage}, outdir=str(outdir))
        stacks = build_app(app)
        app.synth()
        _CACHE[stage] = Synth(app, stacks, outdir)
    return _CACHE[stage]


@pytest.fixture(scope="session")
def dev(tmp_path_factory) -> Synth:
    return synthesize("dev", tmp_path_factory)


@pytest.fixture(scope="session")
def prod(tmp_path_factory) -> Synth:
    return synthesize("prod", tmp_path_factory)


@pytest.fixture(scope="session", params=["dev", "prod"])
def synth(request, tmp_path_factory) -> Synth:
    return synthesize(request.param, tmp_path_factory)
