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
  (by the deterministic names of `stacks.naming.extraction_names`, so this stack does not
  depend on the extraction stack) and every drift signal with its moderate/severe lines.

The extraction stack reuses `topic` for its failure notifications.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subs
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from clinical_ner.pipeline import monitoring as mon
from clinical_ner.pipeline.stage_config import StageConfig
from stacks.checks import acknowledge
from stacks.common import pipeline_function, stage_key
from stacks.data_lake import DataLakeStack
from stacks.naming import extraction_names, resource_name

ALARM_PERIOD = Duration.hours(1)


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
        # CloudWatch alarms publish to the encrypted topic as the CloudWatch service.
        self.alerts_key = stage_key(
            self,
            "AlertsKey",
            config=config,
            alias=f"alias/{prefix}-alerts",
            description=f"Clinical NER {stage}: drift and pipeline alert topic, retrain DLQ",
            cloudwatch_alarms=True,
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

        self.retraining_function = self._retraining_function(data_lake, training_state_machine)
        self.alarms = self._drift_alarms()
        self.annotations_rule = self._annotations_rule(data_lake)
        self.dashboard = self._dashboard(training_state_machine)

    def _drift_alarms(self) -> dict[str, cw.Alarm]:
        """Per signal class: moderate -> the retraining Lambda, severe -> the alerts topic."""
        prefix = self.config.resource_prefix
        stage = self.config.stage.value
        alarms: dict[str, cw.Alarm] = {}
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
            alarms[f"{cls.value}-moderate"] = moderate
            alarms[f"{cls.value}-severe"] = severe
        return alarms

    def _annotations_rule(self, data_lake: DataLakeStack) -> events.Rule:
        """New annotated data under raw/annotations/ invokes the retraining Lambda."""
        rule = events.Rule(
            self,
            "NewAnnotationsRule",
            description="New annotated data under raw/annotations/ starts retraining (debounced)",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={
                    "bucket": {"name": [data_lake.lake.bucket_name]},
                    "object": {"key": [{"prefix": self.config.lake.raw_annotations}]},
                },
            ),
        )
        rule.add_target(
            targets.LambdaFunction(
                self.retraining_function,
                dead_letter_queue=self.dead_letters,
                retry_attempts=4,
                max_event_age=Duration.hours(6),
            )
        )
        return rule

    def _retraining_function(
        self, data_lake: DataLakeStack, training_state_machine: sfn.IStateMachine
    ) -> lambda_.Function:
        """The debounced retraining trigger, with its dead-letter queue (outside the VPC)."""
        prefix = self.config.resource_prefix
        fn_name = resource_name(self.config, "retraining_trigger")
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
        fn, _ = pipeline_function(
            self,
            "Retraining",
            config=self.config,
            function_name=fn_name,
            code_dir="retraining_trigger",
            description="Debounced start of the training pipeline (drift, new annotations, manual)",
            role_description=(
                f"Lambda {fn_name}: start and list executions of the training pipeline"
            ),
            statements=[
                iam.PolicyStatement(
                    sid="StartAndListTraining",
                    actions=["states:StartExecution", "states:ListExecutions"],
                    resources=[training_state_machine.state_machine_arn],
                ),
            ],
            environment={
                "TRAINING_STATE_MACHINE_ARN": training_state_machine.state_machine_arn,
                "COOLDOWN_HOURS": str(self.config.drift.retrain_cooldown_hours),
                "LOG_LEVEL": "INFO",
            },
            log_key=data_lake.key,
            memory_size=256,
            timeout=Duration.minutes(1),
            network=None,
            # One at a time: two triggers can never both pass the debounce check.
            reserved_concurrency=1,
            dead_letter_queue=self.dead_letters,
            async_retry_attempts=2,
            outside_vpc_reason="The retraining trigger handles no PHI: it reads alarm names, "
            "object keys and sizes from its event and calls the Step Functions API. The stage "
            "VPC has no Step Functions endpoint and no internet route, so inside it the call "
            "could not be made; outside, the function reaches only the public Step Functions "
            "API.",
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
