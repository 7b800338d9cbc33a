"""Classic CRF baseline (sklearn-crfsuite, the usual token features) for the NER benchmark."""

from __future__ import annotations

import time
from collections.abc import Sequence

import sklearn_crfsuite

from clinical_ner.model.corpus import AnnotatedDoc
from clinical_ner.model.tokenization import tokenize_offsets

Spans = list[tuple[int, int, str]]


def _shape(word: str) -> str:
    out = []
    for ch in word:
        kind = "X" if ch.isupper() else "x" if ch.islower() else "d" if ch.isdigit() else ch
        if not out or out[-1] != kind:
            out.append(kind)
    return "".join(out)


def _token_features(words: Sequence[str], i: int) -> dict[str, object]:
    word = words[i]
    features: dict[str, object] = {
        "bias": 1.0,
        "lower": word.lower(),
        "suffix3": word[-3:].lower(),
        "suffix2": word[-2:].lower(),
        "prefix3": word[:3].lower(),
        "is_upper": word.isupper(),
        "is_title": word.istitle(),
        "is_digit": word.isdigit(),
        "shape": _shape(word),
        "length": min(len(word), 12),
    }
    for offset in (-2, -1, 1, 2):
        j = i + offset
        if 0 <= j < len(words):
            neighbour = words[j]
            features[f"{offset}:lower"] = neighbour.lower()
            features[f"{offset}:suffix3"] = neighbour[-3:].lower()
            features[f"{offset}:is_title"] = neighbour.istitle()
            features[f"{offset}:shape"] = _shape(neighbour)
        else:
            features[f"{offset}:pad"] = True
    return features


def _tokens(doc_text: str) -> list[tuple[int, int]]:
    return tokenize_offsets(doc_text)


def _bio_tags(doc: AnnotatedDoc, offsets: list[tuple[int, int]]) -> list[str]:
    tags = ["O"] * len(offsets)
    for entity in doc.entities:
        inside = [i for i, (s, e) in enumerate(offsets) if s >= entity.start and e <= entity.end]
        for n, i in enumerate(inside):
            tags[i] = f"{'B' if n == 0 else 'I'}-{entity.label}"
    return tags


def _features(text: str, offsets: list[tuple[int, int]]) -> list[dict[str, object]]:
    words = [text[s:e] for s, e in offsets]
    return [_token_features(words, i) for i in range(len(words))]


def _spans(offsets: list[tuple[int, int]], tags: Sequence[str]) -> Spans:
    spans: Spans = []
    start = label = None
    end = 0
    for (s, e), tag in zip(offsets, tags, strict=True):
        if tag.startswith("I-") and label == tag[2:]:
            end = e
            continue
        if start is not None and label is not None:
            spans.append((start, end, label))
        start, label, end = (s, tag[2:], e) if tag != "O" else (None, None, 0)
    if start is not None and label is not None:
        spans.append((start, end, label))
    return spans


class CrfBaseline:
    """Linear-chain CRF over the same tokens the spaCy model sees."""

    def __init__(self, c1: float = 0.1, c2: float = 0.1, max_iterations: int = 100) -> None:
        self.crf = sklearn_crfsuite.CRF(
            algorithm="lbfgs",
            c1=c1,
            c2=c2,
            max_iterations=max_iterations,
            all_possible_transitions=True,
        )
        self.train_seconds = 0.0

    def fit(self, docs: Sequence[AnnotatedDoc]) -> CrfBaseline:
        started = time.perf_counter()
        xs, ys = [], []
        for doc in docs:
            offsets = _tokens(doc.text)
            xs.append(_features(doc.text, offsets))
            ys.append(_bio_tags(doc, offsets))
        self.crf.fit(xs, ys)
        self.train_seconds = time.perf_counter() - started
        return self

    def predict(self, texts: Sequence[str]) -> list[Spans]:
        offsets = [_tokens(t) for t in texts]
        tags = self.crf.predict([_features(t, o) for t, o in zip(texts, offsets, strict=True)])
        return [_spans(o, t) for o, t in zip(offsets, tags, strict=True)]
