"""Training recipes: which corpora, splits, per-corpus label maps and sampling weights make a model.

``clinical-ner train --recipe product --output DIR`` trains the default product model, the one
a team starts with and the one the pipeline retrains (its steps, seed and labels become the
SageMaker job's hyperparameters); independent evaluation runs exactly that command. A recipe is
a TOML file: the bundled ones live in ``clinical_ner/configs/recipes/`` and are named by their
file stem (``--recipe product``), a team's own is named by its path (``--recipe my.toml``).
Corpus paths are relative to a data root (``../shared/data`` by default, ``--data-root DIR``
otherwise), so the same recipe runs on any machine that has the files.

A recipe file::

    description = "what this model is for"
    seed = 0
    labels = { DISEASE = "DISEASE", TREATMENT = "TREATMENT" }   # corpus type -> model label

    [overrides]                      # dotted spaCy config keys
    "training.max_steps" = 3000

    [[train]]
    path = "clinical-notes-annotated/notes.jsonl"
    split = "train"                  # keep only records whose own "split" is this

    [[train]]                        # a second corpus with its own label map and weight
    path = "biotext-disease-treatment/train_sent"
    labels = { D = "DISEASE", T = "TREATMENT" }
    weight = 0.25                    # a seeded 25% sample of its documents; 2.0 = each twice

    [[dev]]
    path = "clinical-notes-annotated/notes.jsonl"
    split = "dev"

Label maps are complete: a corpus type missing from the part's map (or the recipe's) stops the
read with the file and line, and ``"O"`` drops a type on purpose. Why the product recipe is what
it is: docs/model.md "Product model" and the comments in ``product.toml``.
"""

from __future__ import annotations

import hashlib
import json
import random
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clinical_ner.model.corpus import AnnotatedDoc
from clinical_ner.model.readers import DROP_LABEL, AnnotationFormat, read_annotations

DEFAULT_DATA_ROOT = Path("../shared/data")
RECIPE_DIR = Path(__file__).resolve().parents[1] / "configs" / "recipes"
_RECIPE_KEYS = {"description", "seed", "labels", "overrides", "train", "dev"}
_PART_KEYS = {"path", "split", "labels", "weight"}


class RecipeError(ValueError):
    """A recipe cannot run: unknown name, bad file, missing corpus file, or an empty selection."""


@dataclass(frozen=True)
class CorpusPart:
    """The documents of one corpus file: optionally one ``split``, its own labels, a weight."""

    path: str  # relative to the data root
    split: str | None = None  # keep records whose own "split" field is this
    labels: Mapping[str, str] | None = None  # corpus type -> model label; None: the recipe's
    weight: float = 1.0  # fraction of the selected documents to sample; > 1 repeats them

    def label_map(self, recipe_labels: Mapping[str, str]) -> dict[str, str]:
        return dict(self.labels if self.labels is not None else recipe_labels)

    def describe(self) -> str:
        split = f"[{self.split}]" if self.split else ""
        weight = f" x{self.weight:g}" if self.weight != 1.0 else ""
        return f"{self.path}{split}{weight}"

    def select(self, docs: Sequence[AnnotatedDoc], seed: int) -> list[AnnotatedDoc]:
        """The part's documents: the split filter, then the weighted, seeded sample."""
        chosen = [d for d in docs if self.split is None or d.split == self.split]
        if self.weight == 1.0 or not chosen:
            return chosen
        target = round(self.weight * len(chosen))
        whole, rest = divmod(target, len(chosen))
        # Seeded per part, so adding a corpus does not reshuffle another one's sample.
        key = hashlib.sha256(f"{seed}:{self.path}:{self.split}".encode()).digest()
        sample = random.Random(int.from_bytes(key[:8], "big")).sample(chosen, rest)
        return chosen * whole + sample


@dataclass(frozen=True)
class Recipe:
    """Everything `train` needs beyond the output directory."""

    name: str
    description: str
    train: tuple[CorpusPart, ...]
    dev: tuple[CorpusPart, ...]
    labels: Mapping[str, str] = field(default_factory=dict)  # default map of every part
    overrides: Mapping[str, object] = field(default_factory=dict)
    seed: int = 0

    @property
    def model_labels(self) -> list[str]:
        """The labels a model trained by this recipe predicts, sorted."""
        maps = [part.label_map(self.labels) for part in (*self.train, *self.dev)]
        return sorted({label for m in maps for label in m.values()} - {DROP_LABEL})

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

    def hyperparameters(self) -> dict[str, str]:
        """The SageMaker training job's hyperparameters that retrain this recipe's model.

        The pipeline trains on the annotations it has gathered (its channels), with this
        recipe's seed, label map and config overrides (`sagemaker_train.parse_hyperparameters`).
        """
        params = {"seed": str(self.seed)}
        if self.labels:
            params["labels"] = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        for key, value in sorted(self.overrides.items()):
            params[key] = value if isinstance(value, str) else json.dumps(value)
        return params


def _table(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RecipeError(f"{where} must be a table")
    return value


def _label_table(value: object, where: str) -> dict[str, str]:
    labels = _table(value, where)
    bad = [k for k, v in labels.items() if not isinstance(v, str) or not v.strip()]
    if bad or not labels:
        raise RecipeError(f"{where} must map corpus types to label names (bad: {bad or 'empty'})")
    return {str(k): v.strip() for k, v in labels.items()}


def _part(raw: object, where: str, *, sampled: bool) -> CorpusPart:
    table = _table(raw, where)
    unknown = sorted(set(table) - _PART_KEYS)
    if unknown:
        raise RecipeError(
            f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_PART_KEYS))})"
        )
    path = table.get("path")
    if (
        not isinstance(path, str)
        or not path
        or Path(path).is_absolute()
        or ".." in Path(path).parts
    ):
        raise RecipeError(f"{where}: 'path' must be a relative path under the data root")
    split = table.get("split")
    if split is not None and (not isinstance(split, str) or not split):
        raise RecipeError(f"{where}: 'split' must be a non-empty string")
    weight = table.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight <= 100:
        raise RecipeError(f"{where}: 'weight' must be a number in (0, 100]")
    if not sampled and weight != 1.0:
        raise RecipeError(f"{where}: dev parts are never sampled (drop 'weight')")
    labels = table.get("labels")
    return CorpusPart(
        path=path,
        split=split,
        labels=None if labels is None else _label_table(labels, f"{where}.labels"),
        weight=float(weight),
    )


def parse_recipe(name: str, text: str) -> Recipe:
    """A recipe from the text of its TOML file; every mistake is a RecipeError naming the key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"recipe {name!r} is not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - _RECIPE_KEYS)
    if unknown:
        raise RecipeError(f"recipe {name!r}: unknown key(s) {', '.join(unknown)}")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise RecipeError(f"recipe {name!r}: 'seed' must be an integer in [0, 2**32)")
    parts: dict[str, tuple[CorpusPart, ...]] = {}
    for section in ("train", "dev"):
        items = raw.get(section)
        if not isinstance(items, list) or not items:
            raise RecipeError(f"recipe {name!r} needs at least one [[{section}]] corpus")
        parts[section] = tuple(
            _part(item, f"recipe {name!r} {section}[{k}]", sampled=section == "train")
            for k, item in enumerate(items)
        )
    labels = raw.get("labels")
    recipe = Recipe(
        name=name,
        description=str(raw.get("description", "")),
        train=parts["train"],
        dev=parts["dev"],
        labels={} if labels is None else _label_table(labels, f"recipe {name!r} labels"),
        overrides=_table(raw.get("overrides", {}), f"recipe {name!r} overrides"),
        seed=seed,
    )
    unmapped = [
        p.describe() for p in (*recipe.train, *recipe.dev) if not p.label_map(recipe.labels)
    ]
    if unmapped:
        raise RecipeError(f"recipe {name!r}: no label map for {', '.join(unmapped)}")
    return recipe


def bundled_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.toml"))


def get_recipe(name_or_path: str) -> Recipe:
    """A bundled recipe by name, or a recipe file by path (anything ending in .toml)."""
    if name_or_path.endswith(".toml"):
        path = Path(name_or_path)
        if not path.is_file():
            raise RecipeError(f"recipe file {name_or_path} not found")
        return parse_recipe(path.stem, path.read_text(encoding="utf-8"))
    if name_or_path not in bundled_recipes():
        known = ", ".join(bundled_recipes())
        raise RecipeError(f"unknown recipe {name_or_path!r}; known: {known} (or a .toml file)")
    return parse_recipe(name_or_path, (RECIPE_DIR / f"{name_or_path}.toml").read_text("utf-8"))


@dataclass
class RecipeData:
    """The documents a recipe selects, with what was read from where (for the model's metrics)."""

    train_docs: list[AnnotatedDoc]
    dev_docs: list[AnnotatedDoc]
    files: list[Path]
    reports: dict[str, object]


def read_recipe_data(
    recipe: Recipe, data_root: Path, log: Callable[[str], None] = lambda _: None
) -> RecipeData:
    """Read each part with its own label map, select splits, and sample the weighted parts."""
    files = recipe.files(data_root)
    cache: dict[tuple[str, str], list[AnnotatedDoc]] = {}
    reports: dict[str, object] = {}

    def docs_of(part: CorpusPart) -> list[AnnotatedDoc]:
        label_map = part.label_map(recipe.labels)
        key = (part.path, json.dumps(sorted(label_map.items())))
        if key not in cache:
            docs, report = read_annotations(
                [data_root / part.path], AnnotationFormat.AUTO, label_map
            )
            cache[key] = docs
            reports[f"{part.path} {key[1]}"] = report.as_dict()
        return cache[key]

    def selected(parts: Sequence[CorpusPart], section: str) -> list[AnnotatedDoc]:
        out: list[AnnotatedDoc] = []
        for part in parts:
            docs = part.select(docs_of(part), recipe.seed)
            if not docs:
                raise RecipeError(
                    f"recipe {recipe.name!r}: {section} part {part.describe()} selects no documents"
                )
            words = sum(len(d.tokens) for d in docs)
            reports[f"{section} {part.describe()}"] = {"docs": len(docs), "words": words}
            log(
                f"recipe {recipe.name} {section} {part.describe()}: {len(docs)} docs, {words} words"
            )
            out.extend(docs)
        return out

    train_docs = selected(recipe.train, "train")
    dev_docs = selected(recipe.dev, "dev")
    return RecipeData(train_docs, dev_docs, files, reports)
