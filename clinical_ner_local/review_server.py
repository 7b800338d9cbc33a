"""`clinical-ner review`: the workbench on 127.0.0.1 over a local run's lake or extract output.

The queue is the real `ReviewQueue` against DynamoDB in the embedded emulator (moto on
127.0.0.1, `clinical_ner_local.emulator`); the notes of the folder's extraction tables are
enqueued (idempotently, by the same code as the publish step), the texts come from its
curated notes (a local run's ``work/lake``) or from the note files given with ``--notes``,
and the decisions are written into the folder with the lake's keys (``reviews/``,
``raw/annotations/reviewed/``, ``raw/validated_eval/``). Identity is a header the page sends
(``X-Reviewer``); the server binds the loopback address only.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pyarrow.parquet as pq

from clinical_ner.data.review import QueueNote, queue_notes_from_rows
from clinical_ner.pipeline.review_queue import ReviewQueue, create_table
from clinical_ner.pipeline.review_service import ReviewService, enqueue_notes
from clinical_ner.pipeline.review_store import LocalStore, MemoryTexts
from clinical_ner.pipeline.stage_config import LAKE, load_stage_config
from clinical_ner.runtime.review_app import ReviewApp
from clinical_ner_local.emulator import LOOPBACK, LocalAws

TABLE_NAME = "clinical-ner-local-review"
REVIEWER_HEADER = "X-Reviewer"


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # the app logs (no paths, no text)
        return


def _rows(root: Path, table: str) -> list[dict[str, Any]]:
    for base in (root / "inference" / table, root / table):
        files = sorted(base.glob("dt=*/part-*.parquet"))
        if files:
            return [r for f in files for r in pq.read_table(f).to_pylist()]
    return []


def load_folder(root: Path, notes: Sequence[Path] = ()) -> tuple[list[QueueNote], dict[str, str]]:
    """Queue entries and texts (by sha256) of a lake folder or `clinical-ner extract` output."""
    note_rows = _rows(root, "notes")
    if not note_rows:
        raise FileNotFoundError(f"no extraction output (notes table) under {root}")
    texts: dict[str, str] = {}
    for f in sorted((root / LAKE.curated_notes).glob("dt=*/*.parquet")):
        for r in pq.read_table(f, columns=["note_sha256", "text"]).to_pylist():
            texts[r["note_sha256"]] = r["text"]
    if notes:
        from clinical_ner.data.notes import read_notes

        for note in read_notes(list(notes)).collect().notes:
            texts[note.content_sha256] = note.text
    entity_rows = _rows(root, "entities")
    queue_notes: list[QueueNote] = []
    for version in sorted({r["model_version"] for r in note_rows}):
        rows = [r for r in note_rows if r["model_version"] == version]
        labels = sorted({k for r in rows for k in json.loads(r["entity_counts_by_label"])})
        queue_notes += queue_notes_from_rows(
            (e for e in entity_rows if e["model_version"] == version), rows, labels
        )
    return [n for n in queue_notes if n.note_sha256 in texts], texts


class LocalReviewServer:
    """Emulator + table + app + a wsgiref server thread; a context manager."""

    def __init__(
        self, root: Path, notes: Sequence[Path] = (), *, port: int = 0, stage: str = "dev"
    ) -> None:
        self.root = Path(root)
        self.notes = list(notes)
        self.port = port
        self.settings = load_stage_config(stage).review
        self.aws = LocalAws()
        self.server: WSGIServer | None = None
        self.thread: threading.Thread | None = None
        self.enqueued: dict[str, int] = {}
        self.queue: ReviewQueue | None = None

    def start(self) -> LocalReviewServer:
        queue_notes, texts = load_folder(self.root, self.notes)
        self.aws.start()
        try:
            ddb = self.aws.client("dynamodb")
            create_table(ddb, TABLE_NAME)
            self.queue = ReviewQueue(ddb, TABLE_NAME, lease_seconds=self.settings.lease_seconds)
            self.enqueued = enqueue_notes(self.queue, queue_notes, self.settings)
            service = ReviewService(
                self.queue, LocalStore(self.root), MemoryTexts(texts), self.settings
            )
            app = ReviewApp(service, reviewer_header=REVIEWER_HEADER, required_group=None)
            logging.getLogger("werkzeug").setLevel(logging.WARNING)
            self.server = make_server(LOOPBACK, self.port, app, handler_class=_QuietHandler)
            self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
            self.thread.start()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://{LOOPBACK}:{self.server.server_port}/"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        self.aws.stop()

    def __enter__(self) -> LocalReviewServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
