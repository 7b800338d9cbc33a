"""Monitoring stack: drift alarms -> retraining or e-mail, the retraining trigger, the dashboard.

- ``DriftLevel`` (0 none / 1 moderate / 2 severe, published per signal class by the drift
  monitor, `pipeline.monitoring`) has two alarms per class: *moderate* (level exactly 1,
  metric math) invokes the retraining Lambda directly (CloudWatch Lambda alarm action);
  *severe* (level 2) publishes to the KMS-encrypted alerts topic, whose e-mail subscription
  is the stage's ``alarm_email``. Severe drift does not retrain: it sends people back to
  experimentation. Alarm names and descriptions are static text: no note text, no note ids.
- Measured quality (the workbench's reviews, docs/review.md): ``ProductionPrecision`` and
  ``ProductionRecall`` (dimension ``Stage``) below the stage floors (`ReviewSettings`) over a
  day with at least ``min_reviewed_notes_for_alarm`` reviewed notes raise the same two
  actions: moderate -> the retraining Lambda, severe -> the alerts topic.
- The retraining Lambda (`clinical_ner.pipeline.retraining`) starts the training state machine,
  debounced (nothing while an execution RUNs, nothing within the stage's cool-down; reserved
  concurrency 1). It is also the target of S3 "Object Created" under ``raw/annotations/``
  except ``raw/annotations/reviewed/`` (two EventBridge hops, `_annotations_rule`), the
  target of the review Lambda's asynchronous call when enough reviewed notes accumulated,
  and can be invoked by hand (``{"trigger": "manual"}``).
- The dashboard shows volumes, quarantine rate, latency and errors of the extraction pipeline
  (by the deterministic names of `stacks.naming.extraction_names`, so this stack does not
  depend on the extraction stack), every drift signal with its moderate/severe lines, and
  the review KPIs.

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
from stacks.iam_roles import service_role
from stacks.naming import extraction_names, resource_name, review_names

ALARM_PERIOD = Duration.hours(1)
KPI_DAY = Duration.days(1)
# The review service publishes, after each submit, the running KPIs of the review day
# (`mon.REVIEW_METRICS`, dimension sets [Stage] (all model versions) and [Stage,
# ModelVersion], like the drift metrics); alarms and dashboard use [Stage]. A value is the
# day so far, so counts are read with Maximum (the latest, largest) and ratios with Average.
REVIEWED_NOTES_METRIC = mon.REVIEW_METRICS["notes_reviewed"][0]
KPI_METRICS = {
    "precision": mon.REVIEW_METRICS["production_precision"][0],
    "recall": mon.REVIEW_METRICS["production_recall"][0],
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
        self.quality_alarms = self._quality_alarms()
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

    def _quality_alarms(self) -> dict[str, cw.Alarm]:
        """Measured precision / recall below the stage floors: the drift alarms' two actions.

        Per KPI, on the review day's running value (hourly, like drift) and only once at least
        ``min_reviewed_notes_for_alarm`` notes were reviewed that day (fewer are too few to
        judge): *moderate* (below the moderate floor, not below the severe one) invokes the
        retraining Lambda, *severe* (below the severe floor) publishes to the alerts topic.
        """
        prefix = self.config.resource_prefix
        stage = self.config.stage.value
        rv = self.config.review
        notes = self._stage_metric(REVIEWED_NOTES_METRIC, "Maximum", ALARM_PERIOD)
        alarms: dict[str, cw.Alarm] = {}
        for kpi, metric_name in KPI_METRICS.items():
            value = self._stage_metric(metric_name, "Average", ALARM_PERIOD)
            moderate_floor = getattr(rv, f"{kpi}_moderate")
            severe_floor = getattr(rv, f"{kpi}_severe")
            enough = f"n >= {rv.min_reviewed_notes_for_alarm}"
            levels = {
                "moderate": (
                    f"IF({enough} AND v < {moderate_floor} AND v >= {severe_floor}, 1, 0)",
                    f"below the moderate floor {moderate_floor}: retraining is started "
                    "automatically (debounced).",
                ),
                "severe": (
                    f"IF({enough} AND v < {severe_floor}, 1, 0)",
                    f"below the severe floor {severe_floor}: no automatic retraining; look at "
                    "the reviews (Athena query review_kpis_by_day) and go back to "
                    "experimentation.",
                ),
            }
            for level, (expression, consequence) in levels.items():
                alarm = cw.Alarm(
                    self,
                    f"{kpi.capitalize()}{level.capitalize()}Quality",
                    alarm_name=f"{prefix}-quality-{kpi}-{level}",
                    alarm_description=(
                        f"Production {kpi} measured by the validation team's reviews in stage "
                        f"{stage} (the review day so far, at least "
                        f"{rv.min_reviewed_notes_for_alarm} reviewed notes) is {consequence} "
                        "See docs/review.md and docs/monitoring.md."
                    ),
                    metric=cw.MathExpression(
                        expression=expression,
                        using_metrics={"n": notes, "v": value},
                        label=f"{kpi} is {level}ly low",
                        period=ALARM_PERIOD,
                    ),
                    threshold=1,
                    comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                    evaluation_periods=1,
                    datapoints_to_alarm=1,
                    treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
                )
                if level == "moderate":
                    alarm.add_alarm_action(
                        cw_actions.LambdaAction(
                            self.retraining_function, use_unique_permission_id=True
                        )
                    )
                else:
                    alarm.add_alarm_action(cw_actions.SnsAction(self.topic))
                alarms[f"{kpi}-{level}"] = alarm
        return alarms

    def _stage_metric(
        self, name: str, statistic: str, period: Duration, label: str | None = None
    ) -> cw.Metric:
        return cw.Metric(
            namespace=mon.NAMESPACE,
            metric_name=name,
            dimensions_map={mon.DIM_STAGE: self.config.stage.value},
            statistic=statistic,
            period=period,
            label=label or name,
        )

    def _annotations_rule(self, data_lake: DataLakeStack) -> events.Rule:
        """Annotation files under raw/annotations/, except reviewed/, invoke the retraining Lambda.

        The workbench writes one file per reviewed note under ``raw/annotations/reviewed/``;
        those start training through the count threshold instead (docs/review.md), so they
        must not each fire this rule. EventBridge cannot AND two conditions on one field (a
        key prefix and an anything-but prefix), so the filter takes two hops: a default-bus
        rule forwards Object Created events under ``raw/annotations/`` to the stage's
        annotations bus, where this rule drops ``raw/annotations/reviewed/``.
        """
        lake = self.config.lake
        bucket = {"name": [data_lake.lake.bucket_name]}
        self.annotations_bus = events.EventBus(
            self,
            "AnnotationsBus",
            event_bus_name=review_names(self.config.resource_prefix)["annotations_bus"],
            description="S3 Object Created events under raw/annotations/ of the lake",
        )
        role, _ = service_role(
            self,
            "AnnotationsForward",
            service="events.amazonaws.com",
            role_description="EventBridge: forward raw/annotations/ object events to the "
            "annotations bus",
            statements=[
                iam.PolicyStatement(
                    actions=["events:PutEvents"],
                    resources=[self.annotations_bus.event_bus_arn],
                )
            ],
        )
        self.annotations_forward_rule = events.Rule(
            self,
            "AnnotationsForwardRule",
            description="Objects created under raw/annotations/ go to the annotations bus",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={"bucket": bucket, "object": {"key": [{"prefix": lake.raw_annotations}]}},
            ),
        )
        self.annotations_forward_rule.add_target(
            targets.EventBus(
                self.annotations_bus,
                role=role.without_policy_updates(),
                dead_letter_queue=self.dead_letters,
            )
        )
        rule = events.Rule(
            self,
            "NewAnnotationsRule",
            event_bus=self.annotations_bus,
            description="New annotated data (not the workbench's reviewed/) starts retraining "
            "(debounced)",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={
                    "bucket": bucket,
                    "object": {"key": [{"anything-but": {"prefix": lake.reviewed_annotations}}]},
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
        dashboard.add_widgets(*self._review_kpi_widgets())
        dashboard.add_widgets(
            *[
                cw.AlarmStatusWidget(
                    title="Drift and measured-quality alarms",
                    alarms=[*self.alarms.values(), *self.quality_alarms.values()],
                    width=24,
                    height=3,
                )
            ]
        )
        return dashboard

    def _review_kpi_widgets(self) -> list[cw.IWidget]:
        """The review KPIs per day (docs/review.md), precision and recall with their floors."""
        rv = self.config.review
        names = {k: name for k, (name, _unit) in mon.REVIEW_METRICS.items()}

        def kpi(key: str, stat: str, label: str, period: Duration = ALARM_PERIOD) -> cw.Metric:
            return self._stage_metric(names[key], stat, period, label)

        floors = [
            cw.HorizontalAnnotation(
                value=rv.precision_moderate, label="precision moderate", color=cw.Color.ORANGE
            ),
            cw.HorizontalAnnotation(
                value=rv.precision_severe, label="precision severe", color=cw.Color.RED
            ),
            cw.HorizontalAnnotation(
                value=rv.recall_moderate, label="recall moderate", color=cw.Color.ORANGE
            ),
            cw.HorizontalAnnotation(
                value=rv.recall_severe, label="recall severe", color=cw.Color.RED
            ),
        ]
        return [
            cw.GraphWidget(
                title="Reviews per day: notes reviewed and hours saved",
                left=[kpi("notes_reviewed", "Maximum", "notes reviewed", KPI_DAY)],
                right=[kpi("hours_saved", "Maximum", "hours saved", KPI_DAY)],
                width=6,
            ),
            cw.GraphWidget(
                title="Production precision and recall (the review day so far)",
                left=[
                    kpi("production_precision", "Average", "precision"),
                    kpi("production_recall", "Average", "recall"),
                ],
                left_y_axis=cw.YAxisProps(min=0, max=1),
                left_annotations=floors,
                width=6,
            ),
            cw.GraphWidget(
                title="Corrections per 100 model entities (the review day so far)",
                left=[kpi("corrections_per_100_entities", "Average", "corrections / 100")],
                width=6,
            ),
            cw.GraphWidget(
                title="Median review seconds per note (the review day so far)",
                left=[kpi("median_review_seconds", "Average", "median seconds")],
                width=6,
            ),
        ]
