"""The structured fields of each entity: section, context traits, ICD-10-CM codes, drug, dosage.

What the data-entry team typed besides the mention itself (issue #14): every entity gets its
section and context traits (negated, historical, hypothetical, family, uncertain, each with the
trigger that caused it); DISEASE and SYMPTOM entities get ranked ICD-10-CM candidates; TREATMENT
entities get a normalised drug concept when they name a drug and their medication attributes
(dosage, strength, route, frequency, duration, form, rate, as Amazon Comprehend Medical names
them). The rules and vocabularies live in `sections`, `context`, `coding`, `drugs` and
`medication`; this module composes them per note and owns the one wire format of the result
(`EntityDetails.to_json` / `from_json`, used by serving and publishing) and the one row format
(`EntityDetails.row`, the entities table's columns).

The vocabularies are part of the model: training saves them under ``enrichment/`` in the model
directory (`save_enrichment`), so every runtime that loads the model (SageMaker, Glue, the CLI)
has the same codes without the vocabulary packages installed. Building them takes seconds, so a
built copy is kept per process and on disk (`ENRICHMENT_CACHE_ENV`), keyed by the versions of
the packages and of the code that builds them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clinical_ner.model.code_candidates import CodeCandidate, VocabularyFormatError
from clinical_ner.model.context import TRAITS, ContextScanner, TraitEvidence
from clinical_ner.model.drugs import DrugConcept, DrugNormaliser
from clinical_ner.model.medication import ATTRIBUTE_TYPES, MedicationAttribute, link_attributes
from clinical_ner.model.sections import SectionIndex

if TYPE_CHECKING:  # numpy/scipy: not needed by writers of the tables (see code_candidates)
    from clinical_ner.model.coding import Icd10CmLinker

LOG = logging.getLogger(__name__)

ENRICHMENT_DIR = "enrichment"
LINKER_DIR = "icd10cm"
DRUGS_DIR = "drugs"
MANIFEST_FILE = "manifest.json"
ENRICHMENT_CACHE_ENV = "CLINICAL_NER_ENRICHMENT_CACHE"
# Labels whose entities are coded with ICD-10-CM and labels whose entities can be medications.
CODED_LABELS = frozenset({"DISEASE", "SYMPTOM"})
MEDICATION_LABELS = frozenset({"TREATMENT"})
MAX_CANDIDATES = 5
REVIEW_CODES = 3  # candidate codes the review workbench shows
_PACKAGES = ("simple_icd_10_cm", "drug-named-entity-recognition")
_BUILDER_MODULES = ("coding", "icd10cm_terms", "drugs")


class EnrichmentFormatError(ValueError):
    """Entity details in a wire record are malformed (the message names fields, never text)."""


def _field(raw: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = raw.get(name)
    if isinstance(value, bool) and kind is int:
        raise EnrichmentFormatError(f"{where}: {name} is not an integer")
    if not isinstance(value, kind):
        raise EnrichmentFormatError(f"{where}: {name} is missing or has the wrong type")
    return value


def _offsets(raw: Mapping[str, Any], where: str) -> tuple[int, int]:
    start, end = _field(raw, "start", int, where), _field(raw, "end", int, where)
    if not 0 <= start <= end:
        raise EnrichmentFormatError(f"{where}: offsets {start}..{end} are not a span")
    return start, end


def _anchored(
    raw: Mapping[str, Any],
    kind: tuple[str, Sequence[str], str],
    words_key: str,
    text: str,
    where: str,
) -> tuple[str, str, int, int]:
    """(kind, words, start, end) of a trigger or attribute whose offsets must slice `text`."""
    key, allowed, what = kind
    value = _field(raw, key, str, where)
    if value not in allowed:
        raise EnrichmentFormatError(f"{where}: unknown {what}")
    start, end = _offsets(raw, where)
    words = _field(raw, words_key, str, where)
    if text[start:end] != words:
        raise EnrichmentFormatError(f"{where}: offsets do not slice the note")
    return value, words, start, end


def _list(raw: Mapping[str, Any], name: str, where: str) -> list[Any]:
    value = raw.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise EnrichmentFormatError(f"{where}: {name} is not a list of objects")
    return value


@dataclass(frozen=True)
class EntityDetails:
    """The structured fields of one entity (empty for an entity nothing applies to)."""

    section: str | None = None
    traits: tuple[TraitEvidence, ...] = ()
    codes: tuple[CodeCandidate, ...] = ()
    chapter: str | None = None  # ICD-10-CM chapter of the top code
    drug: DrugConcept | None = None
    attributes: tuple[MedicationAttribute, ...] = field(default=())

    def has(self, trait: str) -> bool:
        return any(t.trait == trait for t in self.traits)

    def on_original(
        self, original_span: Callable[[int, int], tuple[int, int]], original: str
    ) -> EntityDetails:
        """These details with trigger and attribute offsets moved to the delivered text.

        `original_span` maps a span of the text the model read to the delivered text (see
        `clinical_ner.data.notes.OffsetMap`), as the entity's own offsets are mapped.
        """
        if not self.traits and not self.attributes:
            return self
        traits = []
        for t in self.traits:
            start, end = original_span(t.start, t.end)
            traits.append(dataclasses.replace(t, start=start, end=end, trigger=original[start:end]))
        attributes = []
        for a in self.attributes:
            start, end = original_span(a.start, a.end)
            attributes.append(
                dataclasses.replace(a, start=start, end=end, text=original[start:end])
            )
        return dataclasses.replace(self, traits=tuple(traits), attributes=tuple(attributes))

    def to_json(self) -> dict[str, Any]:
        """The serve response's fields of this entity (JSON-safe, Comprehend-like)."""
        return {
            "section": self.section,
            "traits": [
                {
                    "name": t.trait,
                    "trigger": t.trigger,
                    "start": t.start,
                    "end": t.end,
                    "source": t.source,
                }
                for t in self.traits
            ],
            "icd10cm": [
                {"code": c.code, "description": c.description, "score": round(c.score, 4)}
                for c in self.codes
            ],
            "icd10cm_chapter": self.chapter,
            "drug": None if self.drug is None else _drug_json(self.drug),
            "attributes": [
                {"type": a.type, "text": a.text, "start": a.start, "end": a.end}
                for a in self.attributes
            ],
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], text: str, where: str) -> EntityDetails:
        """Parse `to_json` output back, checking every offset slices `text` (the note)."""
        section = raw.get("section")
        if section is not None and not isinstance(section, str):
            raise EnrichmentFormatError(f"{where}: section is not a string")
        traits = [
            TraitEvidence(
                *_anchored(
                    t, ("name", TRAITS, "trait name"), "trigger", text, f"{where} trait {i}"
                ),
                str(t.get("source", "rule")),
            )
            for i, t in enumerate(_list(raw, "traits", where))
        ]
        codes = []
        for i, c in enumerate(_list(raw, "icd10cm", where)):
            at = f"{where} icd10cm {i}"
            score = _field(c, "score", (int, float), at)
            if isinstance(score, bool) or not 0.0 <= float(score) <= 1.0:
                raise EnrichmentFormatError(f"{at}: score is not in [0, 1]")
            codes.append(
                CodeCandidate(
                    _field(c, "code", str, at), _field(c, "description", str, at), float(score)
                )
            )
        chapter = raw.get("icd10cm_chapter")
        if chapter is not None and not isinstance(chapter, str):
            raise EnrichmentFormatError(f"{where}: icd10cm_chapter is not a string")
        drug_raw = raw.get("drug")
        if drug_raw is not None and not isinstance(drug_raw, dict):
            raise EnrichmentFormatError(f"{where}: drug is not an object")
        attributes = [
            MedicationAttribute(
                *_anchored(
                    a,
                    ("type", ATTRIBUTE_TYPES, "attribute type"),
                    "text",
                    text,
                    f"{where} attribute {i}",
                )
            )
            for i, a in enumerate(_list(raw, "attributes", where))
        ]
        return cls(
            section,
            tuple(traits),
            tuple(codes),
            chapter,
            None if drug_raw is None else _drug_from_json(drug_raw, where),
            tuple(attributes),
        )

    def row(self) -> dict[str, Any]:
        """The entities table's columns for this entity (see `clinical_ner.data.schemas`)."""
        top = self.codes[0] if self.codes else None
        by_type: dict[str, list[str]] = {}
        for a in self.attributes:
            by_type.setdefault(a.type, []).append(a.text)
        # `negated` is the entity's own column (older answers carry it without traits).
        row: dict[str, Any] = {trait: self.has(trait) for trait in TRAITS if trait != "negated"}
        row.update(
            {
                "trait_triggers": [
                    {
                        "trait": t.trait,
                        "trigger": t.trigger,
                        "start_char": t.start,
                        "end_char": t.end,
                        "source": t.source,
                    }
                    for t in self.traits
                ],
                "section": self.section,
                "icd10cm_code": top.code if top else None,
                "icd10cm_description": top.description if top else None,
                "icd10cm_score": top.score if top else None,
                "icd10cm_chapter": self.chapter,
                "icd10cm_candidates": [
                    {"code": c.code, "description": c.description, "score": c.score}
                    for c in self.codes
                ],
                "drug_name": self.drug.name if self.drug else None,
                "drug_mesh_id": self.drug.mesh_id if self.drug else None,
                "drug_drugbank_id": self.drug.drugbank_id if self.drug else None,
                "drug_nhs_url": self.drug.nhs_url if self.drug else None,
                "attributes": [
                    {"type": a.type, "text": a.text, "start_char": a.start, "end_char": a.end}
                    for a in self.attributes
                ],
            }
        )
        for kind in ATTRIBUTE_TYPES:
            texts = by_type.get(kind)
            row[kind.lower()] = "; ".join(texts) if texts else None
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> EntityDetails:
        """The details of an entities-table row (as `row` wrote it, read back)."""
        traits = tuple(
            TraitEvidence(
                t["trait"], t["trigger"], int(t["start_char"]), int(t["end_char"]), t["source"]
            )
            for t in row.get("trait_triggers") or ()
        )
        codes = tuple(
            CodeCandidate(c["code"], c["description"], float(c["score"]))
            for c in row.get("icd10cm_candidates") or ()
        )
        drug = (
            DrugConcept(
                row["drug_name"],
                row.get("drug_mesh_id"),
                row.get("drug_drugbank_id"),
                row.get("drug_nhs_url"),
            )
            if row.get("drug_name")
            else None
        )
        attributes = tuple(
            MedicationAttribute(a["type"], a["text"], int(a["start_char"]), int(a["end_char"]))
            for a in row.get("attributes") or ()
        )
        return cls(row.get("section"), traits, codes, row.get("icd10cm_chapter"), drug, attributes)

    def review_summary(self) -> dict[str, Any]:
        """What the review queue keeps for the workbench: identifiers and offsets, no words.

        The queue item holds no note text (its offsets slice the note) and no clinical words
        either: codes and drug ids instead of their descriptions, so a queue item that reaches
        a debug log line says nothing in plain words about the patient.
        """
        return {
            "section": self.section,
            "traits": [t.trait for t in self.traits],
            "codes": [c.code for c in self.codes[:REVIEW_CODES]],
            "drugbank_id": self.drug.drugbank_id if self.drug else None,
            "attributes": [
                {"type": a.type, "start": a.start, "end": a.end} for a in self.attributes
            ],
        }


def _drug_json(drug: DrugConcept) -> dict[str, Any]:
    return dataclasses.asdict(drug)


def _drug_from_json(raw: Mapping[str, Any], where: str) -> DrugConcept:
    at = f"{where} drug"
    values: dict[str, Any] = {}
    for f in dataclasses.fields(DrugConcept):
        value = raw.get(f.name)
        if f.name == "name":
            values[f.name] = _field(raw, "name", str, at)
        elif f.name == "is_synonym":
            if not isinstance(value, bool | None):
                raise EnrichmentFormatError(f"{at}: is_synonym is not a boolean")
            values[f.name] = bool(value)
        elif value is not None and not isinstance(value, str):
            raise EnrichmentFormatError(f"{at}: {f.name} is not a string")
        else:
            values[f.name] = value
    return DrugConcept(**values)


class Enricher:
    """Sections, traits, codes, drug concepts and attributes for the entities of one note."""

    def __init__(self, linker: Icd10CmLinker, drugs: DrugNormaliser) -> None:
        self.linker = linker
        self.drugs = drugs

    @classmethod
    def load(cls, directory: Path | str) -> Enricher:
        from clinical_ner.model.coding import Icd10CmLinker

        directory = Path(directory)
        return cls(
            Icd10CmLinker.load(directory / LINKER_DIR), DrugNormaliser.load(directory / DRUGS_DIR)
        )

    def details(self, text: str, spans: Sequence[tuple[int, int, str]]) -> list[EntityDetails]:
        """One `EntityDetails` per (start, end, label) span of `text`, in input order."""
        if not spans:
            return []
        sections = SectionIndex(text)
        context = ContextScanner(text, sections)
        coded = [i for i, (_, _, label) in enumerate(spans) if label in CODED_LABELS]
        treatments = [i for i, (_, _, label) in enumerate(spans) if label in MEDICATION_LABELS]
        codes: dict[int, tuple[CodeCandidate, ...]] = {}
        if coded:
            found = self.linker.link(
                [text[spans[i][0] : spans[i][1]] for i in coded], k=MAX_CANDIDATES
            )
            codes = dict(zip(coded, found, strict=True))
        drugs: dict[int, DrugConcept | None] = {}
        attributes: dict[int, tuple[MedicationAttribute, ...]] = {}
        if treatments:
            found_drugs = self.drugs.normalise(
                [text[spans[i][0] : spans[i][1]] for i in treatments]
            )
            drugs = dict(zip(treatments, found_drugs, strict=True))
            # Attributes never overlap another entity: a DISEASE between a drug and its dose
            # ends the drug's window.
            blockers = [(s, e) for i, (s, e, _) in enumerate(spans) if i not in drugs]
            linked = link_attributes(
                text,
                [spans[i][:2] for i in treatments],
                blockers,
                known_drugs=[drugs[i] is not None for i in treatments],
            )
            attributes = dict(zip(treatments, linked, strict=True))
        result = []
        for i, (start, end, _) in enumerate(spans):
            section = sections.at(start)
            entity_codes = codes.get(i, ())
            result.append(
                EntityDetails(
                    section=section.name if section else None,
                    traits=context.traits(start, end),
                    codes=entity_codes,
                    chapter=self.linker.chapter(entity_codes[0].code) if entity_codes else None,
                    drug=drugs.get(i),
                    attributes=attributes.get(i, ()),
                )
            )
        return result


# --------------------------------------------------------------------------- artifacts


def _build_key() -> str:
    """Versions of what the vocabularies are built from: packages and the building code."""
    parts = []
    for package in _PACKAGES:
        parts.append(f"{package}=={metadata.version(package)}")
    here = Path(__file__).parent
    for module in _BUILDER_MODULES:
        parts.append(hashlib.sha256((here / f"{module}.py").read_bytes()).hexdigest())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _cache_root() -> Path:
    configured = os.environ.get(ENRICHMENT_CACHE_ENV)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "clinical-ner" / "enrichment"


@lru_cache(maxsize=1)
def built_enrichment_dir() -> Path:
    """A directory holding freshly built vocabularies (built once per package versions)."""
    key = _build_key()
    cached = _cache_root() / key
    if (cached / MANIFEST_FILE).is_file():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=cached.parent))
    from clinical_ner.model.coding import Icd10CmLinker

    try:
        LOG.info("building the ICD-10-CM linker and drug vocabularies (key %s)", key)
        Icd10CmLinker.build().save(staging / LINKER_DIR)
        DrugNormaliser.build().save(staging / DRUGS_DIR)
        manifest = {"build_key": key, "packages": {p: metadata.version(p) for p in _PACKAGES}}
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        try:
            os.replace(staging, cached)  # atomic: a concurrent builder's copy wins or ours does
        except OSError:
            if not (cached / MANIFEST_FILE).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cached


def save_enrichment(model_dir: Path | str) -> None:
    """Put the vocabularies into a model directory (hard links to the cache where possible)."""
    target = Path(model_dir) / ENRICHMENT_DIR
    if target.exists():
        shutil.rmtree(target)

    def link_or_copy(src: str, dst: str) -> object:
        try:
            os.link(src, dst)
            return dst
        except OSError:
            return shutil.copy2(src, dst)

    shutil.copytree(built_enrichment_dir(), target, copy_function=link_or_copy)


def load_enricher(model_dir: Path | str) -> Enricher:
    """The model's own vocabularies, or (a model trained before #14) freshly built ones."""
    directory = Path(model_dir) / ENRICHMENT_DIR
    if (directory / MANIFEST_FILE).is_file():
        try:
            return Enricher.load(directory)
        except VocabularyFormatError as exc:
            # Written by an older release of the linker or normaliser: the model's NER is
            # unaffected, so it keeps working with this release's vocabularies.
            LOG.warning("%s in %s/: building the vocabularies", exc, ENRICHMENT_DIR)
    else:
        LOG.warning("model directory has no %s/: building the vocabularies", ENRICHMENT_DIR)
    return Enricher.load(built_enrichment_dir())
