"""Generates the SYNTHETIC templated test fixtures (no real patient data; not the demo data).

One-sentence templated annotations and notes that the unit tests train tiny models on
quickly; `make run` uses the realistic notes of ``make_clinical_notes.py`` instead.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

DISEASES = [
    "type 2 diabetes mellitus",
    "hypertension",
    "asthma",
    "pneumonia",
    "atrial fibrillation",
    "chronic kidney disease",
    "migraine",
    "rheumatoid arthritis",
    "heart failure",
    "urinary tract infection",
    "hypothyroidism",
    "major depressive disorder",
    "gout",
    "osteoarthritis",
    "COPD",
    "anemia",
    "cellulitis",
    "deep vein thrombosis",
    "psoriasis",
    "epilepsy",
    "coronary artery disease",
    "breast cancer",
    "sepsis",
    "hyperlipidemia",
]
TREATMENTS = [
    "metformin",
    "lisinopril",
    "albuterol",
    "amoxicillin",
    "warfarin",
    "insulin glargine",
    "sumatriptan",
    "methotrexate",
    "furosemide",
    "levothyroxine",
    "sertraline",
    "allopurinol",
    "physical therapy",
    "prednisone",
    "ferrous sulfate",
    "cephalexin",
    "heparin",
    "topical corticosteroids",
    "levetiracetam",
    "coronary artery bypass grafting",
    "lumpectomy",
    "intravenous antibiotics",
    "atorvastatin",
    "knee replacement",
]
TEMPLATES = [
    "The patient has a history of {D} treated with {T}.",
    "{T} was started for {D}.",
    "Assessment: {D}. Plan: continue {T} and follow up in 3 months.",
    "She was admitted with {D} and received {T}.",
    "No evidence of {D}. Continue {T} as before.",
    "He reports that {T} controls his {D} well.",
    "Diagnosis: {D}, managed with {T} and lifestyle changes.",
    "Family history is significant for {D}.",
    "Medications: {T} daily.",
    "The vital signs are stable and the patient is afebrile.",
]
HEADER = "SYNTHETIC sample written for clinical-ner tests and the demo; not real patient data."


def _fill(template: str, rng: random.Random) -> dict[str, object]:
    text, spans = "", []
    pos = 0
    while pos < len(template):
        brace = template.find("{", pos)
        if brace < 0:
            text += template[pos:]
            break
        text += template[pos:brace]
        key = template[brace + 1]
        value = rng.choice(DISEASES if key == "D" else TREATMENTS)
        if text == "":
            value = value[0].upper() + value[1:]
        spans.append([len(text), len(text) + len(value), "DISEASE" if key == "D" else "TREATMENT"])
        text += value
        pos = brace + 3
    return {"text": text, "label": spans}


def main() -> None:
    here = Path(__file__).parent
    rng = random.Random(7)
    records = [_fill(rng.choice(TEMPLATES), rng) for _ in range(240)]
    with open(here / "synthetic_annotations.jsonl", "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps({**record, "meta": "synthetic"}) + "\n")
    notes = []
    for i in range(40):
        sentences = [_fill(rng.choice(TEMPLATES), rng)["text"] for _ in range(rng.randint(3, 8))]
        notes.append({"note_id": f"synthetic-{i:03d}", "text": " ".join(sentences)})
    with open(here / "synthetic_notes.jsonl", "w", encoding="utf-8") as out:
        for note in notes:
            out.write(json.dumps(note) + "\n")
    # README.md is written by hand: it lists every bundled file, not only these two.


if __name__ == "__main__":
    main()
