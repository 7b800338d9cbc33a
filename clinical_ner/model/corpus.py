"""In-memory form of annotated text shared by every reader, trainer and evaluator."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True, order=True)
class Entity:
    """A labelled character span `text[start:end]`."""

    start: int
    end: int
    label: str


@dataclass(frozen=True)
class Token:
    """A token of the source corpus, with its character offsets in `AnnotatedDoc.text`."""

    text: str
    start: int
    end: int


@dataclass(frozen=True)
class AnnotatedDoc:
    """One annotated unit (a sentence for token corpora, a record for JSONL).

    `source` names the file and first line (``path:line``) so errors and reports can point
    at it without quoting the text.
    """

    text: str
    tokens: tuple[Token, ...]
    entities: tuple[Entity, ...]
    source: str = ""
    split: str = ""  # a JSONL record's own "split" ("train", "dev", "test"), else empty

    @property
    def words(self) -> list[str]:
        return [t.text for t in self.tokens]

    def entity_texts(self) -> list[tuple[str, str]]:
        return [(self.text[e.start : e.end], e.label) for e in self.entities]


@dataclass
class ReadReport:
    """What a reader did to the data beyond parsing it: every repair and drop is counted."""

    files: list[str] = field(default_factory=list)
    docs_read: int = 0
    docs_kept: int = 0
    duplicates_found: int = 0
    duplicates_dropped: int = 0
    conflicting_duplicates: int = 0
    empty_dropped: int = 0
    review_markers_stripped: int = 0
    mojibake_tokens_repaired: int = 0
    orphan_inside_tags: int = 0
    entities: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["entities"] = dict(sorted(self.entities.items()))
        return data
