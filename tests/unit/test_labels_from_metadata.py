"""Every consumer takes the label set from the model's own metadata, never from a constant.

Tiny models trained in-test with a third label (SYMPTOM, split off DISEASE) and with a made-up
one (PROCEDURE, split off TREATMENT) go through local extraction, Batch Transform publish (the
label set read from the model's metrics.json), Parquet, every named query in DuckDB and the
drift profile/compare/monitor; the new label's rows must be present everywhere. A source scan
fails if a fixed label list or a label literal sneaks back into a consumer module.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from tiny_model import ANNOTATIONS, NOTES, STEPS
from transform_output import transform_answer_lines

from clinical_ner.data import analytics, publish
from clinical_ner.data.extraction import ModelContractError, run_extraction
from clinical_ner.data.notes import Note, content_sha256
from clinical_ner.model import drift
from clinical_ner.model.inference import MODEL_CARD_FILE, NerModel
from clinical_ner.model.training import METRICS_FILE
from clinical_ner.pipeline import monitoring
from clinical_ner.pipeline.stage_config import load_stage_config
from clinical_ner.runtime.sagemaker_train import min_label_f1

duckdb = pytest.importorskip("duckdb", reason="duckdb missing: pip install duckdb")

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2024, 5, 2, 9, 30, tzinfo=UTC)
DT = "2024-05-02"
# (new label, the label it is split off): every other distinct text of the source label.
SCHEMES = {"symptom": ("SYMPTOM", "DISEASE"), "procedure": ("PROCEDURE", "TREATMENT")}


def _relabeled(source: Path, target: Path, new_label: str, from_label: str) -> set[str]:
    """Copy `source` with half of `from_label`'s distinct texts relabelled `new_label`."""
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()]
    texts = Counter(
        r["text"][s:e].lower() for r in rows for s, e, lab in r["label"] if lab == from_label
    )
    moved = {t for i, (t, _) in enumerate(sorted(texts.items(), key=lambda tc: (-tc[1], tc[0])))
             if i % 2 == 0}  # fmt: skip
    labels: set[str] = set()
    with target.open("w", encoding="utf-8") as out:
        for r in rows:
            spans = []
            for s, e, lab in r["label"]:
                if lab == from_label and r["text"][s:e].lower() in moved:
                    lab = new_label
                spans.append([s, e, lab])
                labels.add(lab)
            out.write(json.dumps({**r, "label": spans}) + "\n")
    return labels


@pytest.fixture(scope="module", params=sorted(SCHEMES))
def labelled_model(request, tmp_path_factory) -> tuple[NerModel, Path, str, set[str]]:
    from clinical_ner.model.readers import parse_label_map, read_annotations
    from clinical_ner.model.training import TrainingInputs, split_by_hash, train_model

    new_label, from_label = SCHEMES[request.param]
    root = tmp_path_factory.mktemp(f"labels-{request.param}")
    data = root / "annotations.jsonl"
    labels = _relabeled(ANNOTATIONS, data, new_label, from_label)
    assert new_label in labels and len(labels) >= 3
    # A label the readers do not know is mapped in, as `--labels PROCEDURE=PROCEDURE` would.
    docs, report = read_annotations([data], labels=parse_label_map(f"{new_label}={new_label}"))
    train, dev = split_by_hash(docs, 0.15)
    model_dir = root / "model"
    train_model(
        TrainingInputs(train, dev, {str(data): "sha"}, {"train": report.as_dict()}),
        model_dir,
        seed=3,
        overrides={"training.max_steps": STEPS},
        log=lambda _: None,
    )
    return NerModel.load(model_dir), model_dir, new_label, labels


def _metadata_labels(model_dir: Path) -> tuple[str, ...]:
    metrics = json.loads((model_dir / METRICS_FILE).read_text(encoding="utf-8"))
    return publish.model_labels(metrics, METRICS_FILE)


def _notes() -> list[Note]:
    rows = [json.loads(line) for line in NOTES.read_text(encoding="utf-8").splitlines()]
    return [
        Note(r["note_id"], r["text"], "raw/notes/x.jsonl", i + 1, content_sha256(r["text"]))
        for i, r in enumerate(rows)
    ]


def _answers(model: NerModel, notes: list[Note]) -> dict[str, dict[str, object]]:
    return publish.parse_transform_output(transform_answer_lines(model, notes))


def _label_counts(out: Path) -> Counter[str]:
    return Counter(pq.read_table(out / "entities", columns=["label"]).column("label").to_pylist())


def test_model_metadata_carries_the_label_set(labelled_model):
    model, model_dir, new_label, labels = labelled_model
    card = json.loads((model_dir / MODEL_CARD_FILE).read_text(encoding="utf-8"))
    assert _metadata_labels(model_dir) == tuple(sorted(labels)) == tuple(model.labels)
    assert publish.model_labels(card, MODEL_CARD_FILE) == tuple(model.labels)
    assert new_label in model.labels


def test_new_label_goes_through_extract_publish_queries_and_drift(labelled_model, tmp_path):
    model, model_dir, new_label, labels = labelled_model
    notes = _notes()

    # 1. Local extraction (labels: the loaded model's NER labels), plus bad records.
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(NOTES, inputs / "notes.jsonl")
    (inputs / "bad.jsonl").write_text('{"note_id": "bad-1", "text": ""}\n')
    local = tmp_path / "local"
    summary = run_extraction(model, [inputs], local, now=NOW)
    assert set(summary.entities_by_label) == labels
    assert summary.entities_by_label[new_label] > 0
    assert _label_counts(local)[new_label] == summary.entities_by_label[new_label]

    # 2. Publish of Batch Transform answers, labels from the model's metrics.json.
    out = tmp_path / "published"
    result = publish.publish_transform_output(
        notes, _answers(model, notes), out, dt=DT, labels=_metadata_labels(model_dir), now=NOW
    )
    assert result.as_dict()["entities_by_label"][new_label] > 0
    published = _label_counts(out)
    assert published == _label_counts(local) and published[new_label] > 0
    for row in pq.read_table(out / "notes").to_pylist():
        assert sorted(json.loads(row["entity_counts_by_label"])) == sorted(labels)

    # 3. Every named query in DuckDB over the published tables (quarantine from step 1).
    shutil.copytree(local / "quarantine", out / "quarantine")
    note_id = next(n.note_id for n in notes)
    results = analytics.run_local(out, {"note_extractions": {"note_id": note_id}})
    cols, rows = results["label_counts_by_day"]
    by_label = {r[cols.index("label")]: r[cols.index("mentions")] for r in rows}
    assert by_label == {k: v for k, v in published.items()}
    cols, rows = results["labels_by_model_version"]
    assert {r[cols.index("label")]: r[cols.index("mentions")] for r in rows} == by_label
    assert sum(r[cols.index("share_of_mentions")] for r in rows) == pytest.approx(1.0)
    cols, rows = results["label_pairs"]
    pairs = {(r[cols.index("label_a")], r[cols.index("label_b")]) for r in rows}
    assert any(new_label in pair for pair in pairs)
    assert all(a < b for a, b in pairs)
    cols, rows = results["model_version_comparison"]
    assert rows[0][cols.index("entities")] == sum(published.values())
    assert not [c for c in cols if any(label.lower() in c for label in labels)]

    # 4. Drift: a baseline without the new label, windows with it (and the reverse).
    texts = [n.text for n in notes]
    rows_by_note: dict[str, list[dict]] = {}
    for row in pq.read_table(out / "entities").to_pylist():
        rows_by_note.setdefault(row["note_id"], []).append(row)
    window_entities = [rows_by_note.get(n.note_id, []) for n in notes]
    old_labels = sorted(labels - {new_label})
    without_new = [[e for e in ents if e["label"] != new_label] for ents in window_entities]
    old_baseline = drift.build_profile(texts, without_new, labels=old_labels, min_doc_freq=5)
    assert new_label not in old_baseline["labels"]
    window = drift.build_profile(texts, window_entities, reference=old_baseline)
    assert window["entities"]["counts"][new_label] == published[new_label]
    signals = drift.compare(old_baseline, window)
    assert f"entity_density_rel_change.{new_label}" in signals
    assert signals["psi_label_mix"] is not None
    new_baseline = drift.build_profile(texts, window_entities, labels=model.labels, min_doc_freq=5)
    assert new_label in new_baseline["labels"]
    lacking = drift.build_profile(texts, without_new, reference=new_baseline)
    assert lacking["entities"]["counts"][new_label] == 0
    assert f"entity_density_rel_change.{new_label}" in drift.compare(new_baseline, lacking)
    report = monitoring.run_monitor(
        texts,
        window_entities,
        thresholds=load_stage_config("dev").drift,
        model_version=model.version,
        reference=old_baseline,
        training_baseline=new_baseline,
        now=NOW,
    ).report
    assert report["decision"]
    assert note_id not in json.dumps(report)


def test_publish_rejects_a_label_outside_the_model_metadata(labelled_model, tmp_path):
    model, model_dir, new_label, _ = labelled_model
    notes = _notes()
    answers = _answers(model, notes)
    without_new = tuple(label for label in _metadata_labels(model_dir) if label != new_label)
    assert any(e["label"] == new_label for a in answers.values() for e in a["entities"])
    with pytest.raises(ModelContractError, match="label not in the model's labels"):
        publish.publish_transform_output(notes, answers, tmp_path, dt=DT, labels=without_new)
    assert not list(tmp_path.rglob("part-*.parquet"))


@pytest.mark.parametrize(
    ("metadata", "match"),
    [
        ({}, "no non-empty 'labels'"),
        ({"labels": []}, "no non-empty 'labels'"),
        ({"labels": "DISEASE"}, "no non-empty 'labels'"),
        ({"labels": ["A", ""]}, "non-empty strings"),
        ({"labels": ["A", 3]}, "non-empty strings"),
        ({"labels": ["A", "A"]}, "repeats"),
    ],
)
def test_model_labels_rejects_bad_metadata(metadata, match):
    with pytest.raises(ModelContractError, match=match):
        publish.model_labels(metadata)
    assert publish.model_labels({"labels": ["ZED", "ALPHA"]}) == ("ALPHA", "ZED")


def test_publish_has_no_default_label_set(tmp_path):
    note = Note("n1", "text", "raw/notes/x.jsonl", 1, content_sha256("text"))
    answers = {"n1": {"note_id": "n1", "model_version": "m", "entities": []}}
    with pytest.raises(TypeError):
        publish.publish_transform_output([note], answers, tmp_path, dt=DT)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="label set"):
        publish.publish_transform_output([note], answers, tmp_path, dt=DT, labels=())


def test_min_label_f1_follows_any_label_set():
    per_label = {"PROCEDURE": {"f": 0.4}, "DISEASE": {"f": 0.9}, "SYMPTOM": {"f": 0.7}}
    assert min_label_f1("test", per_label) == {"test_min_label_f1": 0.4}
    assert min_label_f1("dev", {}) == {}


# --------------------------------------------------------------------------- source scan

# Modules that consume model output or metrics. Training-data readers (label maps for input
# formats) and dictionary features legitimately name labels and are not listed.
CONSUMERS = (
    "clinical_ner/data/publish.py",
    "clinical_ner/data/analytics.py",
    "clinical_ner/data/extraction.py",
    "clinical_ner/runtime/extraction_steps.py",
    "clinical_ner/model/drift.py",
    "clinical_ner/pipeline/monitoring.py",
    "clinical_ner/pipeline/gating.py",
    "clinical_ner/pipeline/registry.py",
    "clinical_ner/model/scoring.py",
    "clinical_ner/runtime/serve.py",
    "clinical_ner_local/report.py",
    "step_functions/extraction.py",
    "step_functions/training.py",
    "stacks/analytics.py",
    "stacks/glue_tables.py",
    "stacks/monitoring.py",
)
KNOWN_LABELS = ("DISEASE", "TREATMENT", "SYMPTOM", "CHEMICAL", "PROCEDURE")
_ALT = "|".join(KNOWN_LABELS)
# A label compared in SQL ('DISEASE'), or baked into a metric/column name (test_f1_DISEASE).
_FORBIDDEN_IN_TEXT = re.compile(rf"'(?:{_ALT})'|_(?:{_ALT})\b|\b(?:{_ALT})_", re.IGNORECASE)


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def hard_coded_labels(source: str) -> list[str]:
    """Label literals in code: a string that is a label, or a label in SQL/metric names."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
            continue
        if id(node) in skip:
            continue
        text = node.value
        if text.strip().upper() in KNOWN_LABELS or _FORBIDDEN_IN_TEXT.search(text):
            found.append(f"line {node.lineno}: {text[:60]!r}")
    return found


@pytest.mark.parametrize("module", CONSUMERS)
def test_no_consumer_hard_codes_a_label(module):
    path = REPO / module
    assert path.exists(), module
    assert hard_coded_labels(path.read_text(encoding="utf-8")) == [], module


@pytest.mark.parametrize(
    "snippet",
    [
        'DEFAULT_LABELS = ("DISEASE", "TREATMENT")',
        "SQL = \"SUM(CASE WHEN label = 'DISEASE' THEN 1 ELSE 0 END)\"",
        'TRAINING_METRICS = ("dev_f1", "test_f1_TREATMENT")',
        'labels = ["Symptom"]',
    ],
)
def test_the_scan_catches_the_old_constants(snippet):
    assert hard_coded_labels(snippet)
    assert not hard_coded_labels('"""DISEASE and TREATMENT in a docstring are fine."""\nx = 1')
