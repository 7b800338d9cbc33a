"""Stacks take the label set from the model's metadata: the publish step gets the transform
model's artifact (and may read it), training metrics and Glue tables name no label."""

from __future__ import annotations

import json
import re

from clinical_ner.data.schemas import ENTITY_SCHEMA, NOTE_SCHEMA
from step_functions.training import TRAINING_METRICS

LABEL_WORDS = re.compile(r"DISEASE|TREATMENT|SYMPTOM", re.IGNORECASE)


def _definition(synth, stack) -> dict:
    (sm,) = synth.resources(stack, "AWS::StepFunctions::StateMachine").values()
    raw = sm["Properties"]["DefinitionString"]
    if isinstance(raw, str):
        return json.loads(raw)
    return json.loads("".join(p if isinstance(p, str) else "token" for p in raw["Fn::Join"][1]))


def test_publish_step_gets_the_transform_models_artifact(dev):
    states = _definition(dev, dev.stacks.extraction)["States"]
    payload = states["PublishExtractions"]["Parameters"]  # payload_response_only: the payload
    assert payload["model_data_url.$"] == "$.model.model_data_url"  # ResolveModel's result
    assert states["ResolveModel"]["ResultPath"] == "$.model"


def test_publish_function_may_read_the_model_artifact(dev):
    stack = dev.stacks.extraction
    publish = [
        res["Properties"]["PolicyDocument"]["Statement"]
        for lid, res in dev.resources(stack, "AWS::IAM::ManagedPolicy").items()
        if lid.startswith("PublishExtractions")
    ]
    assert publish, "the publish function's policy"
    reads = [s for s in publish[0] if s["Effect"] == "Allow" and "s3:GetObject" in json.dumps(s)]
    assert any("/models/*" in json.dumps(s["Resource"]) for s in reads)


def test_training_metric_definitions_name_no_label(dev):
    states = _definition(dev, dev.stacks.training)["States"]
    for name in ("Train", "TrainAgainstProduction"):
        spec = states[name]["Parameters"]["AlgorithmSpecification"]
        names = [m["Name"] for m in spec["MetricDefinitions"]]
        assert names == list(TRAINING_METRICS)
        assert not [n for n in names if LABEL_WORDS.search(n)]
    assert {"dev_min_label_f1", "test_min_label_f1"} <= set(TRAINING_METRICS)


def test_glue_tables_have_no_per_label_columns(dev):
    tables = {
        r["Properties"]["TableInput"]["Name"]: r["Properties"]["TableInput"]
        for r in dev.resources(dev.stacks.analytics, "AWS::Glue::Table").values()
    }
    for name, schema in (("entities", ENTITY_SCHEMA), ("notes", NOTE_SCHEMA)):
        cols = tables[name]["StorageDescriptor"]["Columns"]
        assert [c["Name"] for c in cols] == [f.name for f in schema if f.name != "dt"]
        assert not [c["Name"] for c in cols if LABEL_WORDS.search(c["Name"])]
        assert not LABEL_WORDS.search(tables[name]["Description"])
