"""Deploy an Approved package to the stage endpoint, poll it, and verify it after baking.

Event: `clinical_ner.runtime.lambda_events.DeployEvent` (``deploy``, ``status`` or
``verify``). Environment: see `clinical_ner.pipeline.deployment.DeploySettings.from_env`.
"""

from __future__ import annotations

from typing import Any

from clinical_ner.pipeline import deployment
from clinical_ner.pipeline.aws_runtime import client
from clinical_ner.runtime import lambda_edge as edge
from clinical_ner.runtime.lambda_events import DeployEvent


@edge.step("deploy_model", DeployEvent)
def handler(event: DeployEvent) -> dict[str, Any]:
    settings = deployment.DeploySettings.from_env()
    sm, aas = client("sagemaker"), client("application-autoscaling")
    if event.action == "deploy":
        return deployment.deploy(sm, aas, package_arn=event.model_package_arn, settings=settings)
    if event.action == "status":
        phase = deployment.status(sm, aas, deployment=event.deployment, settings=settings)
    else:
        cw = client("cloudwatch")
        phase = deployment.verify(sm, cw, deployment=event.deployment, settings=settings)
    return {**event.deployment, "phase": phase}
