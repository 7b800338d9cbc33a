"""Drift profiles of a window of notes and the statistics that compare a window with a baseline.

A *profile* is a small JSON-serialisable summary of a window of notes and of the model's
predictions on them. The training job writes the profile of its training texts next to the
model (``drift_baseline.json``); the monitor builds the profile of each live window *against
that baseline* (``build_profile(..., reference=baseline)``, so both use the same bins and the
same vocabulary) and turns the pair into drift signals with `compare`.

What a profile holds (all per window):

- ``note_length``: histogram of note lengths in characters. A baseline fixes its bin edges from
  its own quantiles (deciles by default, duplicates removed), so each baseline bin holds about
  the same share of notes; a window is binned on the baseline's edges.
- ``vocabulary`` (baseline only): the most frequent lower-cased word tokens, to measure the
  out-of-vocabulary (OOV) rate of later windows. See "PHI" below.
- ``oov``: OOV rate of the window. For a baseline it is measured on a held-out half (below).
- ``entities``: entity counts per label, entities per 100 tokens per label (density), the label
  mix, a histogram of confidences on fixed edges (0.1 steps), the share of notes with no entity
  and the share of negated entities.
- ``token_rule`` (schema 2): the token regular expression that made every count above.

The format is the typed `clinical_ner.model.contracts.DriftProfile` (``schema_version`` 2), read
by `contracts.read_profile` (used here on every profile given to `build_profile` and `compare`),
which migrates a stored profile of an older schema (a v1 training baseline or production
reference still loads) and refuses one of a newer schema.

Tokens are the model's own tokens (`model.tokenization.tokenize_offsets`). Densities are
per 100 of those tokens (punctuation included, as the model sees it). The vocabulary and the OOV
rate use *word* tokens only: tokens with at least one letter, lower-cased. Pure numbers and
punctuation are left out: doses, dates and vital signs vary from note to note and would make
OOV measure numbers rather than language.

Held-out OOV: a vocabulary always covers the notes it was built from better than new notes, so
an OOV rate measured on the baseline's own vocabulary notes would make every later window look
drifted. The baseline is therefore split in two halves by a hash of each note text (stable
across runs; identical texts land in the same half). The vocabulary is built from half A only,
and the baseline OOV rate is measured on half B with that vocabulary: the stored rate is what a
window from the same distribution scores against the stored vocabulary.

PSI (population stability index) of a histogram: with baseline counts ``E_i`` and window counts
``A_i`` over the same K bins, proportions are smoothed so that empty bins stay finite::

    e_i = (E_i / sum(E) + eps) / (1 + K * eps)
    a_i = (A_i / sum(A) + eps) / (1 + K * eps)
    PSI = sum_i (a_i - e_i) * ln(a_i / e_i)

``eps`` defaults to 1e-4. PSI is 0 for identical distributions and grows with the shift; the
usual reading is < 0.1 stable, 0.1-0.25 moderate, > 0.25 severe (the thresholds actually used
are stage configuration, `pipeline.stage_config.DriftThresholds`). PSI is undefined (None)
when either side has no observations (e.g. confidences of a window with no entity).

PHI: a profile stores counts, shares and bin edges, never note text, with one exception: the
baseline vocabulary of frequent tokens. A token enters it only if it occurs in at least
``min_doc_freq`` (k >= 5, enforced) *distinct* notes of half A (identical texts count once), so
a word seen in one patient's notes (a rare name, an identifier, a street) cannot enter unless
it recurs across k different notes. Tokens are stored sorted alphabetically without counts, so
the list says nothing about any note or about which words occur together. Words common across
many notes (drug names, anatomy, common surnames of clinicians) can be in it; that is a bag of
frequent words, not a record about a person. Window profiles (the ones written per monitoring
run) carry no tokens at all.

The baseline that ships inside a model artifact (`sagemaker_train`) is built with a public
``lexicon`` as well: only words that also occur in the public vocabularies the model carries
(ICD-10-CM, MeSH, HPO, drug names) or in spaCy's English stop-word list can enter, so a surname
that recurs across five notes of one patient still stays out. Words outside the lexicon count
as out-of-vocabulary on both sides (baseline held-out half and windows alike), so the OOV
signal keeps its meaning: it is measured over public words only.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from clinical_ner.model.contracts import (
    BASELINE_FILE,
    PROFILE_KIND_BASELINE,
    PROFILE_KIND_WINDOW,
    PROFILE_SCHEMA_VERSION,
    DriftProfile,
    EntityStats,
    OovStats,
    ProfileError,
    Vocabulary,
    dump_profile,
    load_profile,
    read_profile,
    save_profile,
    validate_profile,
)
from clinical_ner.model.tokenization import TOKEN_PATTERN

# The profile's format, reader and writer live in `clinical_ner.model.contracts` (versioned,
# with migrations); re-exported here, where profiles are made.
__all__ = [
    "BASELINE_FILE",
    "PROFILE_KIND_BASELINE",
    "PROFILE_KIND_WINDOW",
    "PROFILE_SCHEMA_VERSION",
    "DriftProfile",
    "ProfileError",
    "build_profile",
    "checked_pair",
    "compare",
    "dump_profile",
    "load_profile",
    "psi",
    "read_profile",
    "reference_id",
    "save_profile",
    "validate_profile",
]

DEFAULT_LENGTH_BINS = 10
DEFAULT_VOCAB_SIZE = 20_000
MAX_VOCAB_SIZE = 50_000
DEFAULT_MIN_DOC_FREQ = 5
MIN_DOC_FREQ_FLOOR = 5
DEFAULT_EPSILON = 1e-4
# Inner edges of the confidence histogram: [0, 0.1), [0.1, 0.2), ..., [0.9, 1.0].
CONFIDENCE_EDGES: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 10))
# Relative density changes are taken against at least this many entities per 100 tokens, so a
# label that is almost absent from the baseline does not turn one mention into +1000%.
DENSITY_FLOOR = 0.1

_WORD = re.compile(r"[^\W\d_]")


class _EntityLike(Protocol):
    """What a profile needs of a predicted entity (`PredictedEntity` has it)."""

    @property
    def label(self) -> str: ...

    @property
    def confidence(self) -> float: ...


# --------------------------------------------------------------------------- statistics


def psi(
    expected: Sequence[float], actual: Sequence[float], epsilon: float = DEFAULT_EPSILON
) -> float | None:
    """Population stability index of two histograms over the same bins (formula above).

    Inputs are counts (or unnormalised weights); None when either side is empty.
    """
    if len(expected) != len(actual):
        raise ValueError(f"histograms differ in length: {len(expected)} != {len(actual)}")
    if not expected:
        raise ValueError("empty histograms")
    if epsilon < 0:
        raise ValueError("epsilon must be >= 0")
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if (e < 0).any() or (a < 0).any():
        raise ValueError("histogram counts must be >= 0")
    if e.sum() == 0 or a.sum() == 0:
        return None
    k = len(e)
    e = (e / e.sum() + epsilon) / (1 + k * epsilon)
    a = (a / a.sum() + epsilon) / (1 + k * epsilon)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(a == e, 0.0, (a - e) * np.log(a / e))
    value = float(terms.sum())
    if not math.isfinite(value):  # only possible with epsilon == 0 and an empty bin
        return math.inf
    return value


def histogram(values: Iterable[float], inner_edges: Sequence[float]) -> list[int]:
    """Counts over len(inner_edges)+1 bins; bin i holds edges[i-1] <= x < edges[i].

    The first bin is open below and the last open above.
    """
    edges = np.asarray(inner_edges, dtype=float)
    data = np.fromiter(values, dtype=float)
    idx = np.searchsorted(edges, data, side="right")
    return [int(c) for c in np.bincount(idx, minlength=len(edges) + 1)]


def quantile_edges(values: Sequence[float], bins: int) -> list[float]:
    """Inner bin edges at the 1/bins ... (bins-1)/bins quantiles, duplicates removed."""
    if bins < 2:
        raise ValueError("need at least 2 bins")
    if not values:
        raise ValueError("no values")
    qs = np.quantile(np.asarray(values, dtype=float), [i / bins for i in range(1, bins)])
    edges: list[float] = []
    for q in qs:
        q = round(float(q), 6)
        if not edges or q > edges[-1]:
            edges.append(q)
    return edges


# --------------------------------------------------------------------------- profiles


def word_tokens(text: str) -> list[str]:
    """Lower-cased tokens of `text` that contain a letter (the OOV/vocabulary unit)."""
    return [m.group(0).lower() for m in TOKEN_PATTERN.finditer(text) if _WORD.search(m.group(0))]


def _text_half(text: str) -> int:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[0] & 1


def _entity_fields(entity: _EntityLike | Mapping[str, Any]) -> tuple[str, float, bool]:
    if isinstance(entity, Mapping):
        return str(entity["label"]), float(entity["confidence"]), bool(entity.get("negated"))
    return (
        str(entity.label),
        float(entity.confidence),
        bool(getattr(entity, "negated", False)),
    )


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def reference_id(profile: DriftProfile) -> str:
    """Fingerprint of what a window must share with a baseline: bin edges, vocabulary, labels."""
    keyed = {
        "length_edges": profile["note_length"]["edges"],
        "confidence_edges": profile["entities"]["confidence"]["edges"],
        "vocabulary": profile["vocabulary"]["tokens"],
        "labels": profile["labels"],
    }
    blob = json.dumps(keyed, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def build_profile(
    texts: Iterable[str],
    entity_predictions: Iterable[Sequence[_EntityLike | Mapping[str, Any]]],
    *,
    reference: Mapping[str, Any] | None = None,
    labels: Sequence[str] | None = None,
    length_bins: int = DEFAULT_LENGTH_BINS,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    min_doc_freq: int = DEFAULT_MIN_DOC_FREQ,
    model_version: str | None = None,
    created_at: str | None = None,
    lexicon: Collection[str] | None = None,
) -> DriftProfile:
    """Profile a window of notes and the model's entities on them (one list per note).

    Entities are `PredictedEntity` objects or mappings with ``label``, ``confidence`` and
    optionally ``negated`` (e.g. rows of the entities table). Without `reference` this builds a
    baseline (own length edges, vocabulary, held-out OOV); with it, a window profile on the
    reference's edges and vocabulary, comparable with it through `compare`. With `lexicon`
    (baseline only) a vocabulary word must also be in it (PHI, see the module doc). A
    `reference` of an older profile schema is migrated (`contracts.read_profile`).
    """
    if reference is not None and lexicon is not None:
        raise ValueError("lexicon applies to a baseline, not to a window profile")
    ref: DriftProfile | None = None
    if reference is not None:
        ref = read_profile(reference, "reference profile")
        if ref["kind"] != PROFILE_KIND_BASELINE:
            raise ProfileError("reference must be a baseline profile")
    if min_doc_freq < MIN_DOC_FREQ_FLOOR:
        raise ValueError(f"min_doc_freq must be >= {MIN_DOC_FREQ_FLOOR} (PHI protection)")
    if not 1 <= vocab_size <= MAX_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be in 1..{MAX_VOCAB_SIZE}")

    lengths: list[int] = []
    token_total = 0
    notes_without_entity = 0
    label_counts: Counter[str] = Counter()
    confidences: list[float] = []
    negated = 0
    # Baseline vocabulary: document frequency over distinct texts of half A; token counts of
    # half B for the held-out OOV rate. Window: word-token counts against the reference.
    doc_freq: Counter[str] = Counter()
    seen_a: set[bytes] = set()
    held_out: Counter[str] = Counter()
    ref_vocab: frozenset[str] = frozenset()
    if ref is not None:
        ref_vocab = frozenset(ref["vocabulary"]["tokens"])
    window_words = 0
    window_oov = 0

    for text, entities in zip(texts, entity_predictions, strict=True):
        lengths.append(len(text))
        token_total += sum(1 for _ in TOKEN_PATTERN.finditer(text))
        words = word_tokens(text)
        if ref is not None:
            window_words += len(words)
            window_oov += sum(1 for w in words if w not in ref_vocab)
        elif _text_half(text) == 0:
            digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
            if digest not in seen_a:
                seen_a.add(digest)
                doc_freq.update(set(words))
        else:
            held_out.update(words)
        if not entities:
            notes_without_entity += 1
        for entity in entities:
            label, confidence, is_negated = _entity_fields(entity)
            label_counts[label] += 1
            confidences.append(confidence)
            negated += is_negated

    notes = len(lengths)
    if notes == 0:
        raise ValueError("cannot profile an empty window")

    if ref is not None:
        length_edges = list(ref["note_length"]["edges"])
        all_labels = sorted(set(ref["labels"]) | set(label_counts))
        vocabulary: Vocabulary = {"reference_id": reference_id(ref)}
        oov: OovStats = {
            "word_tokens": window_words,
            "oov_tokens": window_oov,
            "rate": _share(window_oov, window_words),
        }
    else:
        length_edges = quantile_edges(lengths, length_bins)
        all_labels = sorted(set(labels or ()) | set(label_counts))
        public = frozenset(lexicon) if lexicon is not None else None
        eligible = [
            (t, c)
            for t, c in doc_freq.items()
            if c >= min_doc_freq and (public is None or t in public)
        ]
        eligible.sort(key=lambda tc: (-tc[1], tc[0]))
        tokens = sorted(t for t, _ in eligible[:vocab_size])
        vocab_set = frozenset(tokens)
        held_words = sum(held_out.values())
        held_oov = sum(c for t, c in held_out.items() if t not in vocab_set)
        vocabulary = {
            "tokens": tokens,
            "size": len(tokens),
            "max_size": vocab_size,
            "min_doc_freq": min_doc_freq,
            "built_from_notes": len(seen_a),
            "eligible_tokens": len(eligible),
            "lexicon_words": len(public) if public is not None else None,
        }
        oov = {
            "word_tokens": held_words,
            "oov_tokens": held_oov,
            "measured_on": "held-out half",
            "rate": _share(held_oov, held_words),
        }

    entity_total = sum(label_counts.values())
    entity_stats: EntityStats = {
        "total": entity_total,
        "counts": {label: label_counts.get(label, 0) for label in all_labels},
        "per_100_tokens": {
            label: (100.0 * label_counts.get(label, 0) / token_total if token_total else 0.0)
            for label in all_labels
        },
        "label_mix": {
            label: _share(label_counts.get(label, 0), entity_total) for label in all_labels
        },
        "confidence": {
            "edges": list(CONFIDENCE_EDGES),
            "counts": histogram(confidences, CONFIDENCE_EDGES),
        },
        "notes_without_entity": notes_without_entity,
        "no_entity_share": notes_without_entity / notes,
        "negated": negated,
        "negated_share": _share(negated, entity_total),
    }
    profile: DriftProfile = {
        "schema_version": PROFILE_SCHEMA_VERSION,
        "kind": PROFILE_KIND_WINDOW if ref is not None else PROFILE_KIND_BASELINE,
        "created_at": created_at or datetime.now(UTC).isoformat(timespec="seconds"),
        "model_version": model_version,
        "token_rule": TOKEN_PATTERN.pattern,
        "notes": notes,
        "tokens": token_total,
        "labels": all_labels,
        "note_length": {
            "unit": "characters",
            "edges": length_edges,
            "counts": histogram(lengths, length_edges),
            "mean": round(float(np.mean(lengths)), 3),
            "p50": float(np.quantile(lengths, 0.5)),
            "p95": float(np.quantile(lengths, 0.95)),
        },
        "vocabulary": vocabulary,
        "oov": oov,
        "entities": entity_stats,
    }
    if ref is None:
        profile["reference_id"] = reference_id(profile)
    return profile


# --------------------------------------------------------------------------- comparison


def _aligned(
    base: Mapping[str, int], window: Mapping[str, int], labels: Sequence[str]
) -> tuple[list[int], list[int]]:
    return [int(base.get(label, 0)) for label in labels], [
        int(window.get(label, 0)) for label in labels
    ]


def _delta(window: float | None, base: float | None) -> float | None:
    if window is None or base is None:
        return None
    return window - base


def checked_pair(
    profile: Mapping[str, Any], window_profile: Mapping[str, Any]
) -> tuple[DriftProfile, DriftProfile]:
    """(baseline, window), migrated and checked to belong together."""
    base = read_profile(profile, "baseline profile")
    window = read_profile(window_profile, "window profile")
    if base["kind"] != PROFILE_KIND_BASELINE:
        raise ProfileError("the first argument must be a baseline profile")
    if window["kind"] != PROFILE_KIND_WINDOW:
        raise ProfileError("the second argument must be a window profile built with reference=")
    expected_id = reference_id(base)
    got_id = window["vocabulary"].get("reference_id")
    if got_id != expected_id:
        raise ProfileError(f"window profile was built against baseline {got_id}, not {expected_id}")
    if base["token_rule"] != window["token_rule"]:
        # Token and word counts of two token rules are not comparable (densities, OOV).
        raise ProfileError("window profile was counted with another token rule than its baseline")
    return base, window


def profile_labels(base: DriftProfile, window: DriftProfile) -> list[str]:
    """The labels of either profile, sorted: the bins of the label-mix and density statistics."""
    return sorted(set(base["labels"]) | set(window["labels"]))


# One function per raw statistic, each of a (baseline, window) pair checked by `checked_pair`;
# `compare` lists them all and the monitor's signal specs pick theirs
# (`clinical_ner.pipeline.monitoring.SIGNALS`).


def note_length_psi(
    base: DriftProfile, window: DriftProfile, epsilon: float = DEFAULT_EPSILON
) -> float | None:
    return psi(base["note_length"]["counts"], window["note_length"]["counts"], epsilon)


def confidence_psi(
    base: DriftProfile, window: DriftProfile, epsilon: float = DEFAULT_EPSILON
) -> float | None:
    return psi(
        base["entities"]["confidence"]["counts"],
        window["entities"]["confidence"]["counts"],
        epsilon,
    )


def label_mix_psi(
    base: DriftProfile, window: DriftProfile, epsilon: float = DEFAULT_EPSILON
) -> float | None:
    labels = profile_labels(base, window)
    return psi(*_aligned(base["entities"]["counts"], window["entities"]["counts"], labels), epsilon)


def oov_rate_delta(base: DriftProfile, window: DriftProfile) -> float | None:
    return _delta(window["oov"]["rate"], base["oov"]["rate"])


def entity_density_rel_changes(base: DriftProfile, window: DriftProfile) -> dict[str, float]:
    """Per label: (window - baseline) entities per 100 tokens over max(baseline, floor)."""
    base_d, win_d = base["entities"]["per_100_tokens"], window["entities"]["per_100_tokens"]
    changes: dict[str, float] = {}
    for label in profile_labels(base, window):
        b, w = float(base_d.get(label, 0.0)), float(win_d.get(label, 0.0))
        changes[label] = (w - b) / max(b, DENSITY_FLOOR)
    return changes


def no_entity_share_delta(base: DriftProfile, window: DriftProfile) -> float | None:
    return _delta(window["entities"]["no_entity_share"], base["entities"]["no_entity_share"])


def negated_share_delta(base: DriftProfile, window: DriftProfile) -> float | None:
    return _delta(window["entities"]["negated_share"], base["entities"]["negated_share"])


def compare(
    profile: Mapping[str, Any],
    window_profile: Mapping[str, Any],
    *,
    epsilon: float = DEFAULT_EPSILON,
) -> dict[str, float | int | None]:
    """Drift signals of a window against a baseline; None where a signal is undefined.

    Signals: ``window_notes``, ``window_entities`` (sample sizes, so the monitor can ignore
    small windows), ``psi_note_length``, ``psi_confidence``, ``psi_label_mix``, ``oov_rate``,
    ``oov_rate_baseline``, ``oov_rate_delta``, ``entity_density_rel_change.<LABEL>`` (window
    minus baseline entities per 100 tokens, over max(baseline, DENSITY_FLOOR)),
    ``no_entity_share_delta`` and ``negated_share_delta`` (window minus baseline).
    """
    base, window = checked_pair(profile, window_profile)
    signals: dict[str, float | int | None] = {
        "window_notes": int(window["notes"]),
        "window_entities": int(window["entities"]["total"]),
        "psi_note_length": note_length_psi(base, window, epsilon),
        "psi_confidence": confidence_psi(base, window, epsilon),
        "psi_label_mix": label_mix_psi(base, window, epsilon),
        "oov_rate": window["oov"]["rate"],
        "oov_rate_baseline": base["oov"]["rate"],
        "oov_rate_delta": oov_rate_delta(base, window),
    }
    for label, change in entity_density_rel_changes(base, window).items():
        signals[f"entity_density_rel_change.{label}"] = change
    signals["no_entity_share_delta"] = no_entity_share_delta(base, window)
    signals["negated_share_delta"] = negated_share_delta(base, window)
    return signals
