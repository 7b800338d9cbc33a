"""What scoring the production model costs a training job (the gate's like-with-like baseline).

    python benchmarks/production_baseline.py --model benchmarks/results/models/ncbi \
        --dev ../shared/data/NCBI-disease-IOB/devel.tsv

Packs `--model` as the ``model.tar.gz`` a training job writes, puts it in the ``production``
channel of a temporary SageMaker root, reads `--dev` (and `--test`, when given) as the
candidate's documents and times `clinical_ner.runtime.sagemaker_train.production_baseline`: archive
check and extraction, model load, scoring. Prints the seconds, the documents scored and the
production model's F1 on them, then one JSON line (also written to `--output` when given).
Nothing from the corpus is written anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from clinical_ner.model.readers import read_annotations  # noqa: E402
from clinical_ner.runtime.sagemaker_train import (  # noqa: E402
    PRODUCTION_CHANNEL,
    JobPaths,
    production_baseline,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a trained model directory")
    parser.add_argument("--dev", type=Path, required=True, help="annotated dev file(s)")
    parser.add_argument("--test", type=Path, help="annotated test file (optional)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    dev_docs, _ = read_annotations([args.dev])
    test = None
    if args.test:
        test_docs, report = read_annotations([args.test])
        test = (test_docs, report.as_dict())
    with tempfile.TemporaryDirectory(prefix="production-baseline-") as tmp:
        root = Path(tmp)
        channel = root / "input" / "data" / PRODUCTION_CHANNEL
        channel.mkdir(parents=True)
        archive = channel / "model.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for path in sorted(args.model.rglob("*")):
                tar.add(path, arcname=f"./{path.relative_to(args.model)}", recursive=False)
        archive_mb = archive.stat().st_size / 1e6
        started = time.perf_counter()
        baseline = production_baseline(JobPaths(root), dev_docs, test, args.batch_size)
        seconds = time.perf_counter() - started
    assert baseline is not None
    result = {
        "model_version": baseline["model_version"],
        "archive_mb": round(archive_mb, 1),
        "dev_docs": len(dev_docs),
        "test_docs": len(test[0]) if test else 0,
        "seconds": round(seconds, 1),
        "dev_f1": round(baseline["dev"]["ents_f"], 4),  # type: ignore[index]
    }
    if test:
        result["test_f1"] = round(baseline["test"]["ents_f"], 4)  # type: ignore[index]
    print(
        f"production baseline of {result['model_version']} ({result['archive_mb']} MB archive): "
        f"{result['seconds']} s for {result['dev_docs']} dev + {result['test_docs']} test docs; "
        f"dev F1 {result['dev_f1']}"
    )
    print(json.dumps(result))
    if args.output:
        args.output.write_text(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
