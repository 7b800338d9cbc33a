"""Where the review loop reads note text and writes its data: a local lake folder or S3.

Both stores speak object keys of `clinical_ner.pipeline.stage_config.LAKE`, so the same code
writes ``reviews/dt=.../part-<review_id>.parquet`` and ``raw/annotations/reviewed/<sha>.jsonl``
into a local run's lake mirror or the lake bucket. Note text is read from the curated notes
(`CuratedTexts`, by the task's ``text_ref``), never copied into the queue.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from clinical_ner.data.review import REVIEW_FILE_SCHEMA
from clinical_ner.data.schemas import PARTITION_COLUMN
from clinical_ner.pipeline.stage_config import LAKE, LakeLayout


class ObjectStore(Protocol):
    """Bytes by lake key."""

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def keys(self, prefix: str) -> Iterator[str]: ...


class LocalStore:
    """A directory laid out like the lake (e.g. a local run's ``work/lake`` mirror)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        parts = Path(key).parts
        if not key or key.startswith("/") or ".." in parts:
            raise ValueError("a lake key must be relative, without '..'")
        return self.root.joinpath(*parts)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)  # readers never see half a file

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def keys(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix.rstrip("/") or ".")
        if not base.is_dir():
            return
        for p in sorted(base.rglob("*")):
            if p.is_file() and not p.name.startswith((".", "_")):
                yield p.relative_to(self.root).as_posix()


class S3Store:
    """The lake bucket through a boto3 S3 client (SSE-KMS is the bucket's default)."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def keys(self, prefix: str) -> Iterator[str]:
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            for obj in page.get("Contents", []):
                name = obj["Key"].rsplit("/", 1)[-1]
                if name and not name.startswith((".", "_")):
                    yield obj["Key"]


class NoteTexts(Protocol):
    """Looks a note's text up by the task's ids and ``text_ref``; None when it is gone."""

    def get(self, note_id: str, note_sha256: str, text_ref: Mapping[str, str]) -> str | None: ...


class MemoryTexts:
    """Texts held in memory by note_sha256 (local review of `clinical-ner extract` output)."""

    def __init__(self, by_sha: Mapping[str, str]) -> None:
        self.by_sha = dict(by_sha)

    def get(self, note_id: str, note_sha256: str, text_ref: Mapping[str, str]) -> str | None:
        return self.by_sha.get(note_sha256)


class CuratedTexts:
    """Texts from ``curated/notes/dt=<text_ref["curated_dt"]>/`` Parquet (a small LRU)."""

    def __init__(self, store: ObjectStore, layout: LakeLayout = LAKE, cache: int = 8) -> None:
        self.store = store
        self.layout = layout
        self.cache: OrderedDict[str, dict[str, tuple[str, str]]] = OrderedDict()
        self.cache_size = cache

    def _partition(self, dt: str) -> dict[str, tuple[str, str]]:
        if dt in self.cache:
            self.cache.move_to_end(dt)
            return self.cache[dt]
        found: dict[str, tuple[str, str]] = {}
        prefix = f"{self.layout.curated_notes}{PARTITION_COLUMN}={dt}/"
        for key in self.store.keys(prefix):
            if key.endswith(".parquet"):
                table = pq.read_table(io.BytesIO(self.store.get(key)), columns=_TEXT_COLUMNS)
                for row in table.to_pylist():
                    found[row["note_id"]] = (row["note_sha256"], row["text"])
        self.cache[dt] = found
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return found

    def get(self, note_id: str, note_sha256: str, text_ref: Mapping[str, str]) -> str | None:
        dt = text_ref.get("curated_dt")
        if not dt:
            return None
        if note_id not in self._partition(dt):
            # Later runs of the day add notes to a cached partition: read it again once.
            self.cache.pop(dt, None)
        sha, text = self._partition(dt).get(note_id, (None, None))
        return text if sha == note_sha256 else None


_TEXT_COLUMNS = ["note_id", "note_sha256", "text"]


def parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    """One `reviews` Parquet file (file schema: ``dt`` is in the key)."""
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=REVIEW_FILE_SCHEMA), sink)
    return sink.getvalue()


def read_review_rows(store: ObjectStore, layout: LakeLayout = LAKE) -> list[dict[str, Any]]:
    """Every `reviews` row under the store, with ``dt`` from the key."""
    rows: list[dict[str, Any]] = []
    for key in store.keys(layout.reviews):
        if not key.endswith(".parquet"):
            continue
        dt = next(
            (p.split("=", 1)[1] for p in key.split("/") if p.startswith(f"{PARTITION_COLUMN}=")),
            "",
        )
        for row in pq.read_table(io.BytesIO(store.get(key))).to_pylist():
            rows.append({**row, PARTITION_COLUMN: dt})
    return rows
