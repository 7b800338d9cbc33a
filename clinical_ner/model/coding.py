"""ICD-10-CM candidate codes for disease and symptom mentions: a char-3-gram TF-IDF linker.

Built from the ICD-10-CM tabular list shipped in the pinned `simple-icd-10-cm` (descriptions,
inclusion terms and "includes" notes), in the spirit of scispaCy's linker (cosine similarity of
character 3-gram TF-IDF vectors) but small: the index is a sparse matrix of a few MB that loads
in tens of milliseconds without `simple_icd_10_cm`, scikit-learn or pickle.

Only billable (leaf) codes are returned. The text of a non-billable code (a category such as
E11 "Type 2 diabetes mellitus") links to its default leaf (its `unspecified` / `without
complications` child, E11.9), so a category never outranks its own leaf: it is not a candidate
at all. Codes that need a 7th character link to the `A` (initial encounter) extension, with the
placeholder `X`s the tabular list requires (T14.90 -> T14.90XA). Chapters 20 (external causes,
V00-Y99) and 21 (Z codes, factors influencing health status) are not indexed: they never name a
disease or symptom; the exception is the allergy status codes (Z88, Z91.0-: "latex allergy").
Procedures are not coded (ICD-10-CM has no procedure codes).

Ranking on top of the similarity: the default leaves of the best code's parent and category
follow it (the "unspecified" siblings), a code's weight depends on what the mention says (see
_weight_table), and a mention with few near-best terms reaches further down to fill its top k.
Like a coder with the alphabetic index, a mention that contains a main term with a default
("recurrent pneumonias": Pneumonia -> J18.9) gets that default in its top 5, and words that
name no concept ("changes", "problems", "tendency") weigh little in the query.

Data licence and provenance: docs/dictionaries.md.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from clinical_ner.model.code_candidates import CodeCandidate, VocabularyFormatError
from clinical_ner.model.icd10cm_terms import (
    ABBREVIATIONS,
    INDEX_DEFAULTS,
    INDEX_TERMS,
    PHRASE_SYNONYMS,
    STOP_WORDS,
    UPPER_CASE_ONLY,
    WORD_EQUIVALENTS,
)

FORMAT_VERSION = 2
_META_FILE = "icd10cm_linker.json.gz"
_INDEX_FILE = "icd10cm_linker.npz"

# Chapters whose codes never name a disease or symptom (see module docstring), except the
# allergy status categories of chapter 21, which is how ICD-10-CM codes "latex allergy" or
# "penicillin allergy" written as a diagnosis.
_EXCLUDED_CHAPTERS = frozenset({"20", "21"})
_KEPT_CATEGORIES = ("Z88", "Z91.0")

# An n-gram in more than this fraction of the index terms ("ion", "on ", " un") carries almost
# no weight in TF-IDF but dominates the cost of the sparse product; dropping it keeps the
# per-mention cost low at a negligible change in the ranking.
DEFAULT_MAX_DF = 0.02

# Index terms scoring below this fraction of a mention's best term are not expanded to codes:
# the top k codes come from the near-best terms, and the cut keeps the expansion small.
_KEEP_FRACTION = 0.6
# A code described as "Other ..." is the residual of its category: on an equal text match the
# unspecified or named code is the better guess (the guideline's "unspecified leaf" rule).
_OTHER_PRIOR = 0.99
# Pregnancy (O), perinatal (P) and congenital (Q) codes apply only when the mention says so;
# "hypertension" must not tie with "maternal hypertension" because one word was missed.
# The penalty is per mention: it applies when the mention has none of _CONTEXT_WORDS, and not
# to an exact text match (a mention that names "atrial septal defect" means the Q code).
_CONTEXT_CHAPTER_LETTERS = frozenset("OPQ")
_CONTEXT_PRIOR = 0.8
_CONTEXT_WORDS = re.compile(
    r"pregnan|gestation|gravid|matern|obstetric|puerper|partum|labor|deliver|fetus|fetal"
    r"|newborn|neonat|perinat|congenital|birth|trimester|preterm|eclampsia|abortion"
    r"|miscarriage|placent|infant"
)
# A code that names a side (right / left / bilateral) when the mention names none: the guideline
# codes the specificity the span states, so the unspecified-side sibling goes first.
_SIDE_PRIOR = 0.96
_SIDE_WORDS = re.compile(r"\b(right|left|bilateral)\b")

# How many candidates a mention should get: when the near-best terms (_KEEP_FRACTION) give
# fewer codes than this, terms down to _FILL_FRACTION of the best are expanded too, so a rare
# word still gets a full top-5 instead of one or two guesses.
_FILL_TERMS = 12
_FILL_FRACTION = 0.3
# After the best candidate come the default leaves of its parent and of its category (the
# "unspecified" sibling the guideline prefers when the mention states less than the best
# hit's text), scored just under the best hit, so the top 5 is not five near-duplicate
# siblings that all make the same extra claim.
_SIBLING_FACTOR = 0.97

# A text inherited from an ancestor (a category's description linked to its default leaf)
# counts slightly less than the leaf's own text, per level, so an equally good own text wins.
_INHERITED_WEIGHT = 0.98
# A form made by dropping "without <complication>" counts a little less than an own or a
# one-level inherited text: where the category has an "unspecified" / "status unknown" leaf
# (its default), that leaf stays first for the bare mention.
_WITHOUT_WEIGHT = 0.97
# An alphabetic-index default indexed as a term: below the tabular list's own texts, so a
# mention that names a site ("brain tumor") prefers the site's code to the generic default.
_DEFAULT_TERM_WEIGHT = 0.8

# Words a clinician adds to a finding that name no concept of their own ("arthritic changes",
# "bleeding tendency", "repeated pneumonias"): rare in ICD-10-CM texts, so at full weight they
# would pull the mention to the few codes that happen to contain them ("Feeding difficulties").
# Matched after normalising (singular); their n-grams count this much in the query.
_WEAK_WORDS = frozenset(
    {
        "change",
        "difficulty",
        "tendency",
        "problem",
        "issue",
        "process",
        "finding",
        "repeated",
        "several",
        "significant",
    }
)
_WEAK_WORD_WEIGHT = 0.1

# Where the default of a mention's main term goes when the mention only contains it (0-based):
# third, after the best text match and its first unspecified sibling, so it is in every top 5
# without displacing a text match that names more of the mention.
_MAIN_TERM_POSITION = 2

_CACHE_LIMIT = 200_000

# Candidates kept per normalised mention in the cache (callers ask for k <= this).
_MAX_K = 10
# Mentions longer than this are cut before normalising: a disease mention is a few words, and
# an absurdly long span must not cost more than a normal one.
_MAX_MENTION_CHARS = 200

# Words that ICD-10-CM adds to say "no further detail", which a mention never writes.
_ICD_NOISE = re.compile(
    r",?\s*\b(unspecified (?:part|site|type) of|unspecified|not elsewhere classified|nec|nos"
    r"|not otherwise specified|site not specified)\b",
    re.IGNORECASE,
)
_ENCOUNTER = re.compile(r",\s*(initial|subsequent) encounter.*$|,\s*sequela$", re.IGNORECASE)
# "X without <complication>" is what a clinician writes as plain "X": the form without the
# clause is indexed too, so the bare mention matches the "without" leaf exactly.
_WITHOUT = re.compile(r"\s*\bwithout (?:foreign body\b|[^,(]*)|,\s*uncomplicated\b", re.IGNORECASE)
_BRACKETS = re.compile(r"\[[^\]]*\]")
_PARENTHESIS = re.compile(r"\s*\([^)]*\)")
_APOSTROPHE_S = re.compile(r"['\u2019]s\b")
_JOINED_HYPHEN = re.compile(r"(?<=[a-z])-(?=[a-z])")
_WORD = re.compile(r"[a-z0-9]+")
_TOKEN = re.compile(r"[A-Za-z0-9]+")


def _stem(word: str) -> str:
    # A crude plural rule applied to the index and to mentions alike, so it only has to be
    # consistent, not linguistically right ("diabetes" -> "diabete" on both sides).
    if len(word) <= 3 or word.isdigit():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("sses"):
        return word[:-2]
    if word.endswith("ae") and len(word) > 5:  # Latin plurals: "herniae", "vertebrae"
        return word[:-1]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _fold(text: str) -> str:
    if not text.isascii():
        text = "".join(
            c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)
        )
    return text


def _expand_abbreviations(text: str) -> str:
    out: list[str] = []
    position = 0
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        upper = token.upper()
        key = upper if upper in ABBREVIATIONS else None
        # "TIAs", "CVAs": the plural of an abbreviation
        if key is None and upper.endswith("S") and upper[:-1] in ABBREVIATIONS and len(upper) > 2:
            key = upper[:-1]
        if key is not None and (key not in UPPER_CASE_ONLY or token.isupper()):
            out.append(text[position : match.start()])
            out.append(ABBREVIATIONS[key])
            position = match.end()
    if not out:
        return text
    out.append(text[position:])
    return "".join(out)


def _words(text: str) -> list[str]:
    text = _fold(text).lower()
    text = _APOSTROPHE_S.sub("", text)
    text = _JOINED_HYPHEN.sub("", text)  # "gastro-esophageal" == "gastroesophageal"
    words = []
    for word in _WORD.findall(text):
        if word in STOP_WORDS:
            continue
        word = WORD_EQUIVALENTS.get(word, word)
        words.append(_stem(word))
    return words


def _apply_phrases(words: list[str]) -> list[str]:
    # One pass, longest phrase first at each position: a replacement is never rewritten again
    # ("carcinoma in situ" stays itself instead of becoming "carcinoma malignant neoplasm").
    joined = " " + " ".join(words) + " "
    if not _PHRASE_TRIGGERS.intersection(words):
        return words
    return _PHRASE_PATTERN.sub(lambda m: _PHRASE_MAP[m.group(0)], joined).split()


# Vertebral levels written as L4, T12, C5-C6, L5-S1 name the ICD-10-CM spinal region.
_SPINE_LEVEL = re.compile(
    r"\b(?:(?P<ls>[Ll]5\s*-\s*[Ss]1)|(?P<l>[Ll][1-5])|(?P<t>[Tt]1[0-2]|[Tt][1-9])"
    r"|(?P<c>[Cc][1-7])|(?P<s>[Ss][1-5]))(?:\s*-\s*[LlTtCcSs]?\d{1,2})?\b"
)
_REGION = {
    "ls": " lumbosacral region ",
    "l": " lumbar region vertebra ",
    "t": " thoracic region vertebra ",
    "c": " cervical region vertebra ",
    "s": " sacral region ",
}


def _spine_levels(text: str) -> str:
    if not _SPINE_LEVEL.search(text):
        return text
    return _SPINE_LEVEL.sub(lambda m: _REGION[m.lastgroup or "l"], text)


def normalise_term(text: str) -> str:
    """An ICD-10-CM text in the linker's canonical form (words sorted, see `normalise_mention`)."""
    return " ".join(sorted(_words(text)))


def normalise_mention(text: str) -> str:
    """A mention in canonical form: abbreviations expanded, folded, lower-case, no function
    words, crude singular, synonyms applied, words sorted (word order never matters)."""
    text = _spine_levels(_expand_abbreviations(text))
    words = _apply_phrases(_words(_ICD_NOISE.sub(" ", text)))
    return " ".join(sorted(words))


def _phrase_table() -> dict[str, str]:
    table: dict[str, str] = {}
    reversed_table: dict[str, str] = {}
    for phrase, replacement in PHRASE_SYNONYMS.items():
        words = _words(phrase)
        target = " " + " ".join(_words(replacement)) + " "
        table[" " + " ".join(words) + " "] = target
        # A two-word phrase is also written the other way round ("cholesterol elevated").
        if len(words) == 2:
            reversed_table[f" {words[1]} {words[0]} "] = target
    return {**reversed_table, **table}


_PHRASE_MAP = _phrase_table()
# Longest first, so "dm ii" is replaced before "type ii" could be. A match consumes its
# leading space only, so the next phrase can start at the trailing one.
_PHRASE_PATTERN = re.compile(
    "|".join(re.escape(p[:-1]) + "(?= )" for p in sorted(_PHRASE_MAP, key=lambda p: (-len(p), p)))
)
_PHRASE_MAP = {source[:-1]: target[:-1] for source, target in _PHRASE_MAP.items()}
_PHRASE_TRIGGERS = frozenset(source.split()[0] for source in _PHRASE_MAP)


def _ngrams(normalised: str) -> list[str]:
    """Character 3-grams of each word padded with spaces (scikit-learn's `char_wb`), plus the
    word itself: the whole word separates "mass" from "mastitis" once the 3-grams common to
    half the vocabulary (" ma", "ss ") are dropped for speed."""
    grams: list[str] = []
    for word in normalised.split():
        padded = f" {word} "
        grams.extend(padded[i : i + 3] for i in range(len(padded) - 2))
        grams.append(padded)
    return grams


def _icd_variants(text: str) -> dict[str, float]:
    """An ICD-10-CM text and the plainer forms a clinician would write, each with its weight
    (1, or _WITHOUT_WEIGHT for a form whose "without ..." clause was dropped)."""
    text = _ENCOUNTER.sub("", _BRACKETS.sub("", text))
    forms = {text, _PARENTHESIS.sub("", text)}
    # "Essential (primary) hypertension" -> also "primary hypertension"
    forms.add(_PARENTHESIS.sub(lambda m: " " + m.group(0).strip()[1:-1], text))
    weighted = dict.fromkeys(forms, 1.0)
    if _WITHOUT.search(text):
        for form in forms:
            weighted.setdefault(_WITHOUT.sub("", form), _WITHOUT_WEIGHT)
    cleaned: dict[str, float] = {}
    for form, weight in weighted.items():
        normalised = normalise_term(_ICD_NOISE.sub("", form))
        if normalised and cleaned.get(normalised, 0.0) < weight:
            cleaned[normalised] = weight
    return cleaned


# Chapter numbers as printed in the tabular list (1-22)
_ROMAN = tuple(
    [
        "I",
        "II",
        "III",
        "IV",
        "V",
        "VI",
        "VII",
        "VIII",
        "IX",
        "X",
        "XI",
        "XII",
        "XIII",
        "XIV",
        "XV",
        "XVI",
        "XVII",
        "XVIII",
        "XIX",
        "XX",
        "XXI",
        "XXII",
    ]
)


class Icd10CmLinker:
    """Ranked billable ICD-10-CM codes for mention strings (see the module docstring)."""

    def __init__(
        self,
        *,
        edition: str,
        codes: list[str],
        descriptions: list[str],
        chapters: list[tuple[str, str, str]],
        categories: list[str],
        ngrams: list[str],
        term_ngrams: sp.csr_matrix,
        term_codes: sp.csr_matrix,
        exact: dict[str, int],
        index_defaults: dict[str, str],
        siblings: np.ndarray,
        kinds: np.ndarray | None = None,
    ) -> None:
        self.edition = edition
        self._codes = codes
        self._descriptions = descriptions
        self._code_index = {code: i for i, code in enumerate(codes)}
        self._chapters = chapters
        self._categories = frozenset(categories)
        self._ngrams = ngrams
        self._vocabulary = {gram: i for i, gram in enumerate(ngrams)}
        # Stored as term x n-gram counts; kept as n-gram x term weights (an inverted index) so
        # the product with a few query n-grams reads only their postings.
        self._term_ngrams = term_ngrams
        self._term_codes = term_codes
        self._exact = exact
        # Keys are written as a clinician would; they are matched in normalised form.
        self._raw_index_defaults = {
            k: v for k, v in index_defaults.items() if v in self._code_index
        }
        self._index_defaults = {
            normalise_mention(k): v for k, v in index_defaults.items() if v in self._code_index
        }
        # The same defaults looked up as a mention's main term: by each key's first word.
        self._main_terms: dict[str, list[tuple[frozenset[str], int]]] = {}
        for key, code in sorted(self._index_defaults.items(), key=lambda kv: -len(kv[0])):
            words = key.split()
            if words:
                self._main_terms.setdefault(words[0], []).append(
                    (frozenset(words), self._code_index[code])
                )
        df = np.bincount(term_ngrams.indices, minlength=len(ngrams)).astype(np.float32)
        n_terms = term_ngrams.shape[0]
        self._idf = (np.log((1.0 + n_terms) / (1.0 + df)) + 1.0).astype(np.float32)
        weighted = term_ngrams.astype(np.float32)
        weighted.data *= self._idf[weighted.indices]
        norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        weighted = sp.csr_matrix(sp.diags(1.0 / norms).astype(np.float32) @ weighted)
        self._postings = weighted.T.tocsr()
        self._prior = np.array(
            [_prior(code, text) for code, text in zip(codes, descriptions, strict=True)],
            np.float32,
        )
        if kinds is None:
            kinds = np.array(
                [_kind(code, text) for code, text in zip(codes, descriptions, strict=True)],
                np.uint8,
            )
        self._kind = np.asarray(kinds, np.uint8)
        # Per code: the default leaf of its parent and of its category (-1: none other).
        self._siblings = np.asarray(siblings, np.int32).reshape(len(codes), 2)
        self._sibling_list: list[list[int]] = self._siblings.tolist()
        self._cache: dict[str, tuple[CodeCandidate, ...]] = {}
        self._normalised_cache: dict[str, tuple[CodeCandidate, ...]] = {}

    # -- building (needs simple_icd_10_cm) -----------------------------------------------

    @classmethod
    def build(cls, max_df: float = DEFAULT_MAX_DF) -> Icd10CmLinker:
        """Build from the pinned `simple_icd_10_cm` tabular list (training/packaging time)."""
        import warnings
        from importlib import metadata

        with warnings.catch_warnings():  # the package imports the deprecated pkg_resources
            warnings.simplefilter("ignore")
            import simple_icd_10_cm as cm

        version = metadata.version("simple_icd_10_cm")
        data_dir = Path(cm.__file__).parent / "data"
        tabular = sorted(p.name for p in data_dir.glob("*tabular*.xml"))
        edition = f"ICD-10-CM {tabular[0] if tabular else '?'} (simple_icd_10_cm {version})"

        all_codes = cm.get_all_codes(True)
        chapters: list[tuple[str, str, str]] = []
        chapter_of: dict[str, str] = {}
        current_chapter = ""
        for code in all_codes:
            if cm.is_chapter(code):
                current_chapter = code
                description = cm.get_description(code)
                match = re.search(r"\(([A-Z0-9]{3})-([A-Z0-9]{3})\)\s*$", description)
                if match:
                    label = f"{_ROMAN[int(code) - 1]} {description}"
                    chapters.append((match.group(1), match.group(2), label))
            else:
                chapter_of[code] = current_chapter
        categories = [c for c in all_codes if cm.is_category(c)]

        def seventh_extension(code: str) -> bool:
            return len(code.replace(".", "")) == 7 and bool(
                cm.get_seven_chr_def(code, search_in_ancestors=True)
            )

        def default_child(children: list[str]) -> str:
            if all(seventh_extension(c) for c in children):
                for suffix in ("A", "0"):
                    for child in children:
                        if child.endswith(suffix):
                            return child
                return children[0]

            def preference(item: tuple[int, str]) -> tuple[float, int]:
                position, child = item
                text = cm.get_description(child).lower()
                score = 2.0 * text.count("unspecified")
                if text.startswith("other"):
                    score -= 3
                if " without " in f" {text} ":
                    score += 1
                elif re.search(r"\bwith\b", text):
                    score -= 1.5
                score += {"9": 1.0, "0": 0.5}.get(child[-1], 0.0)
                return score, -position

            return max(enumerate(children), key=preference)[1]

        def default_leaf(code: str) -> tuple[str, int]:
            depth = 0
            while not cm.is_leaf(code):
                children = cm.get_children(code)
                if not all(seventh_extension(c) for c in children):
                    depth += 1
                code = default_child(children)
            return code, depth

        links: dict[tuple[str, str], float] = {}
        targets: dict[str, None] = {}
        for code in all_codes:
            # A block holding a single category has the category's code (B20): keep it.
            if cm.is_chapter(code) or (cm.is_block(code) and not cm.is_category(code)):
                continue
            if chapter_of.get(code) in _EXCLUDED_CHAPTERS and not code.startswith(_KEPT_CATEGORIES):
                continue
            if cm.is_leaf(code) and seventh_extension(code):
                continue  # its text is its parent's plus the encounter; the parent links here
            target, depth = default_leaf(code)
            weight = _INHERITED_WEIGHT**depth
            targets[target] = None
            texts = [cm.get_description(code), *cm.get_inclusion_term(code)]
            texts += cm.get_includes(code)
            for text in texts:
                for term, factor in _icd_variants(text).items():
                    key = (term, target)
                    if links.get(key, 0.0) < weight * factor:
                        links[key] = weight * factor

        # The curated index entries are written as a clinician would: normalised as mentions.
        for table, weight in ((INDEX_DEFAULTS, _DEFAULT_TERM_WEIGHT), (INDEX_TERMS, 1.0)):
            for text, target in table.items():
                if target in targets:
                    key = (normalise_mention(text), target)
                    links[key] = max(links.get(key, 0.0), weight)

        codes = sorted(targets)
        descriptions = [cm.get_description(code) for code in codes]
        code_index = {code: i for i, code in enumerate(codes)}

        def sibling_defaults(code: str) -> tuple[int, int]:
            # The default leaf of the nearest ancestor that is not the code itself (its
            # "unspecified" sibling), and of its 3-character category; -1 when none differs.
            parent = own = -1
            ancestor = code
            while True:
                ancestor = cm.get_parent(ancestor)
                if not ancestor or not (cm.is_subcategory(ancestor) or cm.is_category(ancestor)):
                    break
                found = code_index.get(default_leaf(ancestor)[0], -1)
                if found != code_index[code]:
                    if parent < 0:
                        parent = found
                    if cm.is_category(ancestor):
                        own = found
                if cm.is_category(ancestor):
                    break
            return parent, own if own != parent else -1

        siblings = np.array([sibling_defaults(code) for code in codes], np.int32).reshape(-1, 2)
        terms = sorted({term for term, _ in links})
        term_index = {term: i for i, term in enumerate(terms)}

        rows, cols, weights = [], [], []
        for (term, target), weight in links.items():
            rows.append(term_index[term])
            cols.append(code_index[target])
            weights.append(weight)
        term_codes = sp.csr_matrix(
            (np.array(weights, np.float32), (rows, cols)), shape=(len(terms), len(codes))
        )
        term_codes.sort_indices()

        term_ngrams, ngrams = _count_matrix(terms, max_df)
        exact = {term: i for i, term in enumerate(terms)}
        return cls(
            edition=edition,
            codes=codes,
            descriptions=descriptions,
            chapters=chapters,
            categories=categories,
            ngrams=ngrams,
            term_ngrams=term_ngrams,
            term_codes=term_codes,
            exact=exact,
            index_defaults=INDEX_DEFAULTS,
            siblings=siblings,
        )

    # -- persistence (JSON + npz, no pickle) ---------------------------------------------

    def save(self, directory: Path) -> None:
        """Write the linker to `directory` as gzipped JSON plus an .npz of integer arrays."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        terms = [""] * len(self._exact)
        for term, i in self._exact.items():
            terms[i] = term
        meta = {
            "format": FORMAT_VERSION,
            "edition": self.edition,
            "codes": self._codes,
            "descriptions": self._descriptions,
            "chapters": self._chapters,
            "categories": sorted(self._categories),
            "ngrams": self._ngrams,
            "terms": terms,
            "index_defaults": self._raw_index_defaults,
        }
        with gzip.open(directory / _META_FILE, "wt", encoding="utf-8", compresslevel=6) as f:
            json.dump(meta, f, ensure_ascii=False, separators=(",", ":"))
        tn = self._term_ngrams
        tc = self._term_codes
        # Counts fit in a byte and the n-gram vocabulary in 16 bits, which keeps the file small.
        ngram_dtype = np.uint16 if len(self._ngrams) < 2**16 else np.int32
        np.savez_compressed(
            directory / _INDEX_FILE,
            tn_indptr=tn.indptr.astype(np.int32),
            tn_indices=tn.indices.astype(ngram_dtype),
            tn_counts=np.minimum(tn.data, 255).astype(np.uint8),
            tc_indptr=tc.indptr.astype(np.int32),
            tc_indices=tc.indices.astype(np.int32),
            tc_weights=tc.data.astype(np.float32),
            siblings=self._siblings.astype(np.int32),
            kinds=self._kind,
        )

    @classmethod
    def load(cls, directory: Path) -> Icd10CmLinker:
        """Load a saved linker; needs only numpy and scipy."""
        directory = Path(directory)
        with gzip.open(directory / _META_FILE, "rt", encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("format") != FORMAT_VERSION:
            raise VocabularyFormatError(
                f"unsupported ICD-10-CM linker format {meta.get('format')!r}"
            )
        with np.load(directory / _INDEX_FILE, allow_pickle=False) as arrays:
            terms = meta["terms"]
            codes = meta["codes"]
            term_ngrams = sp.csr_matrix(
                (
                    arrays["tn_counts"].astype(np.float32),
                    arrays["tn_indices"].astype(np.int32),
                    arrays["tn_indptr"],
                ),
                shape=(len(terms), len(meta["ngrams"])),
            )
            term_codes = sp.csr_matrix(
                (arrays["tc_weights"], arrays["tc_indices"], arrays["tc_indptr"]),
                shape=(len(terms), len(codes)),
            )
            siblings, kinds = arrays["siblings"], arrays["kinds"]
        return cls(
            edition=meta["edition"],
            codes=codes,
            descriptions=meta["descriptions"],
            chapters=[tuple(c) for c in meta["chapters"]],
            categories=meta["categories"],
            ngrams=meta["ngrams"],
            term_ngrams=term_ngrams,
            term_codes=term_codes,
            exact={term: i for i, term in enumerate(terms)},
            index_defaults=meta["index_defaults"],
            siblings=siblings,
            kinds=kinds,
        )

    # -- lookup --------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Number of billable codes the linker can return."""
        return len(self._codes)

    def description(self, code: str) -> str | None:
        """The tabular-list description of a code the linker can return."""
        index = self._code_index.get(code)
        return None if index is None else self._descriptions[index]

    def chapter(self, code: str) -> str | None:
        """The ICD-10-CM chapter label of a code, e.g. "IX Diseases of the circulatory system
        (I00-I99)"; None when the code's category is not in the tabular list."""
        category = code.strip().upper()[:3]
        if category not in self._categories:
            return None
        for start, end, label in self._chapters:
            if start <= category <= end:
                return label
        return None

    def link(self, mentions: Sequence[str], k: int = 5) -> list[tuple[CodeCandidate, ...]]:
        """Up to k candidates per mention, best first (one tuple per mention, in order)."""
        results: list[tuple[CodeCandidate, ...] | None] = [None] * len(mentions)
        pending: dict[str, list[int]] = {}
        for i, mention in enumerate(mentions):
            cached = self._cache.get(mention)
            if cached is not None:
                results[i] = cached[:k]
                continue
            key = normalise_mention(mention[:_MAX_MENTION_CHARS])
            cached = self._normalised_cache.get(key)
            if cached is not None:
                self._remember(self._cache, mention, cached)
                results[i] = cached[:k]
            else:
                pending.setdefault(key, []).append(i)
        if pending:
            keys = list(pending)
            for key, found in zip(keys, self._rank(keys), strict=True):
                self._remember(self._normalised_cache, key, found)
                for i in pending[key]:
                    self._remember(self._cache, mentions[i], found)
                    results[i] = found[:k]
        return [r if r is not None else () for r in results]

    def _add_siblings(self, found: list[tuple[int, float]]) -> None:
        """Put the best code's parent and category default leaves right after it (in place)."""
        top, top_score = found[0]
        score = top_score * _SIBLING_FACTOR
        changed = False
        for extra in self._sibling_list[top]:
            if extra < 0:
                continue
            for position, (code, existing) in enumerate(found):
                if code == extra:
                    if existing >= score:
                        break
                    del found[position]
                    found.append((extra, score))
                    changed = True
                    break
            else:
                found.append((extra, score))
                changed = True
        if changed:
            found.sort(key=lambda item: -item[1])  # stable: ties keep their order
            del found[_MAX_K:]

    def _main_term(self, key: str) -> int | None:
        """The index default of the longest main term the mention contains but is not."""
        key = _core(key)
        if key in self._index_defaults:
            return None  # an exact main term is already first
        words = set(key.split())
        best: tuple[int, int] | None = None
        for word in words:
            for term, code in self._main_terms.get(word, ()):
                if term <= words and (best is None or len(term) > best[0]):
                    best = (len(term), code)
                    break  # longest first
        return None if best is None else best[1]

    def _add_main_term(self, found: list[tuple[int, float]], key: str) -> None:
        """Put the default of the mention's main term into its top k (in place), as a coder
        falls back on the main term's default when no subterm fits ("repeated pneumonias")."""
        code = self._main_term(key)
        if code is None or any(c == code for c, _ in found[: _MAIN_TERM_POSITION + 1]):
            return
        for position, (c, _) in enumerate(found):
            if c == code:
                del found[position]
                break
        position = min(_MAIN_TERM_POSITION, len(found))
        score = found[position - 1][1] if position else 1.0
        found.insert(position, (code, score))
        del found[_MAX_K:]

    @staticmethod
    def _remember(
        cache: dict[str, tuple[CodeCandidate, ...]], key: str, value: tuple[CodeCandidate, ...]
    ) -> None:
        # A bounded cache: clinical mentions repeat heavily; an unbounded one would grow with
        # every typo in a long-running server.
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[key] = value

    def _rank(self, keys: list[str]) -> list[tuple[CodeCandidate, ...]]:
        """Candidates (up to _MAX_K) for normalised mentions: one sparse product for the batch
        and vectorised selection, so the per-mention Python work is a few dictionary reads."""
        indptr = [0]
        cols: list[int] = []
        vals: list[float] = []
        vocabulary = self._vocabulary
        for key in keys:
            counts: dict[int, float] = {}
            for word in key.split():
                weight = _WEAK_WORD_WEIGHT if word in _WEAK_WORDS else 1.0
                for gram in _ngrams(word):
                    col = vocabulary.get(gram)
                    if col is not None:
                        counts[col] = counts.get(col, 0.0) + weight
            cols.extend(counts)
            vals.extend(counts.values())
            indptr.append(len(cols))
        col_array = np.array(cols, np.int32)
        data = np.array(vals, np.float32) * self._idf[col_array]
        row_of = np.repeat(np.arange(len(keys)), np.diff(indptr))
        norms = np.sqrt(np.bincount(row_of, weights=data * data, minlength=len(keys)))
        norms[norms == 0] = 1.0
        data /= norms[row_of].astype(np.float32)
        query = sp.csr_matrix(
            (data, col_array, np.array(indptr, np.int32)), shape=(len(keys), len(self._ngrams))
        )
        sims = query @ self._postings
        sim_rows = np.repeat(np.arange(len(keys)), np.diff(sims.indptr))
        sim_data = sims.data
        if sim_data.size:
            # Keep the terms near each row's best: the top k codes always come from them.
            row_max = np.zeros(len(keys), np.float32)
            nonempty = np.diff(sims.indptr) > 0  # rows are contiguous in the CSR product
            row_max[nonempty] = np.maximum.reduceat(sim_data, sims.indptr[:-1][nonempty])
            best = row_max[sim_rows]
            keep = sim_data >= best * _KEEP_FRACTION
            # A mention with few near-best terms reaches further down, to fill its top k.
            sparse_rows = np.bincount(sim_rows[keep], minlength=len(keys)) < _FILL_TERMS
            keep |= sparse_rows[sim_rows] & (sim_data >= best * _FILL_FRACTION)
            sim_rows, sim_terms, sim_data = sim_rows[keep], sims.indices[keep], sim_data[keep]
        else:
            sim_terms = sims.indices
        # Each kept term links to one or more codes, with the link's weight.
        tc = self._term_codes
        starts, ends = tc.indptr[sim_terms], tc.indptr[sim_terms + 1]
        lengths = ends - starts
        link = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        link_rows = np.repeat(sim_rows, lengths)
        link_terms = np.repeat(sim_terms, lengths)
        link_codes = tc.indices[link]
        base = tc.data[link] * self._prior[link_codes]
        # The weight of the code's kind given what the mention says (see _weight_table).
        signatures = np.array([_signature(key) for key in keys], np.int64)
        kind_weight = _WEIGHTS[signatures[link_rows], self._kind[link_codes]]
        link_scores = np.repeat(sim_data, lengths) * base * kind_weight
        # An exact text match scores 1 (before the prior), whatever float rounding says, and
        # needs no support from the mention's words: it names the code.
        exact = np.array([self._exact.get(key, -1) for key in keys], np.int64)
        is_exact = link_terms == exact[link_rows]
        link_scores[is_exact] = base[is_exact]
        order = np.lexsort((link_codes, -np.round(link_scores, 4), link_rows))
        ranked_rows, ranked_codes = link_rows[order], link_codes[order]
        ranked_scores = link_scores[order]
        # Each (mention, code) pair once, at its best score (its first place in the order),
        # then the first _MAX_K + 1 per mention (one more, for a forced index default).
        pair = ranked_rows.astype(np.int64) * len(self._codes) + ranked_codes
        first = np.sort(np.unique(pair, return_index=True)[1])
        ranked_rows, ranked_codes = ranked_rows[first], ranked_codes[first]
        ranked_scores = ranked_scores[first]
        row_start = np.searchsorted(ranked_rows, np.arange(len(keys)))
        rank = np.arange(len(ranked_rows)) - row_start[ranked_rows]
        top = (rank <= _MAX_K) & (ranked_scores > 0.0)

        out: list[list[tuple[int, float]]] = [[] for _ in keys]
        for row, key in enumerate(keys):
            default = self._index_defaults.get(_core(key))
            if default is not None:
                out[row].append((self._code_index[default], 1.0))
        for row, code, score in zip(
            ranked_rows[top].tolist(),
            ranked_codes[top].tolist(),
            ranked_scores[top].tolist(),
            strict=True,
        ):
            found = out[row]
            if len(found) < _MAX_K and not (found and found[0][0] == code):
                found.append((code, score))
        for found, key in zip(out, keys, strict=True):
            if found:
                self._add_siblings(found)
                self._add_main_term(found, key)
        codes, descriptions = self._codes, self._descriptions
        return [
            tuple(
                CodeCandidate(codes[code], descriptions[code], round(min(1.0, score), 4))
                for code, score in found
            )
            for found in out
        ]


def _core(key: str) -> str:
    """A normalised mention without its weak words ("pneumonia repeated" -> "pneumonia")."""
    words = key.split()
    if _WEAK_WORDS.isdisjoint(words):
        return key
    return " ".join(w for w in words if w not in _WEAK_WORDS) or key


def _prior(code: str, description: str) -> float:
    """A code's weight on equal text similarity (see _OTHER_PRIOR)."""
    return _OTHER_PRIOR if description.startswith("Other ") else 1.0


# Kinds of code whose weight depends on what the mention says (bit flags, see _rank).
_KIND_CONTEXT = 1  # pregnancy, perinatal, congenital (chapters 15-17)
_KIND_SIDE = 2  # names a side
_KIND_NEOPLASM = 4  # C00-D49
_KIND_INJURY = 8  # S00-T88: injuries, burns, poisonings, toxic effects, complications of care
_KIND_SECONDARY = 16  # C77-C79: secondary (metastatic) malignant neoplasms
# A mention's words that make a kind of code plausible (matched on the normalised mention).
# (A mass, nodule, cyst or polyp is not one: the guideline codes it as the finding.)
_NEOPLASM_WORDS = re.compile(
    r"malignan|neoplasm|cancer|carcinom|tumor|oma\b|leukemia|metasta|situ|polycythemia"
    r"|myelodysplastic|myeloproliferative|gammopathy|thrombocythemia|histiocytosis"
    r"|mastocytosis|papilloma|nev(us|i)\b"
)
_SECONDARY_WORDS = re.compile(r"secondary|metasta")
_MALIGNANT_WORDS = re.compile(
    r"malignan|neoplasm|cancer|carcinom|leukemia|lymphoma|sarcoma|melanoma|myeloma|blastoma"
    r"|metasta|glioma|mesothelioma|seminoma|tumor"
)
_INJURY_WORDS = re.compile(
    r"fractur|injur|lacerat|contusion|abrasion|sprain|strain|wound|trauma|burn|dislocat|bite"
    r"|tear\b|crush|avulsion|puncture|foreign|concussion|amputat|hematoma|bruise|blister"
    r"|subluxation|whiplash|frostbite|\bcut\b|gunshot|\bstab|corrosion|sting|ruptur"
    # T36-T88: poisoning, toxic and adverse effects, allergy, complications of care
    r"|poison|toxic|overdose|adverse|reaction|allerg|anaphyla|complicat|rejection|malfunction"
    r"|postprocedural|postoperative|heat|hypotherm|drown|asphyx|exposure|abuse|maltreat"
)
# Weights of a code whose kind the mention does not support; an exact text match is exempt.
# A neoplasm code for a mention without a neoplasm word; any other code for a mention with a
# malignant word ("malignant neoplasm" is too common a text to weigh much in TF-IDF, so the
# site word alone would otherwise pick "Other disorders of lung" for "lung cancer").
_NEOPLASM_PRIOR = 0.9
_NON_NEOPLASM_PRIOR = 0.75
# Over half the billable codes are S/T codes with 7th characters: "difficulty chewing" must not
# become a toxic effect of chewing tobacco.
_INJURY_PRIOR = 0.75
_SECONDARY_PRIOR = 0.75  # "lung cancer" is the primary site unless the mention says otherwise


def _kind(code: str, description: str) -> int:
    kind = 0
    if code[0] in _CONTEXT_CHAPTER_LETTERS:
        kind |= _KIND_CONTEXT
    if _SIDE_WORDS.search(description.lower()):
        kind |= _KIND_SIDE
    if code[0] == "C" or (code[0] == "D" and code[1:3] < "50"):
        kind |= _KIND_NEOPLASM
    if code[0] in "ST":
        kind |= _KIND_INJURY
    if code[0] == "C" and "77" <= code[1:3] <= "79":
        kind |= _KIND_SECONDARY
    return kind


def _weight_table() -> np.ndarray:
    """Weight of each kind of code (columns) for each signature of a mention (rows): bit 0
    context word, 1 side word, 2 malignant word, 3 neoplasm word, 4 injury word, 5 secondary
    word."""
    kinds = np.arange(32)
    table = np.ones((64, 32), np.float32)
    for signature in range(64):
        w = table[signature]
        if not signature & 1:
            w[(kinds & _KIND_CONTEXT) > 0] *= _CONTEXT_PRIOR
        if not signature & 2:
            w[(kinds & _KIND_SIDE) > 0] *= _SIDE_PRIOR
        if signature & 4:
            w[(kinds & _KIND_NEOPLASM) == 0] *= _NON_NEOPLASM_PRIOR
        elif not signature & 8:
            w[(kinds & _KIND_NEOPLASM) > 0] *= _NEOPLASM_PRIOR
        if not signature & 16:
            w[(kinds & _KIND_INJURY) > 0] *= _INJURY_PRIOR
        if not signature & 32:
            w[(kinds & _KIND_SECONDARY) > 0] *= _SECONDARY_PRIOR
    return table


_WEIGHTS = _weight_table()


def _signature(key: str) -> int:
    """Which kinds of code a normalised mention supports (the row of _WEIGHTS)."""
    return (
        (1 if _CONTEXT_WORDS.search(key) else 0)
        | (2 if _SIDE_WORDS.search(key) else 0)
        | (4 if _MALIGNANT_WORDS.search(key) else 0)
        | (8 if _NEOPLASM_WORDS.search(key) else 0)
        | (16 if _INJURY_WORDS.search(key) else 0)
        | (32 if _SECONDARY_WORDS.search(key) else 0)
    )


def _count_matrix(terms: Sequence[str], max_df: float) -> tuple[sp.csr_matrix, list[str]]:
    """Term x n-gram count matrix over the n-grams in at most max_df of the terms."""
    grams_per_term = [_ngrams(term) for term in terms]
    df: dict[str, int] = {}
    for grams in grams_per_term:
        for gram in set(grams):
            df[gram] = df.get(gram, 0) + 1
    limit = max(1, math.floor(max_df * len(terms)))
    # Whole words are always kept: a frequent word ("chronic", "left", "heart") is exactly what
    # tells two texts apart once its 3-grams are gone, and words are few per text.
    ngrams = sorted(g for g, n in df.items() if n <= limit or len(g) > 3)
    vocabulary = {gram: i for i, gram in enumerate(ngrams)}
    indptr = [0]
    indices: list[int] = []
    data: list[int] = []
    for grams in grams_per_term:
        counts: dict[int, int] = {}
        for gram in grams:
            col = vocabulary.get(gram)
            if col is not None:
                counts[col] = counts.get(col, 0) + 1
        for col in sorted(counts):
            indices.append(col)
            data.append(counts[col])
        indptr.append(len(indices))
    matrix = sp.csr_matrix(
        (np.array(data, np.float32), np.array(indices, np.int32), np.array(indptr, np.int32)),
        shape=(len(terms), len(ngrams)),
    )
    return matrix, ngrams
