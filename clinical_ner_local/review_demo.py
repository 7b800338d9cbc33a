"""`make run`'s review loop without a person: a scripted reviewer drives the real workbench API.

What runs (docs/local-mode.md, "The review loop"): the publish step of every extraction run has
queued its notes in the emulator's DynamoDB table (`prepare_review_table` names the table in
the publish Lambda's environment when the synthesized app does not); the workbench app
(`clinical_ner.runtime.review_app.ReviewApp`, the same WSGI app the review Lambda serves)
listens on 127.0.0.1 over that table and the emulator's lake (S3 store + curated texts, as in
AWS); the scripted reviewer applies the bundled SYNTHETIC corrections
(``clinical_ner/samples/synthetic_review_corrections.jsonl``) through HTTP: claim, read the
note, submit decisions. Crossing ``retrain_after_reviewed_notes`` (lowered for the demo)
calls the real retraining-trigger Lambda with the ``reviewed_annotations`` event; the
execution it starts in moto then runs on the local interpreter (prepare data with the reviewed
annotations, train against production with the validated evaluation set, gate, deploy). Held-
back notes of the same window, extracted by the new model, are reviewed the same way: the KPIs
before and after retraining. PHI: nothing here logs or reports note text (SYNTHETIC anyway).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from clinical_ner.pipeline.stage_config import LAKE, load_stage_config

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "clinical_ner" / "samples"
CORRECTIONS_FILE = "synthetic_review_corrections.jsonl"
REVIEWER = "scripted-reviewer"
LOCAL_TABLE = "clinical-ner-local-review"
DEFAULT_RETRAIN_AFTER = 25  # the demo's threshold: crossed by the first round of reviews
AFTER_SHARE = 1 / 3  # the last third of the window is held back for the "after" round


def load_corrections(samples: Path) -> list[dict[str, Any]]:
    """The bundled final annotations (entries with ``final`` spans and their note's text)."""
    entries = []
    texts: dict[str, dict[str, str]] = {}
    for line in (samples / CORRECTIONS_FILE).read_text(encoding="utf-8").splitlines():
        doc = json.loads(line)
        if "final" not in doc:
            continue  # comments and the hand-written examples for synthetic_notes.jsonl
        source = doc["source"]
        if source not in texts:
            texts[source] = {
                n["note_id"]: n["text"]
                for n in map(json.loads, (samples / source).read_text("utf-8").splitlines())
            }
        text = texts[source][doc["note_id"]]
        if hashlib.sha256(text.encode("utf-8")).hexdigest() != doc["note_sha256"]:
            raise ValueError(f"{CORRECTIONS_FILE}: {doc['note_id']} does not match its note")
        entries.append({**doc, "text": text})
    return entries


def decisions_for(
    entities: Sequence[Mapping[str, Any]], final: Sequence[Sequence[Any]], labels: Sequence[str]
) -> list[dict[str, Any]]:
    """The decisions that turn the model's entities into the `final` annotation."""
    wanted = [(int(s), int(e), str(lab)) for s, e, lab in final if lab in labels]
    used: set[int] = set()
    out: list[dict[str, Any]] = []
    for ent in sorted(entities, key=lambda x: (x["start"], x["end"])):
        start, end = ent["start"], ent["end"]
        exact = next(
            (i for i, w in enumerate(wanted) if i not in used and w[:2] == (start, end)), None
        )
        if exact is not None:
            used.add(exact)
            label = wanted[exact][2]
            out.append(
                {"entity_id": ent["entity_id"], "decision": "accepted"}
                if label == ent["label"]
                else {"entity_id": ent["entity_id"], "decision": "relabelled", "label": label}
            )
            continue
        overlaps = [
            (min(end, w[1]) - max(start, w[0]), i)
            for i, w in enumerate(wanted)
            if i not in used and w[0] < end and start < w[1]
        ]
        if overlaps:
            i = max(overlaps)[1]
            used.add(i)
            s, e, label = wanted[i]
            out.append(
                {
                    "entity_id": ent["entity_id"],
                    "decision": "span_fixed",
                    "start": s,
                    "end": e,
                    "label": label,
                }
            )
            continue
        out.append({"entity_id": ent["entity_id"], "decision": "rejected"})
    for i, (s, e, label) in enumerate(wanted):
        if i not in used:
            out.append({"decision": "added", "start": s, "end": e, "label": label})
    return out


class ScriptedReviewer:
    """An HTTP client of the workbench API, as the page uses it (local header identity)."""

    def __init__(self, base_url: str, name: str = REVIEWER) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = name
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("X-Reviewer", self.name)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("X-Lease-Token", token)
        try:
            with self.opener.open(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def review(self, entries: Sequence[Mapping[str, Any]], model_version: str) -> dict[str, Any]:
        """Claim, read and submit each entry's note as extracted by `model_version`."""
        kinds: Counter[str] = Counter()
        statuses: Counter[str] = Counter()
        retrain_due = 0
        for entry in entries:
            tid = f"{entry['note_sha256']}#{model_version}"
            status, claim = self.call("POST", "/api/claim", {"task_id": tid})
            if status != 200:
                statuses[f"claim {status}"] += 1
                continue
            path = f"/api/tasks/{quote(tid, safe='')}"
            status, note = self.call("GET", path, token=claim["lease_token"])
            if status != 200:
                statuses[f"get {status}"] += 1
                continue
            decisions = decisions_for(note["entities"], entry["final"], note["labels"])
            body = {"decisions": decisions, "seconds_spent": entry["seconds_spent"]}
            status, answer = self.call("POST", f"{path}/submit", body, claim["lease_token"])
            statuses[f"submit {status}"] += 1
            if status == 200:
                kinds.update(d["decision"] for d in decisions)
                retrain_due += bool(answer.get("retrain_due"))
        return {
            "submitted": statuses.get("submit 200", 0),
            "statuses": dict(sorted(statuses.items())),
            "decisions": dict(sorted(kinds.items())),
            "retrain_due_answers": retrain_due,
        }


# --------------------------------------------------------------------------- runner glue


def prepare_review_table(pipeline: Any) -> str | None:
    """Create the review table in the emulator; the publish Lambda's REVIEW_TABLE names it."""
    from clinical_ner.pipeline.review_queue import create_table

    publish = [f for n, f in pipeline.lambdas.items() if n.endswith("publish-extractions")]
    if not publish:
        return None
    names = {f.environment.get("REVIEW_TABLE") for f in publish} - {None, ""}
    table = next(iter(names), LOCAL_TABLE)
    for fn in publish:
        fn.environment.setdefault("REVIEW_TABLE", table)  # before the stack wires it
    create_table(pipeline.aws.client("dynamodb"), table)
    return table


def _kpis(reviewer: ScriptedReviewer, version: str) -> dict[str, Any] | None:
    status, body = reviewer.call("GET", "/api/kpis")
    rows = (
        [k for k in body.get("kpis", []) if k["model_version"] == version] if status == 200 else []
    )
    if not rows:
        return None
    # one review day in the demo; several days would be summed by the named query
    return rows[-1]


def run_review_demo(
    pipeline: Any,
    result: Any,
    progress: Any,
    *,
    table: str,
    retrain_after: int,
    summarize: Callable[[Any], dict[str, Any]],
    strip: Callable[[Any], Any],
) -> dict[str, Any]:
    """Round 1 (reviews -> retraining), the retraining execution, round 2; what the report shows."""
    from wsgiref.simple_server import make_server

    from clinical_ner.pipeline.review_queue import ReviewQueue
    from clinical_ner.pipeline.review_service import ReviewService
    from clinical_ner.pipeline.review_store import CuratedTexts, S3Store
    from clinical_ner.runtime.extraction_steps import put_metrics
    from clinical_ner.runtime.review_apigw import retraining_event
    from clinical_ner.runtime.review_app import ReviewApp
    from clinical_ner_local.asl import LambdaContext
    from clinical_ner_local.emulator import LOOPBACK
    from clinical_ner_local.review_server import REVIEWER_HEADER, _QuietHandler

    aws, stage = pipeline.aws, pipeline.opts.stage
    sfn = aws.client("stepfunctions")
    trigger_fn = next(
        (f for n, f in pipeline.lambdas.items() if n.endswith("retraining-trigger")), None
    )
    if trigger_fn is None:
        return {"ran": False, "reason": "no retraining-trigger Lambda in the synthesized app"}
    machine = trigger_fn.environment.get("TRAINING_STATE_MACHINE_ARN", "")
    # moto records executions but never finishes them: the drift retraining ran locally, so
    # mark it ended, or the trigger's "an execution is running" rule would block forever.
    for e in sfn.list_executions(stateMachineArn=machine, statusFilter="RUNNING")["executions"]:
        sfn.stop_execution(executionArn=e["executionArn"])

    settings = dataclasses.replace(
        load_stage_config(stage).review, retrain_after_reviewed_notes=retrain_after
    )
    calls: list[dict[str, Any]] = []

    def on_retrain_due(reviewed: int) -> None:
        # Local mode calls the trigger Lambda directly (AWS: an asynchronous invoke).
        handler = pipeline._lambda(trigger_fn)
        ctx = LambdaContext(trigger_fn.function_name, str(uuid.uuid4()), trigger_fn.arn)
        calls.append(handler(retraining_event(reviewed, retrain_after), ctx))

    cw = aws.client("cloudwatch")
    store = S3Store(pipeline.s3, pipeline.lake.lake)
    service = ReviewService(
        ReviewQueue(aws.client("dynamodb"), table, lease_seconds=settings.lease_seconds),
        store,
        CuratedTexts(store),
        settings,
        on_retrain_due=on_retrain_due,
        publish_metrics=lambda data: put_metrics(cw, data),
        stage=stage,
    )
    app = ReviewApp(service, reviewer_header=REVIEWER_HEADER, required_group=None)
    server = make_server(LOOPBACK, 0, app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    reviewer = ScriptedReviewer(f"http://{LOOPBACK}:{server.server_port}")
    entries = load_corrections(SAMPLES_DIR)
    cut = len(entries) - round(len(entries) * AFTER_SHARE)
    before_version = str(result.training_jobs[0].metrics["model_version"])
    demo: dict[str, Any] = {
        "ran": True,
        "table": table,
        "retrain_after_reviewed_notes": retrain_after,
        "workbench_url": reviewer.base_url,
    }
    try:
        progress.step(f"scripted reviewer: {cut} notes through the workbench API")
        demo["before"] = {
            "model_version": before_version,
            **reviewer.review(entries[:cut], before_version),
            "kpis": _kpis(reviewer, before_version),
        }
        demo["trigger_calls"] = calls
        started = next((c for c in calls if c.get("started")), None)
        if started is None:
            demo["retraining"] = {"started": False}
            return demo
        described = sfn.describe_execution(executionArn=started["execution_arn"])
        ex = pipeline.execute("Training", json.loads(described["input"]), "review-retraining")
        out = ex.output or {}
        job = result.training_jobs[-1]
        demo["retraining"] = {
            "started": True,
            "input": json.loads(described["input"]),
            "execution": summarize(ex),
            "gate": out.get("gate") or {},
            "register": strip(out.get("register") or {}),
            "validated_eval": {
                "candidate": (job.metrics.get("validated_eval") or {}).get("ents_f"),
                "production": (
                    (job.metrics.get("production_baseline") or {}).get("validated_eval") or {}
                ).get("ents_f"),
                "docs": (job.metrics.get("validated_eval") or {}).get("docs"),
            },
            "candidate_version": job.metrics.get("model_version"),
        }
        if not ex.succeeded or ex.states_entered()[-1] != "Deployed":
            return demo
        # Round 2: the held-back notes, extracted by the new production model.
        after_version = str(job.metrics["model_version"])
        held = entries[cut:]
        path = pipeline.workdir / "review-after-notes.jsonl"
        path.write_text(
            "".join(
                json.dumps({"note_id": f"{e['note_id']}-after", "text": e["text"]}) + "\n"
                for e in held
            ),
            encoding="utf-8",
        )
        pipeline.s3.upload_file(
            str(path), pipeline.lake.lake, f"{LAKE.raw_notes}local-review-after/{path.name}"
        )
        ex2 = pipeline.execute("Extraction", {}, "extraction-after-review")
        demo["after_extraction"] = summarize(ex2)
        if ex2.succeeded:
            progress.step(f"scripted reviewer: {len(held)} held-back notes, new model")
            demo["after"] = {
                "model_version": after_version,
                **reviewer.review(held, after_version),
                "kpis": _kpis(reviewer, after_version),
            }
        for e in sfn.list_executions(stateMachineArn=machine, statusFilter="RUNNING")["executions"]:
            sfn.stop_execution(executionArn=e["executionArn"])
        return demo
    finally:
        server.shutdown()
        server.server_close()
        demo["queue"] = service.queue.progress()
        demo["metrics_published"] = sorted(
            {
                m["MetricName"]
                for m in cw.list_metrics(Namespace=_namespace())["Metrics"]
                if m["MetricName"] in _review_metric_names()
            }
        )


def _namespace() -> str:
    from clinical_ner.pipeline.monitoring import NAMESPACE

    return NAMESPACE


def _review_metric_names() -> set[str]:
    from clinical_ner.pipeline.monitoring import REVIEW_METRICS

    return {name for name, _unit in REVIEW_METRICS.values()}
