"""Deploy an Approved model package to the stage's SageMaker endpoint (boto3, no spaCy).

Three steps, each one Lambda invocation driven by the training state machine:

``deploy``
    Refuse anything that is not Approved. Create a SageMaker model from the package, an
    endpoint config (serverless by default: memory and max concurrency from stage config;
    provisioned instances when ``ServerlessEndpoint.provisioned`` is on), then create the
    endpoint or update it in place. Provisioned -> provisioned updates carry SageMaker
    deployment guardrails: blue/green (canary of one instance when the fleet has two or more,
    else all at once) with a baking period and auto-rollback on the stage's CloudWatch alarms
    (5xx errors, model latency). Serverless variants cannot use guardrails, so the pipeline
    implements the equivalent (see ``verify``). Provisioned models run in the VPC with network
    isolation and a KMS-encrypted volume; SageMaker supports none of the three on serverless.
    Provisioned endpoint configs also turn on SageMaker data capture (`data_capture_config`):
    request and response of a sampled share of invocations, KMS-encrypted, to the lake's
    ``monitoring/capture/`` prefix, which the drift monitor reads (`clinical_ner.runtime.capture`).
    SageMaker does not capture serverless variants, so those configs carry no capture.
``status``
    Poll the endpoint: ``in_progress`` / ``deployed`` (InService on the new config) /
    ``rolled_back`` (InService on another config: guardrails rolled back) / ``failed``. Once
    deployed, a provisioned variant gets its target-tracking auto scaling (re)registered.
``verify``
    The serverless equivalent of guardrails, after the state machine's bake wait: if any
    rollback alarm is in ALARM, update the endpoint back to the previous endpoint config (the
    one the deploy step replaced) and report ``rolled_back``; else ``healthy``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clinical_ner.data.notes import JSON_MEDIA_TYPE, JSONLINES_MEDIA_TYPES
from clinical_ner.pipeline.aws_runtime import EndpointBusyError, PipelineStepError
from clinical_ner.pipeline.stage_config import ServerlessEndpoint

# Content types SageMaker data capture records as JSON (not base64): what the serve container
# accepts and answers (clinical_ner.runtime.capture reads them back).
JSON_CONTENT_TYPES = (JSON_MEDIA_TYPE, *JSONLINES_MEDIA_TYPES)

VARIANT = "AllTraffic"
IN_PROGRESS = {"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"}
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
NAME_MAX = 63


@dataclass(frozen=True)
class DeploySettings:
    endpoint_name: str
    model_role_arn: str
    endpoint: ServerlessEndpoint
    alarm_names: tuple[str, ...] = ()
    subnet_ids: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    kms_key_arn: str = ""
    bake_seconds: int = 600
    min_instances: int = 1
    max_instances: int = 4
    invocations_per_instance: float = 200.0  # target tracking: invocations/min/instance
    capture_s3_uri: str = ""  # data capture destination; "" = no capture
    capture_sampling_percentage: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DeploySettings:
        """Read the deploy Lambda's environment (set by the training stack)."""
        e = os.environ if env is None else env

        def items(name: str) -> tuple[str, ...]:
            return tuple(x for x in (e.get(name) or "").split(",") if x)

        return cls(
            endpoint_name=e["ENDPOINT_NAME"],
            model_role_arn=e["MODEL_ROLE_ARN"],
            endpoint=ServerlessEndpoint(
                memory_mb=int(e["SERVERLESS_MEMORY_MB"]),
                max_concurrency=int(e["SERVERLESS_MAX_CONCURRENCY"]),
                provisioned=e.get("PROVISIONED", "false").lower() == "true",
                instance_type=e.get("INSTANCE_TYPE", "ml.m5.large"),
            ),
            alarm_names=items("ROLLBACK_ALARMS"),
            subnet_ids=items("SUBNET_IDS"),
            security_group_ids=items("SECURITY_GROUP_IDS"),
            kms_key_arn=e.get("KMS_KEY_ARN", ""),
            bake_seconds=int(e.get("BAKE_SECONDS", "600")),
            min_instances=int(e.get("MIN_INSTANCES", "1")),
            max_instances=int(e.get("MAX_INSTANCES", "4")),
            capture_s3_uri=e.get("CAPTURE_S3_URI", ""),
            capture_sampling_percentage=int(e.get("CAPTURE_SAMPLING_PERCENTAGE", "0")),
        )


def resource_names(endpoint_name: str, package_version: int | str, now: dt.datetime) -> str:
    """``<endpoint>-v<package version>-<UTC timestamp>``, <= 63 characters, for model + config."""
    suffix = f"-v{package_version}-{now.strftime('%Y%m%d%H%M%S')}"
    return endpoint_name[: NAME_MAX - len(suffix)] + suffix


def production_variant(model_name: str, s: DeploySettings) -> dict[str, Any]:
    if s.endpoint.provisioned:
        return {
            "VariantName": VARIANT,
            "ModelName": model_name,
            "InstanceType": s.endpoint.instance_type,
            "InitialInstanceCount": s.min_instances,
            "InitialVariantWeight": 1.0,
        }
    return {
        "VariantName": VARIANT,
        "ModelName": model_name,
        "ServerlessConfig": {
            "MemorySizeInMB": s.endpoint.memory_mb,
            "MaxConcurrency": s.endpoint.max_concurrency,
        },
    }


def data_capture_config(s: DeploySettings) -> dict[str, Any] | None:
    """SageMaker data capture of the endpoint config, or None where there is none.

    None for serverless variants (SageMaker does not support capture on them), when no
    destination is configured or when the sampling percentage is 0. Captured payloads hold
    note text (PHI): capture is refused without the KMS key that encrypts it.
    """
    if not s.endpoint.provisioned or not s.capture_s3_uri or s.capture_sampling_percentage <= 0:
        return None
    if not s.kms_key_arn:
        raise PipelineStepError(
            "data capture is configured but KMS_KEY_ARN is not: captured notes are PHI and are "
            "only written KMS-encrypted"
        )
    if not 0 < s.capture_sampling_percentage <= 100:
        raise PipelineStepError("capture sampling percentage must be in 1..100")
    return {
        "EnableCapture": True,
        "InitialSamplingPercentage": s.capture_sampling_percentage,
        "DestinationS3Uri": s.capture_s3_uri,
        "KmsKeyId": s.kms_key_arn,
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        # JSON bodies are stored as text (encoding JSON) instead of base64.
        "CaptureContentTypeHeader": {"JsonContentTypes": list(JSON_CONTENT_TYPES)},
    }


def deployment_config(s: DeploySettings) -> dict[str, Any]:
    """Blue/green guardrails with auto-rollback on the stage's alarms (provisioned only)."""
    if s.min_instances >= 2:
        routing: dict[str, Any] = {
            "Type": "CANARY",
            "CanarySize": {"Type": "INSTANCE_COUNT", "Value": 1},
            "WaitIntervalInSeconds": min(s.bake_seconds, 3600),
        }
    else:
        routing = {"Type": "ALL_AT_ONCE"}
    config: dict[str, Any] = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": min(s.bake_seconds, 3600),
            "MaximumExecutionTimeoutInSeconds": 4 * 3600,
        }
    }
    if s.alarm_names:
        config["AutoRollbackConfiguration"] = {
            "Alarms": [{"AlarmName": name} for name in s.alarm_names]
        }
    return config


def _describe_endpoint(sm: Any, name: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        return dict(sm.describe_endpoint(EndpointName=name))
    except ClientError as exc:
        err = exc.response.get("Error", {})
        if err.get("Code") == "ValidationException" and "ould not find" in err.get("Message", ""):
            return None
        raise


def _is_provisioned(sm: Any, endpoint_config_name: str) -> bool:
    desc = sm.describe_endpoint_config(EndpointConfigName=endpoint_config_name)
    return all("ServerlessConfig" not in v for v in desc.get("ProductionVariants", []))


def _scalable_resource(endpoint_name: str) -> str:
    return f"endpoint/{endpoint_name}/variant/{VARIANT}"


def deploy(
    sm: Any, aas: Any, *, package_arn: str, settings: DeploySettings, now: dt.datetime | None = None
) -> dict[str, Any]:
    s = settings
    package = sm.describe_model_package(ModelPackageName=package_arn)
    if package.get("ModelApprovalStatus") != "Approved":
        raise PipelineStepError(
            f"{package_arn} is {package.get('ModelApprovalStatus')}, not Approved; not deploying"
        )
    current = _describe_endpoint(sm, s.endpoint_name)
    if current is not None and current.get("EndpointStatus") in IN_PROGRESS:
        raise EndpointBusyError(f"{s.endpoint_name} is {current['EndpointStatus']}")
    if current is not None and current.get("EndpointStatus") == "Failed":
        raise PipelineStepError(
            f"{s.endpoint_name} is in Failed state and cannot be updated; delete it, then "
            "re-run the deployment"
        )
    name = resource_names(
        s.endpoint_name, package.get("ModelPackageVersion", "0"), now or dt.datetime.now(dt.UTC)
    )
    capture = data_capture_config(s)  # refuses a misconfiguration before creating anything
    model: dict[str, Any] = {
        "ModelName": name,
        "ExecutionRoleArn": s.model_role_arn,
        "PrimaryContainer": {"ModelPackageName": package_arn},
    }
    if s.endpoint.provisioned:
        model["EnableNetworkIsolation"] = True
        if s.subnet_ids and s.security_group_ids:
            model["VpcConfig"] = {
                "Subnets": list(s.subnet_ids),
                "SecurityGroupIds": list(s.security_group_ids),
            }
    sm.create_model(**model)
    config: dict[str, Any] = {
        "EndpointConfigName": name,
        "ProductionVariants": [production_variant(name, s)],
    }
    if s.endpoint.provisioned and s.kms_key_arn:
        config["KmsKeyId"] = s.kms_key_arn
    if capture is not None:
        config["DataCaptureConfig"] = capture
    sm.create_endpoint_config(**config)

    previous = None if current is None else current.get("EndpointConfigName")
    guardrails = False
    if current is None:
        sm.create_endpoint(EndpointName=s.endpoint_name, EndpointConfigName=name)
    else:
        update: dict[str, Any] = {"EndpointName": s.endpoint_name, "EndpointConfigName": name}
        if s.endpoint.provisioned and previous and _is_provisioned(sm, previous):
            update["DeploymentConfig"] = deployment_config(s)
            guardrails = True
            _deregister_autoscaling(aas, s.endpoint_name)
        sm.update_endpoint(**update)
    return {
        "endpoint_name": s.endpoint_name,
        "endpoint_config_name": name,
        "model_name": name,
        "previous_endpoint_config_name": previous or "",
        "variant": "provisioned" if s.endpoint.provisioned else "serverless",
        "guardrails": guardrails,
        "data_capture": capture is not None,
        "model_package_arn": package_arn,
    }


def status(sm: Any, aas: Any, *, deployment: Mapping[str, Any], settings: DeploySettings) -> str:
    desc = _describe_endpoint(sm, str(deployment["endpoint_name"]))
    if desc is None:
        return "failed"
    state = desc.get("EndpointStatus")
    if state in IN_PROGRESS:
        return "in_progress"
    if state == "Failed":
        return "failed"
    if state == "InService":
        if desc.get("EndpointConfigName") != deployment["endpoint_config_name"]:
            return "rolled_back"
        if settings.endpoint.provisioned:
            _register_autoscaling(aas, settings)
        return "deployed"
    return "in_progress"  # OutOfService / UpdateRollbackFailed surface as failures via timeout


def verify(
    sm: Any, cloudwatch: Any, *, deployment: Mapping[str, Any], settings: DeploySettings
) -> str:
    """Serverless guardrail equivalent: roll back to the previous config if an alarm fires."""
    if not settings.alarm_names:
        return "healthy"
    alarms = cloudwatch.describe_alarms(AlarmNames=list(settings.alarm_names)).get(
        "MetricAlarms", []
    )
    firing = [a["AlarmName"] for a in alarms if a.get("StateValue") == "ALARM"]
    if not firing:
        return "healthy"
    previous = str(deployment.get("previous_endpoint_config_name") or "")
    if not previous:
        raise PipelineStepError(
            f"alarms {firing} fired after the first deployment of {deployment['endpoint_name']}; "
            "there is no previous endpoint config to roll back to"
        )
    sm.update_endpoint(EndpointName=str(deployment["endpoint_name"]), EndpointConfigName=previous)
    return "rolled_back"


def _register_autoscaling(aas: Any, s: DeploySettings) -> None:
    resource = _scalable_resource(s.endpoint_name)
    aas.register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId=resource,
        ScalableDimension=SCALABLE_DIMENSION,
        MinCapacity=s.min_instances,
        MaxCapacity=max(s.max_instances, s.min_instances),
    )
    aas.put_scaling_policy(
        PolicyName=f"{s.endpoint_name}-invocations",
        ServiceNamespace="sagemaker",
        ResourceId=resource,
        ScalableDimension=SCALABLE_DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": s.invocations_per_instance,
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
            },
            "ScaleInCooldown": 300,
            "ScaleOutCooldown": 60,
        },
    )


def _deregister_autoscaling(aas: Any, endpoint_name: str) -> None:
    """Blue/green updates need the variant free of a scalable target; status re-registers."""
    from botocore.exceptions import ClientError

    try:
        aas.deregister_scalable_target(
            ServiceNamespace="sagemaker",
            ResourceId=_scalable_resource(endpoint_name),
            ScalableDimension=SCALABLE_DIMENSION,
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ObjectNotFoundException":
            raise


_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")


def check_name(name: str) -> str:
    if len(name) > NAME_MAX or not _NAME.match(name):
        raise ValueError(f"not a SageMaker resource name: {name!r}")
    return name
