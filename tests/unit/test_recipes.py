"""`clinical-ner train --recipe product`: corpora, splits and labels from a named recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clinical_ner.cli import main
from clinical_ner.readers import read_annotations
from clinical_ner.recipes import CLINICAL_NOTES, RECIPES, RecipeError, get_recipe

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SAMPLES = Path(__file__).resolve().parents[2] / "clinical_ner" / "samples"


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """A data root laid out like ../shared/data, holding the SYNTHETIC clinical notes."""
    target = tmp_path / "data" / CLINICAL_NOTES
    target.parent.mkdir(parents=True)
    lines = (SAMPLES / "synthetic_clinical_notes.jsonl").read_text(encoding="utf-8").splitlines()
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path / "data"


def test_the_reader_keeps_each_records_split(data_root):
    docs, _ = read_annotations([data_root / CLINICAL_NOTES])
    assert {d.split for d in docs} == {"train", "dev", "test"}
    assert "SYMPTOM" in {e.label for d in docs for e in d.entities}


def test_product_recipe_trains_on_train_selects_on_dev_and_keeps_three_labels(data_root, tmp_path):
    out = tmp_path / "model"
    args = ["--recipe", "product", "--data-root", str(data_root), "--output", str(out)]
    code = main(["train", *args, "--max-steps", "4"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labels"] == ["DISEASE", "SYMPTOM", "TREATMENT"]
    assert metrics["seed"] == get_recipe("product").seed
    assert metrics["data_reports"]["recipe"] == "product"
    docs, _ = read_annotations([data_root / CLINICAL_NOTES])
    assert metrics["dev"]["docs"] == sum(d.split == "dev" for d in docs)
    # the data hash is keyed by the path under the data root, not by where the root is
    assert list(metrics["training_data"]) == [CLINICAL_NOTES]


def test_a_missing_corpus_names_the_file_and_the_option(tmp_path, capsys):
    code = main(["train", "--recipe", "product", "--data-root", str(tmp_path), "--output", "m"])
    assert code == 2
    err = capsys.readouterr().err
    assert CLINICAL_NOTES in err and "--data-root" in err
    assert not (Path("m")).exists()


def test_recipe_and_explicit_data_do_not_mix(data_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["train", "--recipe", "product", "--train", "x.jsonl", "--output", str(tmp_path)])
    assert exited.value.code == 2
    args = ["--recipe", "product", "--data-root", str(data_root), "--dev", "x.jsonl"]
    code = main(["train", *args, "--output", str(tmp_path / "m")])
    assert code == 2
    assert "drop --dev/--labels" in capsys.readouterr().err


def test_unknown_recipe_is_refused():
    with pytest.raises(RecipeError, match="known: product"):
        get_recipe("nope")


@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared corpora not available: {SHARED}")
def test_the_product_recipe_finds_its_corpus_in_shared_data():
    recipe = RECIPES["product"]
    (path,) = recipe.files(SHARED)
    docs, _ = read_annotations([path], labels=recipe.label_map)
    counts = {s: sum(d.split == s for d in docs) for s in ("train", "dev")}
    assert counts == {"train": 120, "dev": 40}  # SOURCE.md
