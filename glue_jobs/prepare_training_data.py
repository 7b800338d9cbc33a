"""Glue 5.0 job: raw/annotations -> curated/training/<dataset_version>/ (JSONL splits + manifest).

Thin by design: arguments -> `clinical_ner.data.data_prep.build_training_dataset` (which drives the
core annotation readers) -> Spark/Hadoop I/O. Annotation sets are small (megabytes), so Spark
reads every object under ``raw/annotations/`` and the driver builds the dataset; the whole set
is one dataset because duplicates are dropped across files.

    python glue_jobs/prepare_training_data.py --lake_root /tmp/lake

The dataset version is a content hash, so re-running over the same annotations finds the
version's manifest already written and writes nothing. The manifest is written last: a
version directory without ``manifest.json`` is incomplete and is rewritten by the next run.
``curated/training/_latest.json`` names the newest version for the training pipeline.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import uuid
from typing import Any

from clinical_ner.data import data_prep as dp
from clinical_ner.pipeline.stage_config import LAKE

LATEST_KEY = f"{LAKE.curated_training}_latest.json"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lake_root", required=True, help="s3://bucket or a local directory")
    p.add_argument("--label_map", default="", help="extra SOURCE=TARGET label mappings")
    p.add_argument("--dev_fraction", type=float, default=dp.SplitSpec.dev_fraction)
    p.add_argument("--test_fraction", type=float, default=dp.SplitSpec.test_fraction)
    p.add_argument("--run_date", default="")
    p.add_argument("--run_id", default="")
    p.add_argument("--JOB_RUN_ID", default="")  # supplied by Glue
    args, _unknown = p.parse_known_args(argv)
    args.run_date = dp.check_dt(args.run_date or dp.utc_today())
    args.run_id = args.run_id or args.JOB_RUN_ID or f"local-{uuid.uuid4().hex[:12]}"
    return args


def run(spark: Any, args: argparse.Namespace) -> dict[str, Any]:
    from clinical_ner.model.readers import parse_label_map

    lake = dp.SparkLake(spark, args.lake_root)
    started = dt.datetime.now(dt.UTC)
    if not lake.has_data_files(LAKE.raw_annotations):
        raise dp.EmptyDatasetError(f"no annotation object under {lake.uri(LAKE.raw_annotations)}")
    rows = (
        spark.read.format("binaryFile")
        .option("recursiveFileLookup", "true")
        .load(lake.uri(LAKE.raw_annotations))
        .select("path", "content")
        .collect()
    )
    files = {lake.key(r.path)[len(LAKE.raw_annotations) :]: bytes(r.content) for r in rows}
    dataset = dp.build_training_dataset(
        files,
        labels=parse_label_map(args.label_map or None),
        split=dp.SplitSpec(dev_fraction=args.dev_fraction, test_fraction=args.test_fraction),
    )
    # Manifest sources are relative to raw/annotations/; name them by full key for readers.
    for src in dataset.manifest["sources"]:
        src["key"] = LAKE.raw_annotations + src["key"]
    for rej in dataset.manifest["rejected_files"]:
        rej["source"] = LAKE.raw_annotations + rej["source"]

    prefix = dp.training_prefix(LAKE.curated_training, dataset.dataset_version)
    manifest_key = f"{prefix}manifest.json"
    already = lake.exists(manifest_key)
    if not already:
        for name, content in sorted(dataset.files.items()):
            lake.write_bytes(prefix + name, content)
        manifest = dict(dataset.manifest, created_at=started.isoformat(), run_id=args.run_id)
        lake.write_json(manifest_key, manifest)  # last: marks the version complete
    latest = {
        "dataset_version": dataset.dataset_version,
        "manifest_key": manifest_key,
        "updated_at": started.isoformat(),
    }
    lake.write_json(LATEST_KEY, latest)
    report = {
        "job": dp.PREPARE_JOB,
        "run_id": args.run_id,
        "dt": args.run_date,
        "dataset_version": dataset.dataset_version,
        "prefix": prefix,
        "already_existed": already,
        "docs_total": dataset.manifest["docs_total"],
        "splits": {k: v["docs"] for k, v in dataset.manifest["splits"].items()},
        "files_read": len(files),
        "rejected_files": dataset.manifest["rejected_files"],
        "started_at": started.isoformat(),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    lake.write_json(
        f"{LAKE.run_reports}{dp.PREPARE_JOB}/dt={args.run_date}/{args.run_id}.json", report
    )
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from pyspark.sql import SparkSession

    args = parse_args(sys.argv[1:] if argv is None else argv)
    spark = SparkSession.builder.appName(f"{dp.PREPARE_JOB}-{args.run_id}").getOrCreate()
    report = run(spark, args)
    print(
        f"{dp.PREPARE_JOB} {args.run_id}: version={report['dataset_version']} "
        f"docs={report['docs_total']} splits={report['splits']} "
        f"rejected_files={len(report['rejected_files'])}",
        file=sys.stderr,
    )
    return report


if __name__ == "__main__":
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    main()
