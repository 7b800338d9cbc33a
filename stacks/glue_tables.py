"""Glue catalog tables over the lake's ``dt``-partitioned Parquet, with partition projection.

One definition for every table (curated notes and quarantine in the data-prep stack, entities
and notes in the analytics stack): columns come from the Arrow schema in
`clinical_ner.data.schemas` (the single record contract), and ``dt`` is projected as a date from
`PARTITION_RANGE_START` to NOW, so a partition is queryable as soon as its files land.
"""

from __future__ import annotations

import pyarrow as pa
from aws_cdk import aws_glue as glue
from constructs import Construct

from clinical_ner.data.schemas import PARTITION_COLUMN

PARTITION_RANGE_START = "2024-01-01"
COMMENT_MAX = 255  # Glue's column comment limit


def glue_type(t: pa.DataType) -> str:
    """Glue/Hive column type of an Arrow type used by the record contracts."""
    if pa.types.is_list(t):
        return f"array<{glue_type(t.value_type)}>"
    if pa.types.is_struct(t):
        return "struct<" + ",".join(f"{f.name}:{glue_type(f.type)}" for f in t) + ">"
    for check, name in (
        (pa.types.is_string, "string"),
        (pa.types.is_int32, "int"),
        (pa.types.is_int64, "bigint"),
        (pa.types.is_float32, "float"),
        (pa.types.is_float64, "double"),
        (pa.types.is_boolean, "boolean"),
        (pa.types.is_timestamp, "timestamp"),
    ):
        if check(t):
            return name
    raise TypeError(f"no Glue type for {t}")


def column_comment(f: pa.Field) -> str:
    """The field's ``description`` metadata, cut to Glue's limit."""
    text = (f.metadata or {}).get(b"description", b"").decode()
    return text if len(text) <= COMMENT_MAX else text[: COMMENT_MAX - 3] + "..."


def partitioned_parquet_table(
    scope: Construct,
    cid: str,
    *,
    catalog_id: str,
    database_name: str,
    name: str,
    description: str,
    schema: pa.Schema,
    location: str,
) -> glue.CfnTable:
    """External Parquet table `name` at `location` (``s3://.../``), partitioned by ``dt``."""
    columns = [
        glue.CfnTable.ColumnProperty(name=f.name, type=glue_type(f.type), comment=column_comment(f))
        for f in schema
        if f.name != PARTITION_COLUMN
    ]
    return glue.CfnTable(
        scope,
        cid,
        catalog_id=catalog_id,
        database_name=database_name,
        table_input=glue.CfnTable.TableInputProperty(
            name=name,
            description=description,
            table_type="EXTERNAL_TABLE",
            parameters={
                "classification": "parquet",
                "EXTERNAL": "TRUE",
                "projection.enabled": "true",
                "projection.dt.type": "date",
                "projection.dt.format": "yyyy-MM-dd",
                "projection.dt.range": f"{PARTITION_RANGE_START},NOW",
                "projection.dt.interval": "1",
                "projection.dt.interval.unit": "DAYS",
                "storage.location.template": location + "dt=${dt}/",
            },
            partition_keys=[
                glue.CfnTable.ColumnProperty(
                    name=PARTITION_COLUMN, type="string", comment="UTC run date, YYYY-MM-DD"
                )
            ],
            storage_descriptor=glue.CfnTable.StorageDescriptorProperty(
                columns=columns,
                location=location,
                input_format="org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
                output_format="org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
                serde_info=glue.CfnTable.SerdeInfoProperty(
                    serialization_library=(
                        "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
                    )
                ),
            ),
        ),
    )
