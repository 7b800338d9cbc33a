"""Loading a trained model and turning note texts into scored, calibrated entity predictions.

Confidence: the greedy transition-based NER is trained with a locally normalised objective
(softmax over the valid actions at each token), so each decision has a probability. We replay
spaCy's own greedy parse step by step (same decisions as `nlp(text)`), keep each step's scores,
and give an entity the product of the probabilities of the actions that built it (B, I..., L or
U). That raw score ranks entities well but is over-confident, so an isotonic map fitted on dev
data turns it into the probability that the entity is exactly right (span and label); its
expected calibration error on held-out dev data is reported in metrics.json.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
import spacy
from spacy.language import Language
from spacy.tokens import Doc

import clinical_ner.model.dictionaries
import clinical_ner.model.spacy_tokenizer  # noqa: F401 - registers the models' tokenizer
from clinical_ner.model.contracts import MODEL_CARD_FILE, read_model_card_file
from clinical_ner.model.enrichment import Enricher, EntityDetails, load_enricher


@dataclass(frozen=True)
class PredictedEntity:
    """An entity found in a note: `note_text[start:end] == text`."""

    start: int
    end: int
    label: str
    text: str
    confidence: float
    raw_score: float = 0.0  # uncalibrated product of action probabilities
    # Section, context traits, ICD-10-CM codes, drug concept, medication attributes.
    details: EntityDetails = field(default_factory=EntityDetails)

    @property
    def negated(self) -> bool:
        return self.details.has("negated")


@dataclass(frozen=True)
class Calibrator:
    """Monotone piecewise-linear map from beam marginal to P(entity exactly right)."""

    x: tuple[float, ...] = (0.0, 1.0)
    y: tuple[float, ...] = (0.0, 1.0)

    @classmethod
    def fit(cls, raw_scores: Sequence[float], correct: Sequence[bool]) -> Calibrator:
        from sklearn.isotonic import IsotonicRegression

        if len(set(correct)) < 2 or len(raw_scores) < 20:
            return cls()  # too little evidence: keep the raw marginal
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        iso.fit(np.asarray(raw_scores, dtype=float), np.asarray(correct, dtype=float))
        return cls(
            tuple(float(v) for v in iso.X_thresholds_), tuple(float(v) for v in iso.y_thresholds_)
        )

    def __call__(self, raw: float) -> float:
        return float(np.clip(np.interp(raw, self.x, self.y), 0.0, 1.0))

    def as_dict(self) -> dict[str, list[float]]:
        return {"x": list(self.x), "y": list(self.y)}


def _batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


class NerModel:
    """A trained model directory: spaCy pipeline + confidence calibration + version."""

    def __init__(
        self,
        nlp: Language,
        version: str,
        calibrator: Calibrator | None = None,
        enricher: Enricher | None = None,
    ) -> None:
        self.nlp = nlp
        self.version = version
        self.calibrator = calibrator or Calibrator()
        # None: entities come without details (evaluation, calibration and tests of the NER).
        self.enricher = enricher
        self._action_index: dict[str, int] = {}
        self._masks = self._action_masks()
        self.labels: tuple[str, ...] = tuple(sorted(nlp.get_pipe("ner").labels))

    @classmethod
    def load(cls, path: Path | str, *, enrich: bool = True) -> NerModel:
        """The model in `path`; `enrich=False` skips the vocabularies (NER only)."""
        path = Path(path)
        if not (path / "config.cfg").is_file():
            raise FileNotFoundError(f"{path} is not a model directory (no config.cfg)")
        nlp = spacy.load(path)
        card_path = path / MODEL_CARD_FILE
        card = read_model_card_file(card_path) if card_path.is_file() else {}
        calibration = card.get("calibration")
        calibrator = (
            Calibrator(tuple(calibration["x"]), tuple(calibration["y"])) if calibration else None
        )
        version = card.get("model_version") or f"{nlp.meta['name']}-{nlp.meta['version']}"
        return cls(nlp, version, calibrator, load_enricher(path) if enrich else None)

    def _parse_with_scores(self, docs: list[Doc]) -> np.ndarray:
        """Greedy-parse `docs` in place; return scores shaped (docs, max tokens, actions).

        Every NER action consumes exactly one token, so all states advance in lockstep: at
        step t the unfinished states are exactly the docs longer than t, in input order.
        """
        ner = self.nlp.get_pipe("ner")
        states = ner.moves.init_batch(docs)
        step_model = ner.model.predict(docs)
        longest = max((len(doc) for doc in docs), default=0)
        all_scores = np.zeros((len(docs), longest, ner.moves.n_moves), dtype="f")
        unfinished = [state for state in states if not state.is_final()]
        owners = np.array([i for i, state in enumerate(states) if not state.is_final()], dtype=int)
        step = 0
        while unfinished:
            scores = step_model.predict(unfinished)
            all_scores[owners, step] = scores
            still_open = ner.transition_states(unfinished, scores)
            step += 1
            if len(still_open) != len(unfinished):
                owners = np.array([o for o in owners if len(docs[o]) > step], dtype=int)
            unfinished = still_open
        step_model.clear_memory()
        ner.set_annotations(docs, states)
        return all_scores

    def _action_masks(self) -> dict[tuple[bool, str | None, bool], np.ndarray]:
        """Valid-action masks keyed by (entity open, open label, last token).

        These mirror spaCy's BILUO validity rules for docs without preset entities; they only
        normalise the softmax, spaCy itself still chooses the actions.
        """
        ner = self.nlp.get_pipe("ner")
        names = [ner.moves.get_class_name(i) for i in range(ner.moves.n_moves)]
        moves = np.array([name.split("-", 1)[0] for name in names])
        labels = np.array([name.split("-", 1)[1] if "-" in name else "" for name in names])
        self._action_index = {name: i for i, name in enumerate(names)}
        masks: dict[tuple[bool, str | None, bool], np.ndarray] = {}
        for last in (False, True):
            masks[(False, None, last)] = (
                (moves == "O") | (moves == "U") | ((moves == "B") & (not last))
            )
            for label in set(labels) - {""}:
                masks[(True, label, last)] = (((moves == "I") & (not last)) | (moves == "L")) & (
                    labels == label
                )
        return masks

    def _entity_scores(self, doc: Doc, scores: np.ndarray) -> list[float]:
        """Product of per-token action probabilities over each entity in `doc.ents`."""
        index = self._action_index
        last_token = len(doc) - 1
        raw = []
        for ent in doc.ents:
            label = ent.label_
            log_p = 0.0
            for t in range(ent.start, ent.end):
                first, final = t == ent.start, t == ent.end - 1
                if first:
                    action = index[f"U-{label}" if final else f"B-{label}"]
                    mask = self._masks[(False, None, t == last_token)]
                else:
                    action = index[f"L-{label}" if final else f"I-{label}"]
                    mask = self._masks[(True, label, t == last_token)]
                row = scores[t]
                valid = row[mask]
                top = valid.max()
                log_p += float(row[action] - top - np.log(np.exp(valid - top).sum()))
            raw.append(float(np.exp(log_p)))
        return raw

    def predict_docs(
        self, docs: Iterable[Doc], batch_size: int = 64
    ) -> Iterator[list[PredictedEntity]]:
        """Predict over docs that are already tokenized (e.g. a corpus's own tokens)."""
        stream = self.nlp.pipe(docs, batch_size=batch_size, disable=["ner"])
        for batch in _batched(stream, batch_size):
            for doc, scores in zip(batch, self._parse_with_scores(batch), strict=True):
                yield self._entities(doc, scores)

    def _entities(self, doc: Doc, scores: np.ndarray) -> list[PredictedEntity]:
        """The entities of one parsed doc, in time linear in its length plus its entities.

        `doc.text` is rebuilt from the tokens on every access, and the context rules look
        around each entity: both are done once per doc here, not once per entity.
        """
        ents = doc.ents
        if not ents:
            return []
        text = doc.text
        spans = [(ent.start_char, ent.end_char, ent.label_) for ent in ents]
        details = (
            self.enricher.details(text, spans)
            if self.enricher is not None
            else [EntityDetails()] * len(spans)
        )
        return [
            PredictedEntity(start, end, label, text[start:end], self.calibrator(raw), raw, detail)
            for (start, end, label), raw, detail in zip(
                spans, self._entity_scores(doc, scores), details, strict=True
            )
        ]

    def predict(
        self, texts: Iterable[str], batch_size: int = 64
    ) -> Iterator[list[PredictedEntity]]:
        """One list of entities per text, in input order; offsets index the text as given.

        Each batch runs in a spaCy memory zone: the strings and lexemes of its words are freed
        when the batch is done. Otherwise the vocabulary keeps every word ever seen, so a
        long-running server grows without bound and holds patient names in memory. The model
        reads hashed features and its labels are permanent strings, so results do not change.
        """
        for batch in _batched(texts, batch_size):
            with self._memory_zone():
                results = list(self.predict_docs(map(self.nlp.make_doc, batch), batch_size))
            yield from results  # outside the zone: the results hold plain str, not spaCy objects

    def _memory_zone(self) -> AbstractContextManager[object]:
        # Zones must not nest: inside a caller's zone, its end frees this batch's strings.
        return nullcontext() if self.nlp.vocab.in_memory_zone else self.nlp.memory_zone()
