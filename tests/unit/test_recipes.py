"""`clinical-ner train --recipe`: corpora, splits, per-corpus labels and weights from a recipe."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from clinical_ner.cli import main
from clinical_ner.model.readers import AnnotationFormatError, read_annotations
from clinical_ner.model.recipes import (
    RecipeError,
    get_recipe,
    parse_recipe,
    read_recipe_data,
)
from clinical_ner.runtime.sagemaker_train import parse_hyperparameters

CLINICAL_NOTES = "clinical-notes-annotated/notes.jsonl"
PUBLIC = "public/train.tsv"
# SYNTHETIC sentences in the IOB layout of BC5CDR (token<TAB>tag, blank line between sentences).
PUBLIC_SENTENCES = [
    [("Aspirin", "B-Chemical"), ("relieved", "O"), ("the", "O"), ("headache", "B-Disease")],
    [("Heparin", "B-Chemical"), ("caused", "O"), ("thrombocytopenia", "B-Disease")],
    [
        ("Renal", "B-Disease"),
        ("failure", "I-Disease"),
        ("followed", "O"),
        ("cisplatin", "B-Chemical"),
    ],
    [("No", "O"), ("seizures", "B-Disease"), ("occurred", "O")],
]

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SAMPLES = Path(__file__).resolve().parents[2] / "clinical_ner" / "samples"


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """A data root laid out like ../shared/data, holding the SYNTHETIC clinical notes."""
    target = tmp_path / "data" / CLINICAL_NOTES
    target.parent.mkdir(parents=True)
    lines = (SAMPLES / "synthetic_clinical_notes.jsonl").read_text(encoding="utf-8").splitlines()
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    public = tmp_path / "data" / PUBLIC
    public.parent.mkdir(parents=True)
    public.write_text(
        "\n\n".join("\n".join(f"{w}\t{t}" for w, t in sent) for sent in PUBLIC_SENTENCES) + "\n",
        encoding="utf-8",
    )
    return tmp_path / "data"


def _recipe(extra_part: str = "", top: str = "") -> str:
    return f"""
description = "test"
seed = 3
labels = {{ DISEASE = "DISEASE", SYMPTOM = "SYMPTOM", TREATMENT = "TREATMENT" }}
{top}
[overrides]
"training.max_steps" = 4

[[train]]
path = "{CLINICAL_NOTES}"
split = "train"
{extra_part}
[[dev]]
path = "{CLINICAL_NOTES}"
split = "dev"
"""


PUBLIC_PART = f"""
[[train]]
path = "{PUBLIC}"
labels = {{ Chemical = "TREATMENT", Disease = "DISEASE" }}
weight = WEIGHT
"""


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
    with pytest.raises(RecipeError, match=r"known: .*product"):
        get_recipe("nope")
    with pytest.raises(RecipeError, match="not found"):
        get_recipe("missing/recipe.toml")


def test_each_corpus_is_read_with_its_own_label_map(data_root):
    recipe = parse_recipe("mixed", _recipe(PUBLIC_PART.replace("WEIGHT", "1.0")))
    data = read_recipe_data(recipe, data_root)
    public = [d for d in data.train_docs if not d.split]
    assert len(public) == len(PUBLIC_SENTENCES)
    labels = {(d.text[e.start : e.end], e.label) for d in public for e in d.entities}
    assert ("Aspirin", "TREATMENT") in labels and ("Renal failure", "DISEASE") in labels
    assert recipe.model_labels == ["DISEASE", "SYMPTOM", "TREATMENT"]
    # the clinical part kept its own map (SYMPTOM stays SYMPTOM) and its split
    clinical = [d for d in data.train_docs if d.split]
    assert {d.split for d in clinical} == {"train"}
    assert "SYMPTOM" in {e.label for d in clinical for e in d.entities}
    assert {d.split for d in data.dev_docs} == {"dev"}


def test_a_type_missing_from_a_parts_label_map_names_the_file(data_root):
    part = PUBLIC_PART.replace("WEIGHT", "1.0").replace(', Disease = "DISEASE"', "")
    with pytest.raises(AnnotationFormatError, match="unknown entity type") as raised:
        read_recipe_data(parse_recipe("mixed", _recipe(part)), data_root)
    assert PUBLIC in str(raised.value)
    # "O" drops a type on purpose
    part = PUBLIC_PART.replace("WEIGHT", "1.0").replace('Disease = "DISEASE"', 'Disease = "O"')
    data = read_recipe_data(parse_recipe("mixed", _recipe(part)), data_root)
    assert {e.label for d in data.train_docs if not d.split for e in d.entities} == {"TREATMENT"}


@pytest.mark.parametrize(("weight", "expected"), [("0.5", 2), ("2.0", 8), ("1.25", 5)])
def test_weights_sample_a_seeded_share_of_a_corpus(data_root, weight, expected):
    recipe = parse_recipe("mixed", _recipe(PUBLIC_PART.replace("WEIGHT", weight)))
    first = [d.text for d in read_recipe_data(recipe, data_root).train_docs if not d.split]
    again = [d.text for d in read_recipe_data(recipe, data_root).train_docs if not d.split]
    assert len(first) == expected and first == again
    assert set(first) <= {" ".join(w for w, _ in sent) for sent in PUBLIC_SENTENCES}
    # another seed draws another sample, the clinical part is never sampled
    other = parse_recipe(
        "mixed", _recipe(PUBLIC_PART.replace("WEIGHT", "0.5")).replace("seed = 3", "seed = 4")
    )
    data = read_recipe_data(other, data_root)
    notes, _ = read_annotations([data_root / CLINICAL_NOTES])
    assert sum(d.split == "train" for d in data.train_docs) == sum(
        d.split == "train" for d in notes
    )


def test_a_weight_that_selects_nothing_is_an_error(data_root):
    recipe = parse_recipe("mixed", _recipe(PUBLIC_PART.replace("WEIGHT", "0.01")))
    with pytest.raises(RecipeError, match="selects no documents"):
        read_recipe_data(recipe, data_root)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("this is = not toml [", "not valid TOML"),
        (_recipe(top="colour = 1"), "unknown key"),
        (_recipe(PUBLIC_PART.replace("WEIGHT", "0")), "'weight' must be a number"),
        (_recipe(PUBLIC_PART.replace("WEIGHT", "true")), "'weight' must be a number"),
        (_recipe(PUBLIC_PART.replace("WEIGHT", '"0.5"')), "'weight' must be a number"),
        (
            _recipe(PUBLIC_PART.replace(PUBLIC, "/etc/passwd").replace("WEIGHT", "1")),
            "relative path",
        ),
        (
            _recipe(PUBLIC_PART.replace(PUBLIC, "../../x.tsv").replace("WEIGHT", "1")),
            "relative path",
        ),
        (_recipe(PUBLIC_PART.replace("weight = WEIGHT", "colour = 1")), "unknown key"),
        (
            _recipe(PUBLIC_PART.replace("WEIGHT", "1").replace('"TREATMENT", Disease', "3, D")),
            "labels",
        ),
        (_recipe().replace('split = "dev"', 'split = "dev"\nweight = 0.5'), "never sampled"),
        (_recipe().replace("seed = 3", "seed = -1"), "'seed'"),
        (_recipe().replace("[[dev]]", "[[nodev]]"), "unknown key"),
        (_recipe().split("[[dev]]")[0], "at least one [[dev]]"),
        (_recipe().replace("labels = {", "# {"), "no label map"),
    ],
)
def test_bad_recipe_files_are_refused_with_the_key_named(text, needle):
    with pytest.raises(RecipeError, match=re.escape(needle)):
        parse_recipe("bad", text)


def test_a_recipe_file_trains_a_multi_corpus_model(data_root, tmp_path):
    path = tmp_path / "mixed.toml"
    path.write_text(_recipe(PUBLIC_PART.replace("WEIGHT", "0.5")), encoding="utf-8")
    out = tmp_path / "model"
    code = main(
        ["train", "--recipe", str(path), "--data-root", str(data_root), "--output", str(out)]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labels"] == ["DISEASE", "SYMPTOM", "TREATMENT"]
    assert metrics["seed"] == 3
    assert sorted(metrics["training_data"]) == [CLINICAL_NOTES, PUBLIC]
    files = metrics["data_reports"]["files"]
    assert files[f"train {PUBLIC} x0.5"]["docs"] == 2


def test_the_pipeline_retrains_with_the_product_recipes_settings():
    recipe = get_recipe("product")
    hp = parse_hyperparameters(recipe.hyperparameters())
    assert hp.seed == recipe.seed
    assert hp.overrides == dict(recipe.overrides)
    assert set(hp.labels.replace("=", ",").split(",")) == set(recipe.model_labels)


@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared corpora not available: {SHARED}")
def test_the_product_recipe_finds_its_corpus_in_shared_data():
    recipe = get_recipe("product")
    (path,) = recipe.files(SHARED)
    docs, _ = read_annotations([path], labels=dict(recipe.labels))
    counts = {s: sum(d.split == s for d in docs) for s in ("train", "dev")}
    assert counts == {"train": 120, "dev": 40}  # SOURCE.md
