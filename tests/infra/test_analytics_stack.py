"""AnalyticsStack: tables with partition projection, enforced KMS workgroup, named queries."""

from __future__ import annotations

import json

from clinical_ner.data.analytics import QUERIES, REVIEW_QUERIES
from clinical_ner.data.schemas import ENTITY_SCHEMA, NOTE_SCHEMA
from stacks.glue_tables import glue_type


def _tables(synth):
    return {
        r["Properties"]["TableInput"]["Name"]: r["Properties"]
        for r in synth.resources(synth.stacks.analytics, "AWS::Glue::Table").values()
    }


def test_entities_and_notes_tables_follow_the_schemas_with_projection(synth):
    tables = _tables(synth)
    assert set(tables) == {"entities", "notes", "reviews"}  # reviews: test_review_stack.py
    for name, schema in (("entities", ENTITY_SCHEMA), ("notes", NOTE_SCHEMA)):
        props = tables[name]
        assert props["DatabaseName"] == synth.stacks.data_prep.database_name
        ti = props["TableInput"]
        cols = [c["Name"] for c in ti["StorageDescriptor"]["Columns"]]
        assert cols == [f.name for f in schema if f.name != "dt"]
        types = {c["Name"]: c["Type"] for c in ti["StorageDescriptor"]["Columns"]}
        assert types == {f.name: glue_type(f.type) for f in schema if f.name != "dt"}
        assert [k["Name"] for k in ti["PartitionKeys"]] == ["dt"]
        params = ti["Parameters"]
        assert params["projection.enabled"] == "true"
        assert params["projection.dt.type"] == "date"
        assert params["projection.dt.format"] == "yyyy-MM-dd"
        assert f"/inference/{name}/dt=${{dt}}/" in json.dumps(params["storage.location.template"])
        assert "Parquet" in ti["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"]
    # quarantine (and curated_notes) come from the data-prep stack in the same database
    prep = synth.resources(synth.stacks.data_prep, "AWS::Glue::Table")
    assert "quarantine" in {r["Properties"]["TableInput"]["Name"] for r in prep.values()}


def test_workgroup_enforces_kms_results_and_a_scan_limit(synth):
    (wg,) = synth.resources(synth.stacks.analytics, "AWS::Athena::WorkGroup").values()
    cfg = wg["Properties"]["WorkGroupConfiguration"]
    assert cfg["EnforceWorkGroupConfiguration"] is True
    assert cfg["BytesScannedCutoffPerQuery"] >= 10 * 1024**3
    assert cfg["PublishCloudWatchMetricsEnabled"] is True
    result = cfg["ResultConfiguration"]
    assert result["EncryptionConfiguration"]["EncryptionOption"] == "SSE_KMS"
    assert result["EncryptionConfiguration"]["KmsKey"]  # the lake key (cross-stack import)
    assert "AthenaResults" in str(result["OutputLocation"])


def test_named_queries_are_the_core_sql_in_the_workgroup_and_database(synth):
    queries = {
        r["Properties"]["Name"]: r["Properties"]
        for r in synth.resources(synth.stacks.analytics, "AWS::Athena::NamedQuery").values()
    }
    assert set(queries) == {q.name for q in (*QUERIES, *REVIEW_QUERIES)}
    for q in QUERIES:
        props = queries[q.name]
        assert props["QueryString"] == q.sql
        assert props["Database"] == synth.stacks.data_prep.database_name
        assert props["WorkGroup"] == {"Ref": "WorkGroup"}


def test_structured_columns_are_hive_arrays_of_structs_athena_can_unnest(synth):
    columns = {
        c["Name"]: c["Type"]
        for c in _tables(synth)["entities"]["TableInput"]["StorageDescriptor"]["Columns"]
    }
    assert columns["icd10cm_candidates"] == (
        "array<struct<code:string,description:string,score:float>>"
    )
    assert columns["attributes"] == (
        "array<struct<type:string,text:string,start_char:int,end_char:int>>"
    )
    assert columns["trait_triggers"] == (
        "array<struct<trait:string,trigger:string,start_char:int,end_char:int,source:string>>"
    )
    for flag in ("negated", "historical", "hypothetical", "family", "uncertain"):
        assert columns[flag] == "boolean"
    for flat in ("section", "icd10cm_code", "icd10cm_chapter", "drug_name", "strength", "dosage"):
        assert columns[flat] == "string"
