"""Drug normaliser on the real pinned dictionary: brands, case, non-drugs, ids, persistence."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clinical_ner.model.drugs import DrugConcept, DrugNormaliser

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("drugs")
    DrugNormaliser.build().save(directory)  # about 1 s
    return directory


@pytest.fixture(scope="module")
def drugs(saved: Path) -> DrugNormaliser:
    return DrugNormaliser.load(saved)


def one(drugs: DrugNormaliser, mention: str) -> DrugConcept | None:
    (found,) = drugs.normalise([mention])
    return found


@pytest.mark.parametrize(
    ("brand", "generic", "drugbank"),
    [
        ("Coumadin", "Warfarin", "DB00682"),
        ("Lasix", "Furosemide", "DB00695"),
        ("Tylenol", "Acetaminophen", "DB00316"),
        ("Plavix", "Clopidogrel", "DB00758"),
        ("Zofran", "Ondansetron", None),
    ],
)
def test_brand_names_normalise_to_the_generic(drugs, brand, generic, drugbank):
    found = one(drugs, brand)
    assert found is not None and found.name == generic and found.is_synonym
    if drugbank:
        assert found.drugbank_id == drugbank


def test_generic_name_is_not_a_synonym_and_carries_ids(drugs):
    found = one(drugs, "metoprolol")
    assert found == DrugConcept(
        name="Metoprolol",
        mesh_id=found.mesh_id,
        drugbank_id="DB00264",
        nhs_url="https://www.nhs.uk/medicines/metoprolol/",
        medline_plus_id="a682864",
        wikipedia_url="https://en.wikipedia.org/wiki/Metoprolol",
        is_synonym=False,
    )
    assert found.mesh_id and found.mesh_id.startswith("D")


@pytest.mark.parametrize("mention", ["lisinopril", "LISINOPRIL", "Lisinopril", "  lisinopril  "])
def test_case_and_spacing_insensitive(drugs, mention):
    found = one(drugs, mention)
    assert found is not None and found.name == "Lisinopril"


@pytest.mark.parametrize(
    ("mention", "name"),
    [
        ("potassium chloride", "Potassium chloride"),  # multiword name
        ("Potassium  Chloride", "Potassium chloride"),
        ("IV Lasix", "Furosemide"),  # a drug name inside a longer span
        ("antibiotics", "Anti-Bacterial Agents"),
        ("ASA", "Aspirin"),  # clinical abbreviation (EXTRA_NAMES)
        ("Demerol", "Meperidine"),
    ],
)
def test_multiword_inner_and_abbreviated_names(drugs, mention, name):
    found = one(drugs, mention)
    assert found is not None and found.name == name


@pytest.mark.parametrize(
    "mention",
    ["appendectomy", "physical therapy", "Foley catheter", "", "   ", "x" * 100_000, "✓✓"],
)
def test_non_drugs_give_none(drugs, mention):
    assert one(drugs, mention) is None


def test_results_keep_order_and_cache(drugs):
    mentions = ["Coumadin", "appendectomy", "coumadin"]
    first = drugs.normalise(mentions)
    assert [f.name if f else None for f in first] == ["Warfarin", None, "Warfarin"]
    assert drugs.normalise(mentions) == first
    assert drugs.normalise([]) == []


def test_round_trip_no_pickle(saved, drugs, tmp_path):
    mentions = ["Coumadin", "metoprolol", "appendectomy", "IV Lasix"]
    drugs.save(tmp_path)
    assert DrugNormaliser.load(tmp_path).normalise(mentions) == drugs.normalise(mentions)
    (path,) = tmp_path.iterdir()
    assert path.name.endswith(".json.gz") and path.read_bytes()[:2] == b"\x1f\x8b"
    assert path.stat().st_size < 3_000_000


LOAD_WITHOUT_PACKAGE = """
import json, sys
sys.modules["drug_named_entity_recognition"] = None  # the runtime may not have it
from pathlib import Path
from clinical_ner.model.drugs import DrugNormaliser
found = DrugNormaliser.load(Path(sys.argv[1])).normalise(["Coumadin"])[0]
print(json.dumps([found.name, found.drugbank_id]))
"""


def test_load_needs_no_package(saved):
    done = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_PACKAGE, str(saved)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    assert json.loads(done.stdout) == ["Warfarin", "DB00682"]


@pytest.mark.parametrize(
    ("brand", "concept"),
    [
        ("Keflex", "cephalexin"),
        ("Augmentin", "amoxicillin"),
        ("Norco", "hydrocodone"),
        ("Vicodin", "hydrocodone"),
        ("Percocet", "oxycodone"),
        ("Tylenol with Codeine", "codeine"),
    ],
)
def test_common_brands_the_dictionary_lacks(drugs, brand, concept):
    found = one(drugs, brand)
    assert found is not None and concept in found.name.lower() and found.is_synonym
