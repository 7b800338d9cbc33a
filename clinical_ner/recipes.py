"""Named training recipes: which corpora, splits, labels and settings make a model.

``clinical-ner train --recipe product --output DIR`` trains the default product model, the one
a team starts with and the one the pipeline retrains; independent evaluation runs exactly that
command. A recipe names its corpora relative to a data root (``../shared/data`` by default,
``--data-root DIR`` otherwise), so the same recipe runs on any machine that has the files.

Why the product recipe is what it is (clinical dev split, docs/model.md "Product model"):

* clinical notes only: adding BC5CDR or BioText sentences at half the clinical word count
  lowered overlap F1 on the clinical dev split by 8 and 3 points;
* DISEASE / SYMPTOM / TREATMENT as their own labels: SYMPTOM as its own label scored at least
  as well as mapping it to DISEASE, and the validation team gets the distinction Comprehend
  Medical makes (SIGN / SYMPTOM vs DIAGNOSIS);
* dictionary features (the default ``ner.cfg``) and 3000 steps: 0.852 overlap / 0.774 strict F1
  with SYMPTOM ignored, against 0.811 / 0.739 without dictionaries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clinical_ner.corpus import AnnotatedDoc

DEFAULT_DATA_ROOT = Path("../shared/data")


class RecipeError(ValueError):
    """A recipe cannot run: unknown name, missing corpus file, or an empty split."""


@dataclass(frozen=True)
class CorpusPart:
    """Documents of one corpus file, optionally only the records of one ``split``."""

    path: str  # relative to the data root
    split: str | None = None  # keep records whose own "split" field is this

    def select(self, docs: Sequence[AnnotatedDoc]) -> list[AnnotatedDoc]:
        if self.split is None:
            return list(docs)
        return [d for d in docs if d.split == self.split]


@dataclass(frozen=True)
class Recipe:
    """Everything `train` needs beyond the output directory."""

    name: str
    description: str
    train: tuple[CorpusPart, ...]
    dev: tuple[CorpusPart, ...]
    label_map: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, object] = field(default_factory=dict)
    seed: int = 0

    def files(self, data_root: Path) -> list[Path]:
        """The corpus files this recipe reads, checked to exist (clear error otherwise)."""
        paths = sorted({data_root / part.path for part in (*self.train, *self.dev)})
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise RecipeError(
                f"recipe {self.name!r} needs {', '.join(missing)}; pass --data-root DIR "
                f"(default {DEFAULT_DATA_ROOT})"
            )
        return paths


CLINICAL_NOTES = "clinical-notes-annotated/notes.jsonl"

RECIPES: dict[str, Recipe] = {
    "product": Recipe(
        name="product",
        description=(
            "the default product model: the annotated clinical notes (train split; dev split "
            "for checkpoint selection and calibration), DISEASE / SYMPTOM / TREATMENT, "
            "dictionary features, 3000 steps, seed 0"
        ),
        train=(CorpusPart(CLINICAL_NOTES, "train"),),
        dev=(CorpusPart(CLINICAL_NOTES, "dev"),),
        label_map={"DISEASE": "DISEASE", "SYMPTOM": "SYMPTOM", "TREATMENT": "TREATMENT"},
        overrides={"training.max_steps": 3000},
        seed=0,
    ),
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise RecipeError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}") from None


def select_docs(
    parts: Sequence[CorpusPart], docs_by_file: dict[str, list[AnnotatedDoc]], recipe: str
) -> list[AnnotatedDoc]:
    """The documents `parts` name, in order; an empty selection is an error."""
    selected = [doc for part in parts for doc in part.select(docs_by_file[part.path])]
    if not selected:
        names = ", ".join(f"{p.path}[{p.split or 'all'}]" for p in parts)
        raise RecipeError(f"recipe {recipe!r}: no documents in {names}")
    return selected
