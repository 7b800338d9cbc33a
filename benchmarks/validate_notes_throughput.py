"""Throughput of the validate_notes Glue job on local Spark (notes/s), on MTSamples.

    python benchmarks/validate_notes_throughput.py [--data PATH] [--cores 2] [--objects 8]

Runs the real job (`glue_jobs/validate_notes.py`, `run()`) against a temporary lake outside
the repository; the shared data file is only read, never copied into the repo. Three numbers:

- ``single_csv``: the whole CSV as one raw object. One object is one Spark task, so this
  uses one core however many there are: the worst case for a big single drop.
- ``split_jsonl``: the same rows as ``--objects`` JSONL objects, so all cores work.
- ``core_only``: `clinical_ner.data.data_prep.process_note_object` on the CSV bytes in this
  process (no Spark): the per-core ceiling of the validation logic itself.

Spark session start-up (JVM launch) is excluded; everything a run does (listing, ledger,
reading, validating, duplicate resolution, Parquet writes, summary) is included. Each mode
runs on a fresh lake. Results are printed as JSON (and written with ``--out``).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "mtsamples" / "mtsamples.csv"
sys.path.insert(0, str(REPO_ROOT))

from clinical_ner.data import data_prep as dp  # noqa: E402
from clinical_ner.pipeline.stage_config import LAKE  # noqa: E402


def _job() -> Any:
    path = REPO_ROOT / "glue_jobs" / "validate_notes.py"
    spec = importlib.util.spec_from_file_location("validate_notes_job", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _split_to_jsonl(src: Path, dest_dir: Path, objects: int) -> int:
    csv.field_size_limit(2**31 - 1)
    with src.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    dest_dir.mkdir(parents=True, exist_ok=True)
    outs = [(dest_dir / f"part-{i:03d}.jsonl").open("w", encoding="utf-8") for i in range(objects)]
    try:
        for i, row in enumerate(rows):
            record = {"note_id": row["note_id"], "text": row["transcription"]}
            outs[i % objects].write(json.dumps(record, ensure_ascii=False) + "\n")
    finally:
        for fh in outs:
            fh.close()
    return len(rows)


def _timed_run(job: Any, spark: Any, lake: Path, label: str) -> dict[str, Any]:
    args = job.parse_args(
        ["--lake_root", str(lake), "--run_date", "2024-01-01", "--run_id", f"bench-{label}"]
    )
    start = time.perf_counter()
    report = job.run(spark, args)
    seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 2),
        "records_in": report["in"],
        "curated": report["curated"],
        "quarantined": report["quarantined"],
        "quarantined_by_reason": report["quarantined_by_reason"],
        "notes_per_second": round(report["in"] / seconds, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--objects", type=int, default=8, help="JSONL objects in split mode")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    if not args.data.is_file():
        raise SystemExit(f"data file not found: {args.data}")

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master(f"local[{args.cores}]")
        .appName("validate-notes-benchmark")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", str(args.cores))
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    job = _job()
    results: dict[str, Any] = {
        "data": str(args.data),
        "data_bytes": args.data.stat().st_size,
        "cores": args.cores,
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    work = Path(tempfile.mkdtemp(prefix="validate-bench-"))
    try:
        # Warm-up on a tiny lake so JIT/class loading is not billed to the first mode.
        warm = work / "warm"
        (warm / LAKE.raw_notes).mkdir(parents=True)
        (warm / LAKE.raw_notes / "w.jsonl").write_text('{"note_id": "w", "text": "warm up"}\n')
        _timed_run(job, spark, warm, "warm")

        single = work / "single"
        (single / LAKE.raw_notes).mkdir(parents=True)
        shutil.copyfile(args.data, single / LAKE.raw_notes / args.data.name)
        results["single_csv"] = _timed_run(job, spark, single, "single")

        split = work / "split"
        _split_to_jsonl(args.data, split / LAKE.raw_notes, args.objects)
        results["split_jsonl"] = {"objects": args.objects, **_timed_run(job, spark, split, "split")}

        data = args.data.read_bytes()
        start = time.perf_counter()
        core = dp.process_note_object(f"{LAKE.raw_notes}{args.data.name}", data)
        seconds = time.perf_counter() - start
        results["core_only"] = {
            "seconds": round(seconds, 2),
            "records_in": core.summary.records_in,
            "notes_per_second": round(core.summary.records_in / seconds, 1),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
        spark.stop()
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return results


if __name__ == "__main__":
    main()
