"""Training smoke test on tiny synthetic data, plus the train/evaluate/extract CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import spacy

from clinical_ner.cli import main
from clinical_ner.model.inference import MODEL_CARD_FILE, NerModel
from clinical_ner.model.readers import read_annotations
from clinical_ner.model.training import TrainingInputs, split_by_hash, train_model

SAMPLES = Path(__file__).resolve().parents[2] / "clinical_ner" / "samples"
ANNOTATIONS = SAMPLES / "synthetic_annotations.jsonl"
STEPS = 80


def _inputs() -> TrainingInputs:
    docs, report = read_annotations([ANNOTATIONS])
    train, dev = split_by_hash(docs, 0.15)
    return TrainingInputs(train, dev, {str(ANNOTATIONS): "sha"}, {"train": report.as_dict()})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("model") / "m"
    metrics = train_model(
        _inputs(), out, seed=3, overrides={"training.max_steps": STEPS}, log=lambda _: None
    )
    return out, metrics


def test_model_directory_is_complete_and_loads_with_spacy(trained):
    out, metrics = trained
    for name in ("config.cfg", "meta.json", "metrics.json", MODEL_CARD_FILE, "ner", "tok2vec"):
        assert (out / name).exists(), name
    nlp = spacy.load(out)
    assert nlp.pipe_names == ["tok2vec", "ner"]
    # The punctuation-splitting tokenizer travels with the model.
    assert [t.text for t in nlp.make_doc("short-term use")] == ["short", "-", "term", "use"]
    assert set(metrics["labels"]) == {"DISEASE", "TREATMENT"}


def test_metrics_report_dev_scores_calibration_hashes_and_time(trained):
    out, metrics = trained
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    dev = metrics["dev"]
    assert set(dev["per_label"]) >= {"DISEASE", "TREATMENT"}
    for key in ("ents_p", "ents_r", "ents_f"):
        assert 0.0 <= dev[key] <= 1.0
    # Templated synthetic data is easy: a model that learnt nothing would score 0.
    assert dev["ents_f"] > 0.5
    calibration = metrics["calibration"]
    assert 0.0 <= calibration["ece_raw"] <= 1.0
    assert 0.0 <= calibration["ece_calibrated_cross_fitted"] <= 1.0
    assert metrics["training_data"] == {str(ANNOTATIONS): "sha"}
    assert metrics["training_seconds"] > 0
    assert metrics["model_version"].startswith("clinical-ner-")


def test_confidences_are_probabilities_and_offsets_slice(trained):
    out, _ = trained
    model = NerModel.load(out)
    text = "She was admitted with pneumonia and received amoxicillin. No new complaints."
    (entities,) = list(model.predict([text]))
    assert entities, "expected at least one entity in a templated sentence"
    for entity in entities:
        assert text[entity.start : entity.end] == entity.text
        assert 0.0 <= entity.confidence <= 1.0
        assert 0.0 <= entity.raw_score <= 1.0


def test_predictions_match_spacy_greedy_parse(trained):
    out, _ = trained
    model = NerModel.load(out)
    texts = [d.text for d in read_annotations([ANNOTATIONS])[0][:40]]
    plain = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in model.nlp.pipe(texts)]
    ours = [[(e.start, e.end, e.label) for e in ents] for ents in model.predict(texts)]
    assert ours == plain


def test_training_is_deterministic_for_a_seed(trained, tmp_path):
    out, metrics = trained
    again = train_model(
        _inputs(),
        tmp_path / "again",
        seed=3,
        overrides={"training.max_steps": STEPS},
        log=lambda _: None,
    )
    assert again["model_version"] == metrics["model_version"]
    assert again["dev"]["ents_f"] == metrics["dev"]["ents_f"]
    texts = [d.text for d in read_annotations([ANNOTATIONS])[0][:30]]
    first = [
        [(e.start, e.end, e.label, e.raw_score) for e in x]
        for x in NerModel.load(out).predict(texts)
    ]
    second = [
        [(e.start, e.end, e.label, e.raw_score) for e in x]
        for x in NerModel.load(tmp_path / "again").predict(texts)
    ]
    assert first == second


def test_training_rejects_empty_inputs(tmp_path):
    with pytest.raises(ValueError, match="no training documents"):
        train_model(TrainingInputs([], []), tmp_path / "x")


def test_evaluate_cli_prints_json_last_and_counts_unknown_labels_as_misses(
    trained, tmp_path, capsys
):
    out, _ = trained
    data = tmp_path / "gold.jsonl"
    data.write_text(
        json.dumps({"text": "He takes aspirin for gout.", "label": [[9, 16, "CHEMICAL"]]}) + "\n"
    )
    assert main(["evaluate", "--model", str(out), "--data", str(data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("ents_p", "ents_r", "ents_f", "per_label", "docs", "words_per_second"):
        assert key in result
    assert result["docs"] == 1
    assert result["per_label"]["CHEMICAL"]["fn"] == 1
    assert result["per_label"]["CHEMICAL"]["r"] == 0.0
    assert result["unknown_gold_labels"] == ["CHEMICAL"]


def test_evaluate_cli_reports_malformed_data_with_file_and_line(trained, tmp_path, capsys):
    out, _ = trained
    bad = tmp_path / "bad.tsv"
    bad.write_text("Aspirin\tB-Chemical\nno-tab-here\n")
    assert main(["evaluate", "--model", str(out), "--data", str(bad), "--format", "iob"]) == 2
    assert f"{bad}:2" in capsys.readouterr().err


def test_extract_cli_accounts_for_every_record(trained, tmp_path, capsys):
    out, _ = trained
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "n1.txt").write_text("The patient has a history of asthma treated with albuterol.")
    (notes / "empty.txt").write_text("   ")
    (notes / "batch.jsonl").write_text(
        json.dumps({"note_id": "j1", "text": "Medications: metformin daily."})
        + "\n{not json\n"
        + json.dumps({"note_id": "j2", "text": "The vital signs are stable."})
        + "\n"
    )
    result_dir = tmp_path / "out"
    assert main(["extract", "--model", str(out), str(notes), "--output", str(result_dir)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed.strip().splitlines()[-1])
    assert (summary["in"], summary["processed"], summary["quarantined"]) == (5, 3, 2)
    assert "in 5  processed 3  quarantined 2" in printed
    entities = pd.read_parquet(result_dir / "entities")
    notes_table = pd.read_parquet(result_dir / "notes")
    texts = {
        "n1": "The patient has a history of asthma treated with albuterol.",
        "j1": "Medications: metformin daily.",
        "j2": "The vital signs are stable.",
    }
    assert set(notes_table["note_id"]) == set(texts)
    for row in entities.itertuples():
        assert texts[row.note_id][row.start_char : row.end_char] == row.text
    assert len(pd.read_parquet(result_dir / "quarantine")) == 2


def test_pretrained_tok2vec_weights_are_loaded_into_training(tmp_path):
    import numpy as np
    from spacy.training.initialize import init_nlp
    from spacy.util import load_config

    from clinical_ner.model.training import default_config_path, pretrain_tok2vec

    texts = [d.text for d in read_annotations([ANNOTATIONS])[0]]
    weights = pretrain_tok2vec(texts, tmp_path / "pre", epochs=1, seed=1)
    assert weights.name == "model0.bin"

    def tok2vec_norm(init: Path | None) -> float:
        overrides = {"paths.train": "x", "paths.dev": "x"}
        if init is not None:
            overrides["paths.init_tok2vec"] = str(init)
        config = load_config(default_config_path(), overrides=overrides, interpolate=False)
        # Corpora are only read lazily; initialize needs examples, so give it the samples.
        docbin_path = tmp_path / "train.spacy"
        if not docbin_path.exists():
            from clinical_ner.model.training import ConversionReport, to_docbin

            to_docbin(read_annotations([ANNOTATIONS])[0][:20], ConversionReport()).to_disk(
                docbin_path
            )
        config["paths"]["train"] = config["paths"]["dev"] = str(docbin_path)
        nlp = init_nlp(config)
        model = nlp.get_pipe("tok2vec").model
        return float(
            sum(
                np.abs(node.get_param(name)).sum()
                for node in model.walk()
                for name in node.param_names
                if node.has_param(name)
            )
        )

    assert tok2vec_norm(weights) != pytest.approx(tok2vec_norm(None))
