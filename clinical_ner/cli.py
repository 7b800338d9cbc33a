"""The `clinical-ner` command line: train, evaluate and extract (thin: args -> core -> output)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from thinc.api import ConfigValidationError

from clinical_ner.data.extraction import ModelContractError
from clinical_ner.data.notes import DEFAULT_MAX_CHARS, AccountingError
from clinical_ner.model.readers import (
    AnnotationFormat,
    AnnotationFormatError,
    parse_label_map,
    read_annotations,
)
from clinical_ner.model.recipes import DEFAULT_DATA_ROOT, Recipe, bundled_recipes

if TYPE_CHECKING:
    from clinical_ner.model.training import TrainingInputs


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        default=AnnotationFormat.AUTO.value,
        choices=[f.value for f in AnnotationFormat],
        help="annotation format (default: auto, by file name and content)",
    )
    parser.add_argument(
        "--labels",
        default=None,
        help="label mapping SOURCE=TARGET,... over the defaults "
        "(D=DISEASE,T=TREATMENT,Disease=DISEASE,Chemical=CHEMICAL); TARGET O drops a type",
    )


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _seed(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {raw!r}") from None
    if not 0 <= value < 2**32:  # numpy's seed range
        raise argparse.ArgumentTypeError(f"must be in 0..{2**32 - 1}, got {value}")
    return value


def _open_fraction(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {raw!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {value}")
    return value


def _existing_file(raw: str) -> str:
    if not Path(raw).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {raw}")
    return raw


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("clinical-ner")
    except PackageNotFoundError:  # running from a source tree that is not installed
        from clinical_ner import __version__

        return __version__


def _cmd_train(args: argparse.Namespace) -> int:
    from clinical_ner.model.training import check_output_dir, sigterm_as_exit

    check_output_dir(args.output)  # before reading data: refuse early, destroy nothing
    try:
        with sigterm_as_exit():  # a kill unwinds, so the temp directory is removed
            return _train(args)
    except KeyboardInterrupt:
        print("clinical-ner train: interrupted; no model written", file=sys.stderr)
        return 130


def _recipe_inputs(args: argparse.Namespace, recipe: Recipe) -> TrainingInputs:
    """Training inputs of `--recipe` read from `--data-root` (clinical_ner.model.recipes)."""
    from clinical_ner.model.recipes import read_recipe_data
    from clinical_ner.model.training import TrainingInputs, file_sha256

    data_root = Path(args.data_root)
    data = read_recipe_data(recipe, data_root, log=print)
    print(
        f"recipe {recipe.name}: {recipe.description}; {len(data.train_docs)} train and "
        f"{len(data.dev_docs)} dev docs from {data_root}"
    )
    return TrainingInputs(
        train_docs=data.train_docs,
        dev_docs=data.dev_docs,
        # Keyed by path under the data root, so the version does not depend on where it is.
        data_files={str(p.relative_to(data_root)): file_sha256(p) for p in data.files},
        data_reports={"recipe": recipe.name, "files": data.reports},
        dev_is_split_of_train=False,
        label_map=dict(recipe.labels),
        init_tok2vec=Path(args.init_tok2vec) if args.init_tok2vec else None,
    )


def _train(args: argparse.Namespace) -> int:
    from clinical_ner.model.training import TrainingInputs, file_sha256, split_by_hash

    if args.recipe:
        from clinical_ner.model.recipes import RecipeError, get_recipe

        if args.dev or args.labels:
            raise RecipeError("--recipe sets the data, dev split and labels: drop --dev/--labels")

        recipe = get_recipe(args.recipe)
        inputs = _recipe_inputs(args, recipe)
        overrides: dict[str, object] = dict(recipe.overrides)
        if args.max_steps is not None:
            overrides["training.max_steps"] = args.max_steps
        seed = recipe.seed if args.seed is None else args.seed
        return _run_training(args, inputs, overrides, seed)

    label_map = parse_label_map(args.labels)
    train_docs, train_report = read_annotations(args.train, args.format, label_map)
    print(f"train data: {json.dumps(train_report.as_dict())}")
    dev_is_split = not args.dev
    if args.dev:
        dev_docs, dev_report = read_annotations(args.dev, args.format, label_map)
        print(f"dev data: {json.dumps(dev_report.as_dict())}")
        dev_report_dict: dict[str, object] = dev_report.as_dict()
    else:
        train_docs, dev_docs = split_by_hash(train_docs, args.dev_fraction)
        dev_report_dict = {"split_of_train": args.dev_fraction, "docs": len(dev_docs)}
        print(f"dev data: {len(dev_docs)} docs held out of train by text hash")
    files = [*args.train, *(args.dev or [])]
    inputs = TrainingInputs(
        train_docs=train_docs,
        dev_docs=dev_docs,
        data_files={str(f): file_sha256(f) for f in files},
        data_reports={"train": train_report.as_dict(), "dev": dev_report_dict},
        dev_is_split_of_train=dev_is_split,
        label_map=label_map,
        init_tok2vec=Path(args.init_tok2vec) if args.init_tok2vec else None,
    )
    overrides = {}
    if args.max_steps is not None:
        overrides["training.max_steps"] = args.max_steps
    return _run_training(args, inputs, overrides, 0 if args.seed is None else args.seed)


def _run_training(
    args: argparse.Namespace,
    inputs: TrainingInputs,
    overrides: dict[str, object],
    seed: int,
) -> int:
    from clinical_ner.model.training import train_model

    metrics = train_model(
        inputs, args.output, seed=seed, config_path=args.config, overrides=overrides
    )
    dev = metrics["dev"]
    assert isinstance(dev, dict)
    print(
        f"model {metrics['model_version']} -> {args.output}: dev P {dev['ents_p']:.4f} "
        f"R {dev['ents_r']:.4f} F {dev['ents_f']:.4f}; trained in {metrics['training_seconds']} s"
    )
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from clinical_ner.data.notes import normalise_text, read_notes
    from clinical_ner.model.training import pretrain_tok2vec

    texts: list[str] = []
    if args.notes:
        batch = read_notes(args.notes).collect()
        # The view a model reads at inference (notes are kept as delivered).
        repair = args.mtsamples_repair
        texts.extend(normalise_text(note.text, mtsamples_repair=repair) for note in batch.notes)
        summary = batch.summary.as_dict()
        print(
            f"notes: in {summary['in']}, used {summary['accepted']}, "
            f"quarantined {summary['quarantined']}"
        )
    if args.annotations:
        docs, _ = read_annotations(args.annotations, args.format, parse_label_map(args.labels))
        texts.extend(d.text for d in docs)
        print(f"annotated texts: {len(docs)}")
    if not texts:
        raise ValueError("nothing to pretrain on: pass --notes and/or --annotations")
    weights = pretrain_tok2vec(
        texts, args.output, epochs=args.epochs, seed=args.seed, config_path=args.config
    )
    print(f"weights: {weights}  (use: clinical-ner train --init-tok2vec {weights})")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from clinical_ner.model.inference import NerModel
    from clinical_ner.model.scoring import evaluate_docs

    docs, report = read_annotations(
        args.data, args.format, parse_label_map(args.labels), deduplicate=False
    )
    model = NerModel.load(args.model, enrich=False)  # scores spans and labels only
    result = evaluate_docs(model, docs, batch_size=args.batch_size)
    result["data_report"] = report.as_dict()
    if not args.json:
        print(f"docs {result['docs']}  words {result['words']}  {result['words_per_second']} w/s")
        print(f"{'label':<12} {'P':>7} {'R':>7} {'F':>7} {'support':>8}")
        per_label = result["per_label"]
        assert isinstance(per_label, dict)
        for label, s in per_label.items():
            print(f"{label:<12} {s['p']:7.4f} {s['r']:7.4f} {s['f']:7.4f} {s['support']:8d}")
        print(
            f"{'micro':<12} {result['ents_p']:7.4f} {result['ents_r']:7.4f} {result['ents_f']:7.4f}"
        )
    print(json.dumps(result))
    return 0


# `extract` exit status when no record was processed: every input record was quarantined, or
# the inputs held no record. Outputs (quarantine rows, summary.json) are still written.
EXIT_NOTHING_PROCESSED = 4


def _cmd_extract(args: argparse.Namespace) -> int:
    from clinical_ner.data.extraction import (
        UncalibratedModelError,
        model_metadata_problem,
        prepare_output_dir,
        run_extraction,
    )

    # Everything that can be refused is refused before the model loads and inference runs.
    output = prepare_output_dir(args.output)
    problem = model_metadata_problem(args.model)
    if problem is not None:
        if not args.allow_uncalibrated:
            raise UncalibratedModelError(
                f"{problem}; its confidences are not calibrated. Use a model directory written "
                "by 'clinical-ner train', or pass --allow-uncalibrated to extract anyway"
            )
        print(
            f"clinical-ner extract: warning: {problem}; confidences are uncalibrated",
            file=sys.stderr,
        )
    from clinical_ner.model.inference import NerModel

    model = NerModel.load(args.model)
    summary = run_extraction(
        model,
        [Path(p) for p in args.inputs],
        output,
        batch_size=args.batch_size,
        max_chars=args.max_chars,
        mtsamples_repair=args.mtsamples_repair,
    )
    counts = summary.as_dict()
    line = (
        f"in {counts['in']}  processed {counts['processed']}  "
        f"quarantined {counts['quarantined']}  entities {counts['entities']}"
    )
    print(line)
    print(f"summary: {output / 'summary.json'}")
    print(json.dumps(counts, default=str))
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(summary.quarantined_by_reason.items()))
    if summary.processed == 0:
        why = (
            "no input record found"
            if summary.records_in == 0
            else f"all {summary.records_in} input records quarantined ({reasons})"
        )
        print(f"clinical-ner extract: nothing processed: {why}; {line}", file=sys.stderr)
        return EXIT_NOTHING_PROCESSED
    if summary.quarantined:
        print(
            f"clinical-ner extract: {summary.quarantined} of {summary.records_in} records "
            f"quarantined ({reasons}); see {output / 'quarantine'}",
            file=sys.stderr,
        )
    return 0


def _cmd_local_run(args: argparse.Namespace) -> int:
    from clinical_ner_local.runner import LocalRunError, RunOptions, run

    opts = RunOptions(
        output=Path(args.output),
        annotations=Path(args.annotations) if args.annotations else None,
        notes=Path(args.notes) if args.notes else None,
        stage=args.stage,
        max_steps=args.max_steps,
        cdk_out=Path(args.cdk_out) if args.cdk_out else None,
        drift_windows=not args.no_drift_windows,
    )
    try:
        result = run(opts)
    except LocalRunError as exc:
        print(f"clinical-ner local run: failed: {exc}", file=sys.stderr)
        return 1
    print(f"report: {result.report_path}")
    return 0


def _cmd_review(args: argparse.Namespace) -> int:
    import time

    from clinical_ner_local.review_server import REVIEWER_HEADER, LocalReviewServer

    server = LocalReviewServer(
        Path(args.folder), [Path(p) for p in args.notes], port=args.port, stage=args.stage
    ).start()
    try:
        print(f"queued: {json.dumps(server.enqueued)}; decisions go to {Path(args.folder)}")
        print(f"reviewer identity: the page's name field (header {REVIEWER_HEADER})")
        print(f"workbench: {server.url}  (Ctrl+C to stop)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clinical-ner", description="Clinical DISEASE/TREATMENT NER: train, evaluate, extract"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train", help="train a model from annotated files or a named recipe (--recipe product)"
    )
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--train", nargs="+", metavar="FILE")
    source.add_argument(
        "--recipe",
        metavar="NAME|FILE.toml",
        help=(
            f"a bundled recipe ({', '.join(bundled_recipes())}; clinical_ner/configs/recipes/) or "
            "a recipe file: corpora, splits, per-corpus labels and weights, steps, seed"
        ),
    )
    train.add_argument(
        "--data-root",
        default=str(DEFAULT_DATA_ROOT),
        help=f"where a recipe's corpora are (default {DEFAULT_DATA_ROOT})",
    )
    train.add_argument("--dev", nargs="+", metavar="FILE", help="default: 10%% hash split")
    _add_data_options(train)
    train.add_argument(
        "--output",
        required=True,
        help="model directory to write: new, empty, or a model directory written by train "
        "(replaced); anything else is refused",
    )
    train.add_argument("--seed", type=_seed, default=None, help="default 0 (or the recipe's)")
    train.add_argument(
        "--config", type=_existing_file, default=None, help="spaCy config (default: bundled)"
    )
    train.add_argument(
        "--max-steps", type=_positive_int, default=None, help="override training steps (>= 1)"
    )
    train.add_argument(
        "--dev-fraction",
        type=_open_fraction,
        default=0.1,
        help="share held out as dev without --dev, in (0, 1) (default 0.1)",
    )
    train.add_argument(
        "--init-tok2vec",
        type=_existing_file,
        default=None,
        help="pretrained tok2vec weights (clinical-ner pretrain)",
    )
    train.set_defaults(func=_cmd_train)

    pretrain = sub.add_parser(
        "pretrain", help="pretrain the tok2vec layer on unlabelled notes and annotated texts"
    )
    pretrain.add_argument(
        "--notes",
        nargs="*",
        default=[],
        metavar="PATH",
        help="notes (.txt/.jsonl/.csv or dirs), read with quarantine rules",
    )
    pretrain.add_argument(
        "--annotations",
        nargs="*",
        default=[],
        metavar="FILE",
        help="annotated files whose texts (not labels) are used",
    )
    _add_data_options(pretrain)
    pretrain.add_argument("--output", required=True, help="directory for the weights")
    pretrain.add_argument("--epochs", type=int, default=2)
    pretrain.add_argument(
        "--mtsamples-repair",
        action="store_true",
        help="restore the comma-flattened line breaks of MTSamples transcriptions in --notes",
    )
    pretrain.add_argument("--seed", type=int, default=0)
    pretrain.add_argument("--config", default=None)
    pretrain.set_defaults(func=_cmd_pretrain)

    evaluate = sub.add_parser("evaluate", help="score a model on annotated files")
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--data", nargs="+", required=True, metavar="FILE")
    _add_data_options(evaluate)
    evaluate.add_argument("--json", action="store_true", help="print only the JSON result")
    evaluate.add_argument("--batch-size", type=int, default=128)
    evaluate.set_defaults(func=_cmd_evaluate)

    extract = sub.add_parser(
        "extract",
        help="extract entities from notes into Parquet",
        description="Exit status: 0 when at least one note was processed (quarantined records "
        "are summarised on stderr), 2 for bad arguments or inputs, 3 for an internal error, "
        f"{EXIT_NOTHING_PROCESSED} when no note was processed (all records quarantined, or "
        "no record at all).",
    )
    extract.add_argument("--model", required=True)
    extract.add_argument("inputs", nargs="+", metavar="INPUT", help=".txt/.jsonl/.csv or dirs")
    extract.add_argument("--output", required=True)
    extract.add_argument("--batch-size", type=int, default=64)
    extract.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS)
    extract.add_argument(
        "--allow-uncalibrated",
        action="store_true",
        help="accept a model directory without clinical-ner metadata (e.g. a raw spaCy "
        "model-best); its confidences are not calibrated",
    )
    extract.add_argument(
        "--mtsamples-repair",
        action="store_true",
        help="let the model read MTSamples transcriptions with their comma-flattened line "
        "breaks restored (off by default; offsets always index the notes as delivered)",
    )
    extract.set_defaults(func=_cmd_extract)

    local = sub.add_parser("local", help="run the whole AWS pipeline locally (emulated AWS)")
    local_sub = local.add_subparsers(dest="local_command", required=True)
    local_run = local_sub.add_parser(
        "run",
        help="train, gate, deploy, extract, query and monitor drift on this machine "
        "(docs/local-mode.md)",
    )
    local_run.add_argument(
        "--annotations",
        default=None,
        metavar="DIR",
        help="annotated files (default: the bundled synthetic samples)",
    )
    local_run.add_argument(
        "--notes",
        default=None,
        metavar="DIR",
        help="notes to extract (default: the bundled synthetic samples)",
    )
    local_run.add_argument(
        "--output",
        default="local-run",
        metavar="DIR",
        help="report and work directory (default: ./local-run)",
    )
    local_run.add_argument("--stage", default="dev", choices=["dev", "staging", "prod"])
    local_run.add_argument(
        "--max-steps",
        type=int,
        default=300,
        help="training steps of the local training job (default 300)",
    )
    local_run.add_argument(
        "--cdk-out",
        default=None,
        metavar="DIR",
        help="read this synthesized cdk.out instead of synthesizing",
    )
    local_run.add_argument(
        "--no-drift-windows",
        action="store_true",
        help="skip the bundled reference/in-distribution/shifted windows",
    )
    local_run.set_defaults(func=_cmd_local_run)

    review = sub.add_parser(
        "review",
        help="serve the review workbench on 127.0.0.1 over a local run or extract output "
        "(docs/review.md)",
    )
    review.add_argument(
        "folder",
        nargs="?",
        default="local-run/work/lake",
        help="a local run's lake mirror (default local-run/work/lake) or the --output of "
        "clinical-ner extract; decisions are written into it",
    )
    review.add_argument(
        "--notes", nargs="*", default=[], metavar="PATH", help="note files (for extract output)"
    )
    review.add_argument("--port", type=int, default=0, help="default: a free port")
    review.add_argument("--stage", default="dev", choices=["dev", "staging", "prod"])
    review.set_defaults(func=_cmd_review)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigValidationError as exc:  # spaCy's message embeds the whole config: summarise
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg')}" for e in exc.errors
        )
        print(f"clinical-ner {args.command}: config error: {problems}", file=sys.stderr)
        return 2
    except (AnnotationFormatError, FileNotFoundError, ValueError) as exc:
        print(f"clinical-ner {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (AccountingError, ModelContractError) as exc:  # a bug, not bad input: say so plainly
        print(f"clinical-ner {args.command}: internal error: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
