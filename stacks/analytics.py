"""Analytics stack: the entities/notes tables, the Athena workgroup and the named queries.

- Tables ``entities`` and ``notes`` (schemas from `clinical_ner.data.schemas`, one source of truth)
  are added to the stage's Glue database, beside ``curated_notes`` and ``quarantine`` that the
  data-prep stack defines; all four use partition projection on ``dt`` (type date,
  ``yyyy-MM-dd``, from 2024-01-01 to NOW), so new partitions are queryable the moment the
  files land, without a crawler or ``MSCK REPAIR``.
- The workgroup enforces its configuration (clients cannot override it): results in the
  Athena results bucket, encrypted SSE-KMS with the lake key, a per-query bytes-scanned cutoff,
  CloudWatch metrics on, engine version 3 (Trino).
- One ``AWS::Athena::NamedQuery`` per `clinical_ner.data.analytics.QUERIES` entry, in the workgroup
  and the database: the same SQL text the DuckDB tests run.
- The validation team's ``reviews`` table (`clinical_ner.data.schemas.REVIEW_SCHEMA`, written by
  the review stack's Lambda under ``reviews/``) and its KPI queries (`REVIEW_QUERIES`) live here
  too: one workgroup and one database for everything the team queries, and the review stack
  stays the serving side (queue, API, identity) with no Athena resources of its own.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_athena as athena
from aws_cdk import aws_glue as glue
from constructs import Construct

from clinical_ner.data.analytics import QUERIES, REVIEW_QUERIES, REVIEW_TABLE
from clinical_ner.data.schemas import ENTITY_SCHEMA, NOTE_SCHEMA, REVIEW_SCHEMA
from clinical_ner.pipeline.stage_config import StageConfig
from stacks.data_lake import DataLakeStack
from stacks.data_prep import DataPrepStack
from stacks.glue_tables import partitioned_parquet_table

# Bytes one query may scan before Athena cancels it (10 GiB dev, 100 GiB otherwise): a
# runaway cross join over years of entities stops at a known cost ($5/TB scanned).
SCAN_LIMIT_BYTES = {"dev": 10 * 1024**3, "staging": 100 * 1024**3, "prod": 100 * 1024**3}
RESULTS_PREFIX = "validation-team/"


class AnalyticsStack(Stack):
    """Exposes `workgroup`, `tables` (name -> CfnTable), `named_queries`, `database_name`."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        data_lake: DataLakeStack,
        data_prep: DataPrepStack,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        lake = config.lake
        bucket = data_lake.lake.bucket_name
        self.database_name = data_prep.database_name
        self.tables = {
            "entities": self._table(
                "EntitiesTable",
                "entities",
                ENTITY_SCHEMA,
                f"s3://{bucket}/{lake.inference_entities}",
                "One row per extracted mention, any of the model's labels (offsets, "
                "confidence, negation, model version). Mention text is PHI.",
            ),
            "notes": self._table(
                "NotesTable",
                "notes",
                NOTE_SCHEMA,
                f"s3://{bucket}/{lake.inference_notes}",
                "One row per extracted note: counts (per label as JSON), length, mean "
                "confidence, model version.",
            ),
            REVIEW_TABLE: self._table(
                "ReviewsTable",
                REVIEW_TABLE,
                REVIEW_SCHEMA,
                f"s3://{bucket}/{lake.reviews}",
                "One row per reviewer decision on a model entity (or an added mention) plus "
                "one note_reviewed row per submitted note: the workbench's KPIs. No note text.",
            ),
        }

        self.workgroup = athena.CfnWorkGroup(
            self,
            "WorkGroup",
            name=f"{config.resource_prefix}-validation",
            description="Clinical NER validation team: entities, notes, quarantine, reviews",
            state="ENABLED",
            recursive_delete_option=True,
            work_group_configuration=athena.CfnWorkGroup.WorkGroupConfigurationProperty(
                enforce_work_group_configuration=True,
                publish_cloud_watch_metrics_enabled=True,
                bytes_scanned_cutoff_per_query=SCAN_LIMIT_BYTES[config.stage.value],
                requester_pays_enabled=False,
                engine_version=athena.CfnWorkGroup.EngineVersionProperty(
                    selected_engine_version="Athena engine version 3"
                ),
                result_configuration=athena.CfnWorkGroup.ResultConfigurationProperty(
                    output_location=(
                        f"s3://{data_lake.athena_results.bucket_name}/{RESULTS_PREFIX}"
                    ),
                    encryption_configuration=athena.CfnWorkGroup.EncryptionConfigurationProperty(
                        encryption_option="SSE_KMS", kms_key=data_lake.key.key_arn
                    ),
                    expected_bucket_owner=self.account,
                ),
            ),
        )
        self.named_queries: dict[str, athena.CfnNamedQuery] = {}
        for q in (*QUERIES, *REVIEW_QUERIES):
            nq = athena.CfnNamedQuery(
                self,
                f"Query{''.join(p.capitalize() for p in q.name.split('_'))}",
                name=q.name,
                description=q.description[:1024],
                database=self.database_name,
                work_group=self.workgroup.ref,
                query_string=q.sql,
            )
            nq.add_dependency(self.workgroup)
            self.named_queries[q.name] = nq
        CfnOutput(self, "WorkGroupName", value=self.workgroup.ref)
        CfnOutput(self, "DatabaseName", value=self.database_name)

    def _table(
        self, cid: str, name: str, schema: pa.Schema, location: str, description: str
    ) -> glue.CfnTable:
        return partitioned_parquet_table(
            self,
            cid,
            catalog_id=self.account,
            database_name=self.database_name,
            name=name,
            description=description,
            schema=schema,
            location=location,
        )
