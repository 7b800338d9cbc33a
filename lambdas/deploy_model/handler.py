"""Deploy an Approved package to the stage endpoint, poll it, and verify it after baking.

Event: ``{"action": "deploy", "model_package_arn"}``, ``{"action": "status", "deployment"}``
or ``{"action": "verify", "deployment"}`` (``deployment`` = the deploy action's result).
Environment: see `clinical_ner.pipeline.deployment.DeploySettings.from_env`.
"""

from __future__ import annotations

from typing import Any

from clinical_ner.pipeline import deployment
from clinical_ner.pipeline.aws_runtime import PipelineStepError, client, require, run_step


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    action = str(require(event, "action"))
    settings = deployment.DeploySettings.from_env()
    if action == "deploy":
        arn = str(require(event, "model_package_arn"))
        return run_step(
            "deploy_model",
            lambda: deployment.deploy(
                client("sagemaker"),
                client("application-autoscaling"),
                package_arn=arn,
                settings=settings,
            ),
            model_package_arn=arn,
        )
    dep = require(event, "deployment")
    if action == "status":
        phase = run_step(
            "endpoint_status",
            lambda: {
                "phase": deployment.status(
                    client("sagemaker"),
                    client("application-autoscaling"),
                    deployment=dep,
                    settings=settings,
                )
            },
            endpoint=dep.get("endpoint_name"),
        )
        return {**dep, **phase}
    if action == "verify":
        result = run_step(
            "verify_deployment",
            lambda: {
                "phase": deployment.verify(
                    client("sagemaker"), client("cloudwatch"), deployment=dep, settings=settings
                )
            },
            endpoint=dep.get("endpoint_name"),
        )
        return {**dep, **result}
    raise PipelineStepError(f"unknown deploy action {action!r}")
