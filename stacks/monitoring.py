"""Monitoring stack: drift alarms -> retraining or e-mail, the retraining trigger, the dashboard.

- ``DriftLevel`` (0 none / 1 moderate / 2 severe, published per signal class by the drift
  monitor, `pipeline.monitoring`) has two alarms per class: *moderate* (level exactly 1,
  metric math) invokes the retraining Lambda directly (CloudWatch Lambda alarm action);
  *severe* (level 2) publishes to the KMS-encrypted alerts topic, whose e-mail subscription
  is the stage's ``alarm_email``. Severe drift does not retrain: it sends people back to
  experimentation. Alarm names and descriptions are static text: no note text, no note ids.
- The retraining Lambda (`clinical_ner.pipeline.retraining`) starts the training state machine,
  debounced (nothing while an execution RUNs, nothing within the stage's cool-down; reserved
  concurrency 1). It is also the target of an EventBridge rule on S3 "Object Created" under
  ``raw/annotations/`` and can be invoked by hand (``{"trigger": "manual"}``).
- The dashboard shows volumes, quarantine rate, latency and errors of the extraction pipeline
  (by the deterministic names of `stacks.extraction.extraction_names`, so this stack does not
  depend on the extraction stack) and every drift signal with its moderate/severe lines.

The extraction stack reuses `topic` for its failure notifications.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subs
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from clinical_ner.pipeline import monitoring as mon
from clinical_ner.pipeline.stage_config import StageConfig
from stacks.checks import acknowledge
from stacks.data_lake import DataLakeStack
from stacks.iam_roles import service_role
from stacks.packaging import REPO_ROOT
from stacks.retention import removal_policy

LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_12
ALARM_PERIOD = Duration.hours(1)


def extraction_names(resource_prefix: str) -> dict[str, str]:
    """Physical names of the extraction pipeline's resources (shared with stacks.extraction)."""
    return {
        "state_machine": f"{resource_prefix}-extraction",
        "stage": f"{resource_prefix}-stage-transform-input",
        "resolve_model": f"{resource_prefix}-resolve-transform-model",
        "publish": f"{resource_prefix}-publish-extractions",
        "monitor": f"{resource_prefix}-drift-monitor",
    }


class MonitoringStack(Stack):
    """Exposes `topic`, `alerts_key`, `retraining_function`, `alarms`, `dashboard`."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        data_lake: DataLakeStack,
        training_state_machine: sfn.IStateMachine,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        prefix = config.resource_prefix
        stage = config.stage.value
        removal = removal_policy(config)

        # ------------------------------------------------------------ alerts topic
        self.alerts_key = kms.Key(
            self,
            "AlertsKey",
            alias=f"alias/{prefix}-alerts",
            description=f"Clinical NER {stage}: drift and pipeline alert topic, retrain DLQ",
            enable_key_rotation=True,
            removal_policy=removal,
            pending_window=Duration.days(30),
        )
        # CloudWatch alarms publish to the encrypted topic as the CloudWatch service.
        self.alerts_key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsToPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=["*"],  # in a key policy "*" means this key
                conditions={"StringEquals": {"aws:SourceAccount": self.account}},
            )
        )
        self.topic = sns.Topic(
            self,
            "AlertsTopic",
            topic_name=f"{prefix}-alerts",
            display_name=f"Clinical NER {stage} alerts",
            master_key=self.alerts_key,
            enforce_ssl=True,
        )
        self.topic.add_subscription(subs.EmailSubscription(config.alarm_email))

        # ------------------------------------------------------- retraining trigger
        self.retraining_function = self._retraining_function(
            data_lake, training_state_machine, removal
        )

        # ------------------------------------------------------------------ alarms
        self.alarms: dict[str, cw.Alarm] = {}
        for cls in mon.SignalClass:
            level = cw.Metric(
                namespace=mon.NAMESPACE,
                metric_name=mon.LEVEL_METRIC,
                dimensions_map={mon.DIM_STAGE: stage, mon.DIM_SIGNAL_CLASS: cls.value},
                statistic="Maximum",
                period=ALARM_PERIOD,
            )
            signals = ", ".join(s.name for s in mon.SIGNALS if s.signal_class is cls)
            moderate = cw.Alarm(
                self,
                f"{cls.value.capitalize()}ModerateDrift",
                alarm_name=f"{prefix}-drift-{cls.value}-moderate",
                alarm_description=(
                    f"Moderate {cls.value} drift ({signals}) in the latest monitored window of "
                    f"stage {stage}: retraining is started automatically (debounced). See "
                    "docs/monitoring.md and the drift report under monitoring/reports/."
                ),
                metric=cw.MathExpression(
                    expression="IF(lvl == 1, 1, 0)",
                    using_metrics={"lvl": level},
                    label=f"{cls.value} drift is moderate",
                    period=ALARM_PERIOD,
                ),
                threshold=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                evaluation_periods=1,
                datapoints_to_alarm=1,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )
            moderate.add_alarm_action(
                cw_actions.LambdaAction(self.retraining_function, use_unique_permission_id=True)
            )
            severe = cw.Alarm(
                self,
                f"{cls.value.capitalize()}SevereDrift",
                alarm_name=f"{prefix}-drift-{cls.value}-severe",
                alarm_description=(
                    f"Severe {cls.value} drift ({signals}) in stage {stage}: the data moved "
                    "beyond what retraining on the same recipe should absorb. No automatic "
                    "retraining; review the drift report under monitoring/reports/ and go "
                    "back to experimentation (docs/monitoring.md)."
                ),
                metric=level,
                threshold=2,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                evaluation_periods=1,
                datapoints_to_alarm=1,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )
            severe.add_alarm_action(cw_actions.SnsAction(self.topic))
            self.alarms[f"{cls.value}-moderate"] = moderate
            self.alarms[f"{cls.value}-severe"] = severe

        # ------------------------------------------ new annotations -> retraining
        self.annotations_rule = events.Rule(
            self,
            "NewAnnotationsRule",
            description="New annotated data under raw/annotations/ starts retraining (debounced)",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={
                    "bucket": {"name": [data_lake.lake.bucket_name]},
                    "object": {"key": [{"prefix": config.lake.raw_annotations}]},
                },
            ),
        )
        self.annotations_rule.add_target(
            targets.LambdaFunction(
                self.retraining_function,
                dead_letter_queue=self.dead_letters,
                retry_attempts=4,
                max_event_age=Duration.hours(6),
            )
        )

        self.dashboard = self._dashboard(training_state_machine)

    # ------------------------------------------------------------------ helpers

    def _retraining_function(
        self,
        data_lake: DataLakeStack,
        training_state_machine: sfn.IStateMachine,
        removal: RemovalPolicy,
    ) -> lambda_.Function:
        from stacks.training import build_layer_zip

        prefix = self.config.resource_prefix
        fn_name = f"{prefix}-retraining-trigger"
        self.dead_letters = sqs.Queue(
            self,
            "RetrainingDeadLetters",
            queue_name=f"{prefix}-retraining-dlq",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.alerts_key,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        acknowledge(
            self.dead_letters,
            "AwsSolutions-SQS3",
            "This queue is itself the dead-letter queue of the retraining Lambda and of the "
            "annotations rule's target; a dead-letter queue for it would only move the same "
            "failed trigger events one hop further.",
        )
        log_group = logs.LogGroup(
            self,
            "RetrainingLogs",
            log_group_name=f"/aws/lambda/{fn_name}",
            encryption_key=data_lake.key,
            removal_policy=removal,
        )
        cfn_log = log_group.node.default_child
        assert isinstance(cfn_log, logs.CfnLogGroup)
        cfn_log.retention_in_days = self.config.retention.log_group_days
        role, policy = service_role(
            self,
            "Retraining",
            service="lambda.amazonaws.com",
            role_description=(
                f"Lambda {fn_name}: start and list executions of the training pipeline"
            ),
            policy_description=f"Least privilege of Lambda {fn_name}",
            statements=[
                iam.PolicyStatement(
                    sid="StartAndListTraining",
                    actions=["states:StartExecution", "states:ListExecutions"],
                    resources=[training_state_machine.state_machine_arn],
                ),
                iam.PolicyStatement(
                    sid="WriteOwnLogs",
                    actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                    resources=[log_group.log_group_arn],
                ),
                iam.PolicyStatement(
                    sid="DeadLetters",
                    actions=["sqs:SendMessage"],
                    resources=[self.dead_letters.queue_arn],
                ),
                iam.PolicyStatement(
                    sid="EncryptDeadLetters",
                    actions=["kms:GenerateDataKey", "kms:Decrypt"],
                    resources=[self.alerts_key.key_arn],
                ),
            ],
        )
        layer = lambda_.LayerVersion(
            self,
            "CoreLayer",
            code=lambda_.Code.from_asset(str(build_layer_zip())),
            compatible_runtimes=[LAMBDA_RUNTIME],
            description="clinical_ner core package (the retraining trigger uses stdlib parts)",
        )
        fn = lambda_.Function(
            self,
            "RetrainingFunction",
            function_name=fn_name,
            runtime=LAMBDA_RUNTIME,
            architecture=lambda_.Architecture.ARM_64,
            handler="handler.handler",
            code=lambda_.Code.from_asset(str(REPO_ROOT / "lambdas" / "retraining_trigger")),
            layers=[layer],
            # The managed policy above holds every grant (incl. the DLQ); CDK's automatic
            # grants would otherwise add an inline policy with the same statements.
            role=role.without_policy_updates(),
            environment={
                "TRAINING_STATE_MACHINE_ARN": training_state_machine.state_machine_arn,
                "COOLDOWN_HOURS": str(self.config.drift.retrain_cooldown_hours),
                "LOG_LEVEL": "INFO",
            },
            memory_size=256,
            timeout=Duration.minutes(1),
            # One at a time: two triggers can never both pass the debounce check.
            reserved_concurrent_executions=1,
            dead_letter_queue=self.dead_letters,
            retry_attempts=2,
            log_group=log_group,
            description="Debounced start of the training pipeline (drift, new annotations, manual)",
        )
        fn.node.add_dependency(policy)
        acknowledge(
            fn,
            "HIPAA.Security-LambdaInsideVPC",
            "The retraining trigger handles no PHI: it reads alarm names, object keys and "
            "sizes from its event and calls the Step Functions API. The stage VPC has no "
            "Step Functions endpoint and no internet route, so inside it the call could not "
            "be made; outside, the function reaches only the public Step Functions API.",
        )
        acknowledge(
            fn,
            "AwsSolutions-L1",
            "The runtime is pinned to Python 3.12, the newest version the core package declares "
            "and is tested on (pyproject requires-python >=3.11,<3.13); the layer ships that "
            "code, so the runtime moves together with that pin.",
        )
        return fn

    def _dashboard(self, training_state_machine: sfn.IStateMachine) -> cw.Dashboard:
        cfg = self.config
        stage = cfg.stage.value
        names = extraction_names(cfg.resource_prefix)
        sm_arn = (
            f"arn:{self.partition}:states:{self.region}:{self.account}:stateMachine:"
            f"{names['state_machine']}"
        )

        def metric(name: str, stat: str = "Sum", label: str | None = None) -> cw.Metric:
            return cw.Metric(
                namespace=mon.NAMESPACE,
                metric_name=name,
                dimensions_map={mon.DIM_STAGE: stage},
                statistic=stat,
                period=Duration.hours(1),
                label=label or name,
            )

        def states(name: str, arn: str, stat: str = "Sum") -> cw.Metric:
            return cw.Metric(
                namespace="AWS/States",
                metric_name=name,
                dimensions_map={"StateMachineArn": arn},
                statistic=stat,
                period=Duration.hours(1),
            )

        def lam(name: str, fn_name: str, stat: str = "Sum") -> cw.Metric:
            return cw.Metric(
                namespace="AWS/Lambda",
                metric_name=name,
                dimensions_map={"FunctionName": fn_name},
                statistic=stat,
                period=Duration.hours(1),
                label=fn_name,
            )

        functions = [names[k] for k in ("stage", "resolve_model", "publish", "monitor")]
        functions.append(self.retraining_function.function_name)
        dashboard = cw.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"{cfg.resource_prefix}-monitoring",
            default_interval=Duration.days(7),
        )
        dashboard.add_widgets(
            cw.TextWidget(
                markdown=(
                    f"# Clinical NER {stage}: extraction and drift\n"
                    "Drift levels: 0 none, 1 moderate (retraining starts), 2 severe (e-mail, "
                    "back to experimentation). Thresholds: docs/monitoring.md."
                ),
                width=24,
                height=2,
            )
        )
        dashboard.add_widgets(
            cw.GraphWidget(
                title="Volumes per hour",
                left=[
                    metric("NotesIn"),
                    metric("NotesCurated"),
                    metric("NotesQuarantined"),
                    metric("NotesExtracted"),
                ],
                right=[metric("EntitiesExtracted")],
                width=12,
            ),
            cw.GraphWidget(
                title="Quarantine rate (share of records rejected by validation)",
                left=[metric("QuarantineRate", "Maximum")],
                left_y_axis=cw.YAxisProps(min=0, max=1),
                width=12,
            ),
        )
        dashboard.add_widgets(
            cw.GraphWidget(
                title="Latency: extraction run and Lambda durations (p90)",
                left=[states("ExecutionTime", sm_arn, "p90")],
                right=[lam("Duration", f, "p90") for f in functions],
                width=12,
            ),
            cw.GraphWidget(
                title="Errors: failed executions and Lambda errors",
                left=[
                    states("ExecutionsFailed", sm_arn),
                    states("ExecutionsTimedOut", sm_arn),
                    states("ExecutionsFailed", training_state_machine.state_machine_arn),
                ],
                right=[lam("Errors", f) for f in functions],
                width=12,
            ),
        )
        drift_widgets: list[cw.IWidget] = []
        for spec in mon.SIGNALS:
            moderate, severe = spec.thresholds(cfg.drift)
            drift_widgets.append(
                cw.GraphWidget(
                    title=f"{spec.metric} ({spec.signal_class.value})",
                    left=[metric(spec.metric, "Maximum", spec.name)],
                    left_annotations=[
                        cw.HorizontalAnnotation(
                            value=moderate, label="moderate", color=cw.Color.ORANGE
                        ),
                        cw.HorizontalAnnotation(value=severe, label="severe", color=cw.Color.RED),
                    ],
                    width=8,
                )
            )
        dashboard.add_widgets(*drift_widgets)
        dashboard.add_widgets(
            *[
                cw.AlarmStatusWidget(
                    title="Drift alarms",
                    alarms=list(self.alarms.values()),
                    width=24,
                    height=3,
                )
            ]
        )
        return dashboard
