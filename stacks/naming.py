"""Physical names of the stage's resources, shared by every stack that refers to them.

A stack that needs another stack's resource by name (the deploy Lambda the endpoint, the
dashboard the extraction functions) takes the name from here, so no stack imports another
stack's module for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from clinical_ner.pipeline.stage_config import StageConfig


@dataclass(frozen=True)
class ServingNames:
    endpoint: str
    model_role: str
    alarm_5xx: str
    alarm_latency: str

    @property
    def alarms(self) -> tuple[str, str]:
        return (self.alarm_5xx, self.alarm_latency)


def serving_names(config: StageConfig) -> ServingNames:
    """Fixed physical names, shared by the training stack's deploy Lambda and the serving stack."""
    p = config.resource_prefix
    return ServingNames(
        endpoint=f"{p}-ner",
        model_role=f"{p}-sagemaker-model",
        alarm_5xx=f"{p}-ner-endpoint-5xx",
        alarm_latency=f"{p}-ner-endpoint-latency-p99",
    )


def extraction_names(resource_prefix: str) -> dict[str, str]:
    """Physical names of the extraction pipeline (its stack and the monitoring dashboard)."""
    return {
        "state_machine": f"{resource_prefix}-extraction",
        "stage": f"{resource_prefix}-stage-transform-input",
        "resolve_model": f"{resource_prefix}-resolve-transform-model",
        "publish": f"{resource_prefix}-publish-extractions",
        "monitor": f"{resource_prefix}-drift-monitor",
    }


def review_names(resource_prefix: str) -> dict[str, str]:
    """Physical names of the review workbench (its stack and the stacks that refer to it)."""
    return {
        "table": f"{resource_prefix}-review-queue",
        "function": f"{resource_prefix}-review-api",
        "api": f"{resource_prefix}-review",
        "user_pool": f"{resource_prefix}-reviewers",
        "access_logs": f"/aws/vendedlogs/apigateway/{resource_prefix}-review",
        "annotations_bus": f"{resource_prefix}-annotations",
        "sign_in_parameter": f"/{resource_prefix}/review/sign-in",
    }


def resource_name(config: StageConfig, name: str) -> str:
    """``<prefix>-<name>``, underscores as dashes (``gate_model`` -> ``<prefix>-gate-model``)."""
    return f"{config.resource_prefix}-{name.replace('_', '-')}"


def construct_title(name: str) -> str:
    """The construct-id stem of a snake_case name: ``gate_model`` -> ``GateModel``."""
    return "".join(p.title() for p in name.split("_"))


def lambda_log_group_name(function_name: str) -> str:
    return f"/aws/lambda/{function_name}"


def state_machine_log_group_name(state_machine_name: str) -> str:
    # Step Functions delivers logs as vended logs; this prefix keeps the resource policy small.
    return f"/aws/vendedlogs/states/{state_machine_name}"
