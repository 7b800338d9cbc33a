"""The drift monitor on real notes: MTSamples in-distribution vs clearly shifted windows.

Reference: 250 MTSamples notes from non-surgical specialties (the first production window).
Windows (120 notes each): other notes of the same specialties (in-distribution), notes of the
held-out surgical specialties, an 80/20 mix of in-distribution notes and BC5CDR PubMed
abstracts, and BC5CDR abstracts only. Predictions come from a tiny model trained in-test.
Documented outcome (docs/monitoring.md): none / at most moderate / moderate / severe.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from clinical_ner.model.inference import NerModel
from clinical_ner.pipeline import monitoring
from clinical_ner.pipeline.stage_config import load_stage_config

pytestmark = pytest.mark.shared_data

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
MTSAMPLES = DATA / "mtsamples" / "mtsamples.csv"
BC5CDR = DATA / "BC5CDR-IOB" / "devel.tsv"
SURGICAL = {"Surgery", "Orthopedic", "Neurosurgery", "Cosmetic / Plastic Surgery", "Podiatry"}
REF_N, WIN_N = 250, 120


def _mtsamples() -> tuple[list[str], list[str]]:
    ins, held = [], []
    with MTSAMPLES.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            text = (row.get("transcription") or "").strip()
            if len(text) < 200:
                continue
            (held if row["medical_specialty"].strip() in SURGICAL else ins).append(text)
    return ins, held


def _abstracts(n: int, per: int = 10) -> list[str]:
    sents, cur = [], []
    for line in BC5CDR.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if cur:
                sents.append(" ".join(cur))
                cur = []
        else:
            cur.append(line.split("\t")[0])
    return [" ".join(sents[i : i + per]) for i in range(0, per * n, per)]


@pytest.fixture(scope="module")
def reports(tiny_model_dir, tmp_path_factory):
    if not MTSAMPLES.is_file() or not BC5CDR.is_file():
        pytest.skip(f"real data absent: needs {MTSAMPLES} and {BC5CDR}")
    model = NerModel.load(tiny_model_dir)
    thresholds = load_stage_config("prod").drift
    ins, held = _mtsamples()
    # Deterministic interleaving so reference and window mix specialties the same way.
    ref_texts, in_texts = ins[0::3][:REF_N], ins[1::3][:WIN_N]
    abstracts = _abstracts(WIN_N)
    windows = {
        "in_distribution": in_texts,
        "held_out_specialties": held[:WIN_N],
        "mixed_20pct_abstracts": ins[2::3][: WIN_N - 24] + abstracts[:24],
        "abstracts": abstracts,
    }

    def predict(texts):
        return list(model.predict(texts, batch_size=64))

    first = monitoring.run_monitor(
        ref_texts, predict(ref_texts), thresholds=thresholds, model_version=model.version
    )
    assert first.report["decision"] == "reference_established"
    out = {}
    for name, texts in windows.items():
        out[name] = monitoring.run_monitor(
            texts,
            predict(texts),
            thresholds=thresholds,
            model_version=model.version,
            reference=first.new_reference,
            window={"id": name},
        ).report
    path = tmp_path_factory.mktemp("drift") / "reports.json"
    path.write_text(json.dumps(out, indent=1, sort_keys=True))
    print(f"drift reports: {path}")
    for name, r in out.items():
        print(name, r["decision"], {k: v["value"] for k, v in r["signals"].items()})
    return out


def test_in_distribution_window_is_no_drift(reports):
    r = reports["in_distribution"]
    assert r["decision"] == "none", r["signals"]
    assert r["action"] == "none"


def test_abstracts_are_severe_drift(reports):
    r = reports["abstracts"]
    assert r["decision"] == "severe" and r["action"] == "alert"
    assert r["signals"]["note_length_psi"]["level"] == "severe"
    assert r["signals"]["oov_rate_increase"]["level"] == "severe"


def test_partial_shift_is_moderate_drift(reports):
    r = reports["mixed_20pct_abstracts"]
    assert r["decision"] == "moderate" and r["action"] == "retrain"
    assert r["classes"]["input"] == "moderate"


def test_held_out_specialties_are_at_most_moderate(reports):
    # Surgical notes (operative reports) are still clinical English from the same source:
    # vocabulary and length stay close to the reference; they must not page anyone.
    r = reports["held_out_specialties"]
    assert r["decision"] in ("none", "moderate")


def test_signals_order_the_windows_by_shift(reports):
    oov = {k: r["signals"]["oov_rate_increase"]["value"] for k, r in reports.items()}
    assert oov["in_distribution"] < oov["mixed_20pct_abstracts"] < oov["abstracts"]
