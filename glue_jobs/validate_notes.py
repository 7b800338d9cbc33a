"""Glue 5.0 job: raw/notes -> curated/notes/dt=.../ + quarantine/dt=.../ + a run summary.

Thin by design: arguments -> `data.data_prep` (which drives `data.notes`) ->
Spark I/O. Runs unchanged on Glue (``--lake_root s3://bucket``) and on local Spark
(``--lake_root /tmp/lake``):

    python glue_jobs/validate_notes.py --lake_root /tmp/lake [--run_date 2024-01-31]

Each object under ``raw/notes/`` is processed once: the ledger under ``_state/`` records the
key, size and last-modified time of every object a run completed, and later runs skip those
(the Glue job bookmark equivalent for byte-level reads; see docs/infrastructure.md). Re-running
over the same input therefore writes nothing; a run interrupted after writing data is
repaired on the next run without duplicate rows (see `data_prep.resolve_duplicates`).

Curated notes keep their text as delivered, with ``note_sha256`` of that text: the model reads a
normalised view later and maps its offsets back (`clinical_ner.data.notes.model_view`). No
corpus-specific repair runs here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import uuid
from typing import Any

from clinical_ner.data import data_prep as dp
from clinical_ner.data.notes import DEFAULT_MAX_CHARS
from clinical_ner.pipeline.stage_config import LAKE

LEDGER_KEY = f"{LAKE.job_state}{dp.VALIDATE_JOB}/ledger/"
ROWS_PER_OUTPUT_FILE = 20_000


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lake_root", required=True, help="s3://bucket or a local directory")
    p.add_argument("--run_date", default="", help="partition date YYYY-MM-DD (default: today UTC)")
    p.add_argument("--run_id", default="", help="default: the Glue job run id, else random")
    p.add_argument("--max_chars", type=int, default=DEFAULT_MAX_CHARS)
    p.add_argument("--JOB_RUN_ID", default="")  # supplied by Glue
    # Glue adds its own arguments (--JOB_NAME, --TempDir, --job-bookmark-option, ...).
    args, _unknown = p.parse_known_args(argv)
    args.run_date = dp.check_dt(args.run_date or dp.utc_today())
    args.run_id = args.run_id or args.JOB_RUN_ID or f"local-{uuid.uuid4().hex[:12]}"
    return args


def spark_session(app_name: str) -> Any:
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.appName(app_name).getOrCreate()
    configure(spark)
    return spark


def configure(spark: Any) -> None:
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    # Athena, DuckDB and pyarrow read micros natively; Spark's INT96 default is legacy.
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")


def run(spark: Any, args: argparse.Namespace) -> dict[str, Any]:
    from pyspark import StorageLevel

    configure(spark)
    lake = dp.SparkLake(spark, args.lake_root)
    started = dt.datetime.now(dt.UTC)
    summary = dp.RunSummary(run_id=args.run_id, dt=args.run_date, started_at=started.isoformat())

    # 1. List raw objects (metadata only) and drop those the ledger has seen.
    listed = lake.list_objects(LAKE.raw_notes)
    processed: list[tuple[str, int, dt.datetime]] = []
    if lake.has_data_files(LEDGER_KEY):
        rows = spark.read.parquet(lake.uri(LEDGER_KEY)).select(
            "source", "size_bytes", "modified_at"
        )
        processed = [(r.source, r.size_bytes, r.modified_at) for r in rows.collect()]
    new, old = dp.select_new_objects(listed, processed)
    summary.objects_listed = len(listed)
    summary.objects_skipped = len(old)
    summary.objects_processed = len(new)

    if new:
        _process(spark, lake, args, new, summary, started, StorageLevel.MEMORY_AND_DISK)

    summary.finished_at = dt.datetime.now(dt.UTC).isoformat()
    report = summary.to_dict()  # raises AccountingError if in != curated + quarantined
    lake.write_json(
        f"{LAKE.run_reports}{dp.VALIDATE_JOB}/dt={args.run_date}/{args.run_id}.json", report
    )
    return report


def _process(
    spark: Any,
    lake: dp.SparkLake,
    args: argparse.Namespace,
    new: list[dp.ObjectRef],
    summary: dp.RunSummary,
    started: dt.datetime,
    storage: Any,
) -> None:
    sc = spark.sparkContext
    root, max_chars, run_id = lake.root, args.max_chars, args.run_id

    def read_object(row: Any) -> dp.ObjectResult:
        path = str(row.path)
        key = path[len(root) + 1 :] if path.startswith(root + "/") else path
        return dp.process_note_object(key, bytes(row.content), max_chars=max_chars)

    # 2. Read and validate each new object on the executors (the core reader, per object).
    #    Spark's binaryFile source skips empty and hidden files; those few are read on the
    #    driver so that they are quarantined like any other object, never dropped.
    content = spark.read.format("binaryFile").load([lake.uri(r.source) for r in new])
    on_executors = content.select("path", "content").rdd.map(read_object).persist(storage)
    returned = set(on_executors.map(lambda r: r.source).collect())
    on_driver = [
        dp.process_note_object(r.source, lake.read_bytes(r.source), max_chars=max_chars)
        for r in new
        if r.source not in returned
    ]
    results = on_executors.union(sc.parallelize(on_driver, 1))
    try:
        per_object = results.map(
            lambda r: (
                r.source,
                r.object_sha256,
                r.summary.records_in,
                r.summary.accepted,
                [dp.quarantine_key(q) for q in r.quarantined],
                [dp.note_key(n) for n in r.notes],
            )
        ).collect()
        by_source = {p[0]: p for p in per_object}
        missing = [r.source for r in new if r.source not in by_source]
        if missing:
            raise RuntimeError(f"{len(missing)} listed object(s) were not read, e.g. {missing[0]}")

        # 3. Note-id uniqueness across objects, runs and the curated table (driver, no text).
        existing: dict[str, tuple[str, str]] = {}
        if lake.has_data_files(LAKE.curated_notes):
            cur = spark.read.parquet(lake.uri(LAKE.curated_notes))
            for r in cur.select("note_id", "note_sha256", "source").collect():
                existing.setdefault(r.note_id, (r.note_sha256, r.source))
        candidates = [k for p in per_object for k in p[5]]
        resolution = dp.resolve_duplicates(candidates, existing)
        existing_q: set[tuple[str, int, str]] = set()
        sources = sorted(by_source)
        if lake.has_data_files(LAKE.quarantine):
            q = spark.read.parquet(lake.uri(LAKE.quarantine)).select("source", "locator", "reason")
            for r in q.where(q.source.isin(sources)).collect():
                existing_q.add((r.source, -1 if r.locator is None else r.locator, r.reason))
        to_write = dp.summarise_run(
            summary, [(p[2], p[4]) for p in per_object], resolution, existing_q
        )

        # 4. Write curated notes and quarantine rows for this run's partition.
        decisions = sc.broadcast(resolution.decisions)
        q_write = sc.broadcast(to_write)
        curated_schema = dp.CURATED_NOTE_FILE_SCHEMA
        quarantine_schema = dp.QUARANTINE_FILE_SCHEMA

        def curated_rows(res: dp.ObjectResult) -> list[tuple[Any, ...]]:
            return [
                dp.as_tuple(dp.curated_row(n, run_id=run_id, ingested_at=started), curated_schema)
                for n in res.notes
                if decisions.value.get(dp.note_key(n).record_key) is dp.Decision.WRITE
            ]

        def reader_quarantine_rows(res: dp.ObjectResult) -> list[tuple[Any, ...]]:
            return [
                dp.as_tuple(dp.quarantine_row(q, quarantined_at=started), quarantine_schema)
                for q in res.quarantined
                if dp.quarantine_key(q) in q_write.value
            ]

        if summary.curated_written:
            df = spark.createDataFrame(
                results.flatMap(curated_rows), dp.spark_schema(curated_schema)
            )
            df.coalesce(_files_for(summary.curated_written)).write.mode("append").parquet(
                lake.uri(dp.partition_prefix(LAKE.curated_notes, args.run_date))
            )
        if summary.quarantined_written:
            dup_rows = [
                dp.as_tuple(dp.quarantine_row(q, quarantined_at=started), quarantine_schema)
                for q in resolution.rejected.values()
                if dp.quarantine_key(q) in to_write
            ]
            rows = results.flatMap(reader_quarantine_rows).union(sc.parallelize(dup_rows, 1))
            df = spark.createDataFrame(rows, dp.spark_schema(quarantine_schema))
            df.coalesce(_files_for(summary.quarantined_written)).write.mode("append").parquet(
                lake.uri(dp.partition_prefix(LAKE.quarantine, args.run_date))
            )

        # 5. Only now record the objects as done (a crash before this re-reads them safely).
        refs = {r.source: r for r in new}
        ledger = [
            dp.as_tuple(
                dp.ledger_row(
                    refs[src],
                    object_sha256=p[1],
                    records_in=p[2],
                    accepted=p[3],
                    quarantined=len(p[4]),
                    run_id=run_id,
                    processed_at=started,
                ),
                dp.LEDGER_SCHEMA,
            )
            for src, p in sorted(by_source.items())
        ]
        spark.createDataFrame(ledger, dp.spark_schema(dp.LEDGER_SCHEMA)).coalesce(1).write.mode(
            "append"
        ).parquet(lake.uri(LEDGER_KEY))
    finally:
        on_executors.unpersist()


def _files_for(rows: int) -> int:
    return max(1, min(64, -(-rows // ROWS_PER_OUTPUT_FILE)))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    spark = spark_session(f"{dp.VALIDATE_JOB}-{args.run_id}")
    report = run(spark, args)
    # Counts only: no note text, no note ids.
    print(
        f"{dp.VALIDATE_JOB} {args.run_id}: in={report['in']} curated={report['curated']} "
        f"quarantined={report['quarantined']} objects={report['objects']}",
        file=sys.stderr,
    )
    return report


if __name__ == "__main__":
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    main()
