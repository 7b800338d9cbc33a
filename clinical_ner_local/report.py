"""The local run's report: ``<output>/report.md`` + PNG plots (matplotlib, Agg backend).

Sections: data and quarantine accounting, training metrics (per-label P/R/F1 plot), gate
decision, model registry, endpoint check, extracted entities (SYNTHETIC notes only; user data
shows counts), confidence histogram, named query results, drift decisions (signals against
thresholds plot), the retraining trigger, the review loop (scripted reviewer: decisions, KPIs
before and after the retraining it started, validated-set scores; KPI plot), SNS messages, and
timings per state.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["write_report"]

MAX_QUERY_ROWS = 8


def _plots(result: Any, out: Path) -> dict[str, str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a declared dependency
        return {}
    files: dict[str, str] = {}

    per_label = (result.metrics.get("test") or result.metrics.get("dev") or {}).get(
        "per_label"
    ) or {}
    if per_label:
        labels = sorted(per_label)
        fig, ax = plt.subplots(figsize=(6, 3.5))
        width = 0.25
        for i, (key, name) in enumerate((("p", "precision"), ("r", "recall"), ("f", "F1"))):
            ax.bar(
                [x + (i - 1) * width for x in range(len(labels))],
                [float(per_label[lab].get(key, 0.0)) for lab in labels],
                width,
                label=name,
            )
        ax.set_xticks(range(len(labels)), labels)
        ax.set_ylim(0, 1.05)
        split = "test" if result.metrics.get("test") else "dev"
        ax.set_title(f"Per-label precision / recall / F1 ({split} split)")
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(out / "per_label_prf.png", dpi=100)
        plt.close(fig)
        files["per_label"] = "per_label_prf.png"

    confidences = [
        float(r["confidence"]) for r in result.entity_rows if r.get("confidence") is not None
    ]
    if confidences:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.hist(confidences, bins=20, range=(0, 1), color="#4c72b0")
        ax.set_xlabel("entity confidence")
        ax.set_ylabel("entities")
        ax.set_title(f"Confidence of {len(confidences)} extracted entities")
        fig.tight_layout()
        fig.savefig(out / "confidence_hist.png", dpi=100)
        plt.close(fig)
        files["confidence"] = "confidence_hist.png"

    judged = [d for d in result.drift if d.get("report", {}).get("signals")]
    if judged:
        names = sorted({n for d in judged for n in d["report"]["signals"]})
        fig, axes = plt.subplots(1, len(judged), figsize=(5.5 * len(judged), 4), squeeze=False)
        for ax, d in zip(axes[0], judged, strict=True):
            sig = d["report"]["signals"]
            vals, mods, sevs = [], [], []
            for n in names:
                s = sig.get(n) or {}
                mod, sev = s.get("moderate"), s.get("severe")
                v = s.get("value")
                # Normalise to the signal's moderate band so all signals share one axis.
                scale = float(mod) if mod else 1.0
                vals.append(0.0 if v is None else float(v) / scale)
                mods.append(1.0)
                sevs.append(float(sev) / scale if sev else 0.0)
            y = range(len(names))
            ax.barh(
                list(y),
                vals,
                color=[
                    "#c44e52" if v >= s else "#dd8452" if v >= 1 else "#55a868"
                    for v, s in zip(vals, sevs, strict=True)
                ],
            )
            ax.scatter(mods, list(y), marker="|", s=300, color="orange", label="moderate")
            ax.scatter(sevs, list(y), marker="|", s=300, color="red", label="severe")
            ax.set_yticks(list(y), names)
            ax.set_xlabel("signal / moderate threshold")
            ax.set_title(f"{d['label'].split(' (')[0]}: {d['decision']}", fontsize=10)
            ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "drift_signals.png", dpi=100)
        plt.close(fig)
        files["drift"] = "drift_signals.png"
    rounds = [
        (name, (result.review or {}).get(name, {}).get("kpis")) for name in ("before", "after")
    ]
    rounds = [(n, k) for n, k in rounds if k]
    if rounds:
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
        width = 0.8 / len(rounds)
        for i, (name, k) in enumerate(rounds):
            vals = [k.get("production_precision") or 0, k.get("production_recall") or 0]
            left.bar([x + i * width for x in range(2)], vals, width, label=f"{name} retraining")
            right.bar(
                [x + i * width for x in range(2)],
                [k.get("corrections_per_100_entities") or 0, k.get("median_review_seconds") or 0],
                width,
                label=f"{name} retraining",
            )
        left.set_xticks([x + width * (len(rounds) - 1) / 2 for x in range(2)])
        left.set_xticklabels(["production precision", "production recall"])
        left.set_ylim(0, 1.05)
        right.set_xticks([x + width * (len(rounds) - 1) / 2 for x in range(2)])
        right.set_xticklabels(["corrections / 100 entities", "median review s"])
        left.legend(fontsize=8)
        fig.suptitle("Review KPIs (SYNTHETIC scripted reviewer)")
        fig.tight_layout()
        fig.savefig(out / "review_kpis.png", dpi=100)
        plt.close(fig)
        files["review"] = "review_kpis.png"
    return files


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    if v is None:
        return ""
    text = str(v).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 80 else text[:77] + "..."


def _table(cols: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(v) for v in r) + " |" for r in rows]
    return lines


def _traits_cell(entity: Mapping[str, Any]) -> str:
    """The true context traits of an entities-table row, with their triggers."""
    return ", ".join(f"{t['trait']} ({t['trigger']})" for t in entity.get("trait_triggers") or ())


def _medication_cell(entity: Mapping[str, Any]) -> str:
    """The normalised drug and the medication attributes of an entities-table row."""
    parts = [entity["drug_name"]] if entity.get("drug_name") else []
    parts += [f"{a['type'].lower()} {a['text']}" for a in entity.get("attributes") or ()]
    return "; ".join(parts)


def write_report(result: Any) -> Path:
    out = Path(result.output)
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(result, out)
    md: list[str] = ["# clinical-ner local run", ""]
    md += [
        f"Data: {result.data_source}. "
        + (
            "All notes shown are SYNTHETIC (written by us, no patient data)."
            if result.synthetic
            else "User data: entity texts are not shown, counts only."
        ),
        "",
        f"Total time {result.timings.get('total', 0)} s; Wait states and retry back-off skipped "
        f"instantly: {result.skipped_wait_seconds} s of virtual time.",
        "",
    ]
    if result.missing:
        md += ["**Not run:** " + "; ".join(result.missing), ""]

    # ---------------------------------------------------------------- data
    md += ["## Data preparation and quarantine (Glue jobs on local Spark)", ""]
    rows = []
    for g in result.glue_reports:
        if "dataset_version" in g:
            rows.append(
                [
                    g["job"],
                    g.get("run_id"),
                    f"{g['docs_total']} docs, splits "
                    f"{g.get('splits')}, rejected files {len(g.get('rejected_files', []))}",
                    g.get("seconds"),
                ]
            )
        else:
            counts = {
                k: g.get(k) for k in ("in", "curated", "quarantined", "skipped_objects") if k in g
            }
            rows.append([g["job"], g.get("run_id"), json.dumps(counts), g.get("seconds")])
    md += [*_table(["job", "run", "accounting", "seconds"], rows), ""]
    reasons: dict[str, int] = {}
    for g in result.glue_reports:
        for k, v in (g.get("quarantined_by_reason") or {}).items():
            reasons[k] = reasons.get(k, 0) + int(v)
    if reasons:
        md += [
            "Quarantine reasons: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())),
            "",
        ]

    # ---------------------------------------------------------------- training
    md += ["## Training", ""]
    for job in result.training_jobs:
        md += [
            f"Training job `{job.job_name}`: {job.seconds} s, model `{job.model_data_url}` "
            f"(log: `{job.log_path}`).",
            "",
        ]
    prepared = [g for g in result.glue_reports if "dataset_version" in g]
    md += _scores_section(result.metrics or {}, (prepared[-1].get("splits") if prepared else None))
    summary = (result.metrics or {}).get("summary") or {}
    if summary:
        md += [*_table(["metric", "value"], [[k, v] for k, v in summary.items()]), ""]
    if "per_label" in plots:
        md += [f"![per-label P/R/F1]({plots['per_label']})", ""]

    # ---------------------------------------------------------------- gate, registry
    md += ["## Gate decision", ""]
    if result.gate:
        md += [f"Passed: **{result.gate.get('passed')}** - {result.gate.get('summary', '')}", ""]
        if result.gate.get("failed"):
            md += ["Failed checks: " + ", ".join(map(str, result.gate["failed"])), ""]
    else:
        md += ["(the execution output has no gate result)", ""]
    md += ["## Model registry (SageMaker, emulated)", ""]
    md += [
        *_table(
            ["group", "version", "status", "description"],
            [[r["group"], r["version"], r["status"], r["description"]] for r in result.registry],
        ),
        "",
    ]

    md += _tracking_section(result.tracking)

    # ---------------------------------------------------------------- endpoint
    md += ["## Endpoint check (local `serve` process)", ""]
    ep = result.endpoint or {}
    if ep.get("checked"):
        md += [
            f"Endpoint `{ep['endpoint_name']}` (emulator status {ep.get('status_in_emulator')}, "
            f"config `{ep.get('endpoint_config')}`) is the serve process at {ep['url']}: "
            f"/ping {ep['ping']}, /invocations {ep['invocation_status']} in {ep['latency_ms']} ms "
            f"(model load {ep.get('startup_seconds')} s).",
            "",
            f'Request (synthetic): "{ep["request_text"]}"',
            "",
        ]
        md += [
            *_table(
                ["text", "label", "start", "end", "confidence"],
                [
                    [e["text"], e["label"], e["start_char"], e["end_char"], e["confidence"]]
                    for e in ep.get("entities", [])
                ],
            ),
            "",
        ]
    else:
        md += [f"Not checked: {json.dumps(ep)}", ""]

    # ---------------------------------------------------------------- extraction
    md += ["## Extraction runs (extraction state machine)", ""]
    rows = []
    for i, r in enumerate(result.extraction_runs):
        v = r.get("validate") or {}
        rows.append(
            [
                i,
                r.get("label"),
                r["status"],
                v.get("in"),
                v.get("curated"),
                v.get("quarantined"),
                ((r.get("output") or {}).get("stage") or {}).get("notes"),
            ]
        )
    md += [
        *_table(
            ["run", "window", "status", "records in", "curated", "quarantined", "notes extracted"],
            rows,
        ),
        "",
    ]
    for t in result.transforms:
        md += [
            f"- Batch Transform `{t.job_name}`: {t.records} notes in {t.requests} request(s), "
            f"{t.seconds} s"
        ]
    md += [""]
    md += ["### Extracted entities (sample)", ""]
    if result.synthetic and result.entities_sample:
        nid = result.entities_sample[0]["note_id"]
        text = result.notes_text.get(nid, "")
        # Notes have sections and lists: a fenced block keeps their line breaks readable.
        md += [f"Synthetic note `{nid}`:", "", "```text", text.replace("`", "'"), "```", ""]
        md += [
            *_table(
                [
                    "text",
                    "label",
                    "start",
                    "end",
                    "confidence",
                    "traits",
                    "section",
                    "ICD-10-CM",
                    "drug, attributes",
                    "offsets ok",
                ],
                [
                    [
                        e["text"],
                        e["label"],
                        e["start_char"],
                        e["end_char"],
                        e["confidence"],
                        _traits_cell(e),
                        e.get("section") or "",
                        e.get("icd10cm_code") or "",
                        _medication_cell(e),
                        text[e["start_char"] : e["end_char"]] == e["text"] if text else "",
                    ]
                    for e in result.entities_sample
                ],
            ),
            "",
        ]
    labels: dict[str, int] = {}
    for e in result.entity_rows:
        labels[e["label"]] = labels.get(e["label"], 0) + 1
    md += [
        f"{len(result.entity_rows)} entity rows in total: "
        + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())),
        "",
    ]
    if "confidence" in plots:
        md += [f"![confidence histogram]({plots['confidence']})", ""]

    # ---------------------------------------------------------------- queries
    md += ["## Named queries (Athena SQL, run in DuckDB over the published Parquet)", ""]
    for name, q in result.queries.items():
        params = f" (parameters {q['parameters']})" if q["parameters"] else ""
        md += [f"### `{name}`{params}: {len(q['rows'])} row(s)", ""]
        shown = q["rows"][:MAX_QUERY_ROWS]
        if not result.synthetic:
            keep = [i for i, c in enumerate(q["columns"]) if c != "text"]
            md += [
                *_table([q["columns"][i] for i in keep], [[r[i] for i in keep] for r in shown]),
                "",
            ]
        else:
            md += [*_table(q["columns"], shown), ""]

    # ---------------------------------------------------------------- drift
    md += ["## Drift monitoring", ""]
    rows = []
    for d in result.drift:
        rep = d.get("report") or {}
        rows.append(
            [
                d["label"],
                (rep.get("window") or {}).get("notes"),
                d["decision"],
                d["action"],
                json.dumps(rep.get("classes", {})),
            ]
        )
    md += [*_table(["window", "notes", "decision", "action", "classes"], rows), ""]
    for d in result.drift:
        sig = (d.get("report") or {}).get("signals") or {}
        if sig:
            md += [f"Signals, {d['label']}:", ""]
            md += [
                *_table(
                    ["signal", "value", "moderate", "severe", "level"],
                    [
                        [n, s.get("value"), s.get("moderate"), s.get("severe"), s.get("level")]
                        for n, s in sorted(sig.items())
                    ],
                ),
                "",
            ]
    if "drift" in plots:
        md += [f"![drift signals against thresholds]({plots['drift']})", ""]
    rt = result.retraining or {}
    md += ["### Retraining trigger", ""]
    if rt.get("invoked"):
        md += [
            f"The {rt['window']} asked for retraining; the retraining-trigger Lambda was "
            "invoked with the moderate-drift alarm event (twice: the second is debounced).",
            "",
            f"- first call: `{json.dumps(rt['first_call'], default=str)}`",
            f"- second call: `{json.dumps(rt['second_call'], default=str)}`",
            f"- executions of the training state machine in the emulator: "
            f"`{json.dumps(rt['executions'])}`, input `{json.dumps(rt['execution_input'])}`",
            "",
        ]
        rex = rt.get("execution") or {}
        if rex:
            gate = rt.get("gate") or {}
            register = rt.get("register") or {}
            md += [
                "The started execution then ran on the local interpreter, as Step Functions "
                f"would run it: **{rex['status']}** ({' -> '.join(rex['states'])}).",
                "",
            ]
            if register.get("identical_to_production"):
                md += [
                    f"**The retrained model is identical to production** (model version "
                    f"`{register.get('model_version')}`, the same config, data and seed as "
                    f"`{register.get('production_package_arn')}`): not registered, not gated, "
                    "not redeployed.",
                    "",
                ]
            else:
                md += [
                    f"Gate (`comparison: {gate.get('comparison')}`): passed "
                    f"**{gate.get('passed')}** - {gate.get('summary', 'n/a')}",
                    "",
                ]
    else:
        md += [f"Not invoked: {rt.get('reason', 'n/a')}", ""]

    md += _review_section(result.review or {}, plots.get("review"))

    # ---------------------------------------------------------------- SNS, timings
    md += ["## SNS notifications (moto SNS)", ""]
    md += [
        *_table(
            ["state", "topic", "subject", "event"],
            [
                [
                    m["state"],
                    m["topic"],
                    m["subject"],
                    (m["message"] or {}).get("event")
                    if isinstance(m["message"], dict)
                    else m["message"],
                ]
                for m in result.sns_messages
            ],
        ),
        "",
    ]
    md += ["## Timings", ""]
    md += [*_table(["phase", "seconds"], [[k, v] for k, v in result.timings.items()]), ""]
    executions = [
        ("training", result.training_execution),
        *[(f"extraction-{i}", r) for i, r in enumerate(result.extraction_runs)],
        ("retraining", (result.retraining or {}).get("execution") or {}),
        ("review-retraining", ((result.review or {}).get("retraining") or {}).get("execution")),
        ("extraction-after-review", (result.review or {}).get("after_extraction")),
    ]
    for label, ex in executions:
        if not ex:
            continue
        md += [f"### {label}: {ex['status']} ({' -> '.join(ex['states'])})", ""]
        md += [
            *_table(
                ["state", "seconds"], [[d["state"], d["seconds"]] for d in ex.get("durations", [])]
            ),
            "",
        ]
    path = out / "report.md"
    path.write_text("\n".join(md) + "\n", encoding="utf-8")
    (out / "report.json").write_text(json.dumps(_json(result), indent=2, default=str) + "\n")
    return path


def _json(result: Any) -> dict[str, Any]:
    """The run result as JSON, without the note text and entity rows it carries for the report."""
    doc = dataclasses.asdict(result)
    doc.pop("notes_text", None)
    doc.pop("entity_rows", None)
    return json.loads(json.dumps(doc, default=str))


def _scores_section(metrics: Mapping[str, Any], docs: Mapping[str, Any] | None = None) -> list[str]:
    """Per-label P/R/F1 with support (gold entities) on dev and test, and what they mean."""
    from clinical_ner.data.publish import ModelContractError, model_labels

    splits = [s for s in ("dev", "test") if isinstance(metrics.get(s), Mapping)]
    if not splits:
        return []
    try:
        labels = list(model_labels(metrics, "the model's metrics.json"))
    except ModelContractError as exc:
        return [f"Per-label scores not shown: {exc}.", ""]
    cols = ["label"]
    for split in splits:
        cols += [f"{split} P", f"{split} R", f"{split} F1", f"{split} support"]
    rows: list[list[Any]] = []
    for label in labels:
        row: list[Any] = [label]
        for split in splits:
            c = (metrics[split].get("per_label") or {}).get(label) or {}
            support = c.get("support", int(c.get("tp", 0)) + int(c.get("fn", 0)))
            row += [float(c.get("p", 0.0)), float(c.get("r", 0.0)), float(c.get("f", 0.0))]
            row.append(int(support))
        rows.append(row)
    total: list[Any] = ["all (micro)"]
    for split in splits:
        m = metrics[split]
        total += [float(m.get("ents_p", 0.0)), float(m.get("ents_r", 0.0))]
        total += [float(m.get("ents_f", 0.0)), int(m.get("tp", 0)) + int(m.get("fn", 0))]
    rows.append(total)
    docs = docs or {}
    sizes = ", ".join(f"{s} {docs[s]} docs" for s in splits if isinstance(docs.get(s), int))
    return [
        *_table(cols, rows),
        "",
        "Strict scores: a predicted entity counts only if its span and label both match a gold "
        "entity exactly (support = gold entities of the label); measured on SYNTHETIC notes"
        + (f" ({sizes})" if sizes else "")
        + ", a small test set, so expect wide error margins and not real-note performance.",
        "",
    ]


def _tracking_section(tracking: Mapping[str, Any]) -> list[str]:
    md = ["## Experiment tracking (MLflow; a local `mlflow server` stands in for SageMaker's)", ""]
    if not tracking:
        return [*md, "(no register step reported tracking)", ""]
    md += [
        f"Status: **{tracking.get('status')}**"
        + (f" - {tracking['reason']}" if tracking.get("reason") else ""),
        "",
    ]
    if tracking.get("status") != "logged":
        return md
    tags = tracking.get("tags") or {}
    md += [
        *_table(
            ["field", "value"],
            [
                ["experiment", tracking.get("experiment")],
                ["run id", tracking.get("run_id")],
                ["run status", tracking.get("run_status")],
                ["params logged", tracking.get("params")],
                ["metrics logged", len(tracking.get("metrics") or {})],
                ["dev_f1", (tracking.get("metrics") or {}).get("dev_f1")],
                ["model package (run tag)", tags.get("sagemaker.model_package_arn")],
                ["dataset version (run tag)", tags.get("dataset_version")],
                ["model artifact (run tag)", tags.get("model_artifact_uri")],
            ],
        ),
        "",
    ]
    if tracking.get("backend_store"):
        md += [
            f"Browse it: `mlflow ui --backend-store-uri sqlite:///{tracking['backend_store']}`",
            "",
        ]
    return md


_KPI_ROWS = [
    ("notes reviewed", "notes_reviewed"),
    ("production precision", "production_precision"),
    ("production recall", "production_recall"),
    ("corrections per 100 entities", "corrections_per_100_entities"),
    ("median review seconds per note", "median_review_seconds"),
    ("hours saved", "hours_saved"),
]


def _review_section(review: Mapping[str, Any], plot: str | None) -> list[str]:
    md = ["## Review loop (scripted reviewer, SYNTHETIC corrections)", ""]
    if not review.get("ran"):
        return [*md, f"Not run: {review.get('reason', 'only with the bundled samples')}", ""]
    before, after = review.get("before") or {}, review.get("after") or {}
    md += [
        "The publish step queued every extracted note (DynamoDB in the emulator, table "
        f"`{review['table']}`); a scripted reviewer applied "
        "`clinical_ner/samples/synthetic_review_corrections.jsonl` (the annotation guideline "
        "as a dictionary over the shifted window) through the workbench API on "
        f"{review['workbench_url']} (claim, read, submit). `retrain_after_reviewed_notes` is "
        f"{review['retrain_after_reviewed_notes']} for the demo (stage default 200). Queue "
        f"now: `{json.dumps(review.get('queue'))}`.",
        "",
    ]
    for name, rnd in (("before retraining", before), ("after retraining", after)):
        if rnd:
            md += [
                f"- {name}: model `{rnd['model_version']}`, notes reviewed "
                f"**{rnd['submitted']}**, decisions by kind `{json.dumps(rnd['decisions'])}`, "
                f"answers `{json.dumps(rnd['statuses'])}`",
            ]
    md += [""]
    rows = [
        [label, (before.get("kpis") or {}).get(key), (after.get("kpis") or {}).get(key)]
        for label, key in _KPI_ROWS
    ]
    md += [*_table(["KPI", "before retraining", "after retraining"], rows), ""]
    md += [
        "Before: the first two thirds of the window, read by the production model; after: the "
        "held-back third (never reviewed before, never trained on), read by the retrained "
        "model. Synthetic notes and a short training run: the numbers show the loop works, "
        "not how good a model is.",
        "",
    ]
    rt = review.get("retraining") or {}
    calls = review.get("trigger_calls") or []
    md += [f"Retraining trigger calls (`reviewed_annotations`): `{json.dumps(calls, default=str)}`"]
    md += [""]
    if rt.get("started"):
        ex = rt.get("execution") or {}
        gate = rt.get("gate") or {}
        v = rt.get("validated_eval") or {}
        md += [
            f"The started execution ran on the local interpreter: **{ex.get('status')}** "
            f"({' -> '.join(ex.get('states', []))}).",
            "",
            f"Validated evaluation set ({v.get('docs')} reviewed notes never trained on): "
            f"production micro-F1 **{_fmt(v.get('production'))}**, candidate "
            f"**{_fmt(v.get('candidate'))}**.",
            "",
            f"Gate: passed **{gate.get('passed')}** - {gate.get('summary', 'n/a')}",
            "",
        ]
    if review.get("metrics_published"):
        md += [
            "CloudWatch metrics published per submit (moto): "
            + ", ".join(f"`{m}`" for m in review["metrics_published"]),
            "",
        ]
    if plot:
        md += [f"![review KPIs before and after retraining]({plot})", ""]
    return md
