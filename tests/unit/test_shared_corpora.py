"""Read the real corpora in ../shared/data and check the counts documented in each SOURCE.md.

These files are read in place and never copied into the repository. The tests are skipped
when the directory is absent (e.g. in CI); run only them with ``pytest -m shared_data``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from clinical_ner.model.corpus import AnnotatedDoc, ReadReport
from clinical_ner.model.readers import AnnotationFormat, read_annotations

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(
        not SHARED.is_dir(), reason=f"shared corpora not available: {SHARED} does not exist"
    ),
]


@dataclass(frozen=True)
class Expected:
    """Numbers from the corpus's SOURCE.md (the file as distributed, duplicates included)."""

    path: str
    fmt: AnnotationFormat
    sha256: str
    sentences: int
    tokens: int  # tokens read, i.e. after stripping review markers
    entities: dict[str, int]
    entity_tokens: dict[str, int]  # B- + I- tags (IOB) or D/T tokens (IO)
    duplicates: int  # sentences repeating an earlier one in the same file
    review_markers: int = 0
    conflicting: int = 0  # duplicates labelled differently (not in SOURCE.md; see below)


CORPORA = {
    "bc5cdr-train": Expected(
        "BC5CDR-IOB/train.tsv",
        AnnotationFormat.IOB,
        "b731361c0ed73afd04cc5fdad39afcdfd8f325d6e46c282339185a91d1af4c14",
        sentences=4560,
        tokens=118170,
        entities={"CHEMICAL": 5203, "DISEASE": 4182},
        entity_tokens={"CHEMICAL": 5203 + 1900, "DISEASE": 4182 + 2918},
        duplicates=7,
    ),
    "bc5cdr-devel": Expected(
        "BC5CDR-IOB/devel.tsv",
        AnnotationFormat.IOB,
        "b909de65c4f7e3c23bb09ad52d654cdc92e96db941abe1a5dcf6f6010c03cff5",
        sentences=4581,
        tokens=117453,
        entities={"CHEMICAL": 5347, "DISEASE": 4246},
        entity_tokens={"CHEMICAL": 5347 + 1748, "DISEASE": 4246 + 2723},
        duplicates=12,
    ),
    "ncbi-train": Expected(
        "NCBI-disease-IOB/train.tsv",
        AnnotationFormat.IOB,
        "58379baf4614b8d757d93dd7a21b202849ca99f9b9d71b49185523ff5443300c",
        sentences=5424,
        tokens=135701,
        entities={"DISEASE": 5134},
        entity_tokens={"DISEASE": 5134 + 6115},
        duplicates=24,
        # One duplicated sentence (lines 4435 and 47212) tags "fever" inside "Familial
        # Mediterranean fever" as a second Disease in one copy only.
        conflicting=1,
    ),
    "ncbi-devel": Expected(
        "NCBI-disease-IOB/devel.tsv",
        AnnotationFormat.IOB,
        "b4e1e7efcc2a35047bf2f3d281648357470e674f555d4a26a0049ac37d59cc61",
        sentences=923,
        tokens=23969,
        entities={"DISEASE": 787},
        entity_tokens={"DISEASE": 787 + 1090},
        duplicates=0,
    ),
    "biotext-train": Expected(
        "biotext-disease-treatment/train_sent",
        AnnotationFormat.SENT_LABEL,
        "a97827ab2d6f1d4de3fce99962873ebe6f1d32d99acdeab1df127d1470c36e2c",
        sentences=2599,
        tokens=45902 - 55 * 3,  # 55 "<", "TO_SEE", ">" markers stripped
        entities={"DISEASE": 1383, "TREATMENT": 1023},
        entity_tokens={"DISEASE": 3439, "TREATMENT": 2780},
        duplicates=60,
        review_markers=55,
    ),
}


@pytest.fixture(scope="module")
def corpus(request: pytest.FixtureRequest) -> tuple[Expected, list[AnnotatedDoc], ReadReport]:
    expected = CORPORA[request.param]
    path = SHARED / expected.path
    if not path.is_file():
        pytest.skip(f"{path} not found")
    docs, report = read_annotations([path], deduplicate=False)
    return expected, docs, report


def entity_token_counts(docs: list[AnnotatedDoc]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for doc in docs:
        for entity in doc.entities:
            counts[entity.label] += sum(
                1 for t in doc.tokens if entity.start <= t.start and t.end <= entity.end
            )
    return counts


@pytest.mark.parametrize("corpus", sorted(CORPORA), indirect=True)
def test_documented_counts(corpus: tuple[Expected, list[AnnotatedDoc], ReadReport]) -> None:
    expected, docs, report = corpus
    path = SHARED / expected.path
    assert hashlib.sha256(path.read_bytes()).hexdigest() == expected.sha256, (
        f"{path} is not the version SOURCE.md describes"
    )
    assert report.files == [f"{path} ({expected.fmt.value})"]  # auto-detected
    assert report.docs_read == expected.sentences
    assert len(docs) == report.docs_kept == expected.sentences
    assert sum(len(d.tokens) for d in docs) == expected.tokens
    assert report.entities == expected.entities
    assert dict(entity_token_counts(docs)) == expected.entity_tokens
    assert report.duplicates_found == expected.duplicates
    assert report.duplicates_dropped == 0
    assert report.conflicting_duplicates == expected.conflicting
    assert report.review_markers_stripped == expected.review_markers
    assert report.orphan_inside_tags == 0  # "no I- tags without a B-" / IO has none
    assert report.empty_dropped == 0


@pytest.mark.parametrize("corpus", sorted(CORPORA), indirect=True)
def test_every_entity_slices_cleanly(
    corpus: tuple[Expected, list[AnnotatedDoc], ReadReport],
) -> None:
    _, docs, _ = corpus
    for doc in docs:
        assert doc.text == " ".join(doc.words)
        for token in doc.tokens:
            assert doc.text[token.start : token.end] == token.text
        starts = {t.start for t in doc.tokens}
        ends = {t.end for t in doc.tokens}
        previous_end = -1
        for entity in doc.entities:
            span = doc.text[entity.start : entity.end]
            assert span, doc.source
            assert span == span.strip(), doc.source
            assert entity.start in starts and entity.end in ends, doc.source
            assert entity.start > previous_end, doc.source  # sorted, not overlapping
            previous_end = entity.end
        assert doc.words[:3] != ["<", "TO_SEE", ">"], doc.source


def test_biotext_dirt() -> None:
    path = SHARED / "biotext-disease-treatment" / "train_sent"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    docs, report = read_annotations([path])
    assert report.docs_read == 2599
    assert report.review_markers_stripped == 55
    assert report.duplicates_found == 60
    assert report.duplicates_dropped == 60
    assert report.conflicting_duplicates == 0  # "all labelled the same way"
    assert report.docs_kept == len(docs) == 2539  # "2539 distinct of 2599"
    # SOURCE.md: 15 train tokens are affected by mojibake. 8 are repaired; in the other 7 a
    # "©" became the tokens "( c )" and only a lone "Ã" is left, which cannot be repaired.
    assert report.mojibake_tokens_repaired == 8
    words = {w for d in docs for w in d.words}
    assert {"antimüllerian", "Müllerian", "Henoch-Schönlein", "Française", "mystère"} <= words
    assert sum(w.endswith("Ã") for d in docs for w in d.words) == 7
    assert report.entities == {"DISEASE": 1379, "TREATMENT": 1018}  # after dropping 60 dups


def test_cross_split_duplicates() -> None:
    # SOURCE.md: train∩devel share 7 (BC5CDR) and 5 (NCBI) sentences, on top of the
    # within-split duplicates (7 + 12 and 24 + 0).
    for name, within, across in [("BC5CDR-IOB", 7 + 12, 7), ("NCBI-disease-IOB", 24 + 0, 5)]:
        paths = [SHARED / name / "train.tsv", SHARED / name / "devel.tsv"]
        if not all(p.is_file() for p in paths):
            pytest.skip(f"{name} train/devel not found")
        docs, report = read_annotations(paths, deduplicate=False)
        assert report.duplicates_found == within + across, name
        assert len({d.text for d in docs}) == len(docs) - within - across, name
