"""clinical_ner.pipeline.stage_config: the typed per-stage settings every runtime imports."""

from __future__ import annotations

import dataclasses

import pytest

from clinical_ner.pipeline.stage_config import (
    LAKE,
    ApprovalMode,
    Stage,
    load_stage_config,
    stage_names,
)


def test_default_stage_is_dev():
    assert load_stage_config(None).stage is Stage.DEV
    assert stage_names() == ["dev", "staging", "prod"]


def test_prod_is_stricter_than_dev():
    dev, prod = load_stage_config("dev"), load_stage_config("PROD")
    assert dev.approval_mode is ApprovalMode.AUTO and prod.approval_mode is ApprovalMode.MANUAL
    assert not dev.retention.retain_on_delete and prod.retention.retain_on_delete
    assert prod.gate.f1_floor > dev.gate.f1_floor
    assert prod.gate.per_label_regression_tolerance < dev.gate.per_label_regression_tolerance
    assert prod.retention.raw_noncurrent_days >= 2190  # six years of raw PHI versions


def test_context_overrides():
    cfg = load_stage_config(
        "staging", {"alarm_email": "team@hospital.org", "approval_mode": "MANUAL"}
    )
    assert cfg.alarm_email == "team@hospital.org" and cfg.approval_mode is ApprovalMode.MANUAL
    assert load_stage_config("dev", {"alarm_email": ""}).alarm_email  # empty = keep default
    with pytest.raises(ValueError, match="unknown override"):
        load_stage_config("dev", {"f1_floor": 0.9})
    with pytest.raises(ValueError, match="not an e-mail"):
        load_stage_config("dev", {"alarm_email": "nobody"})


def test_unknown_stage_is_rejected():
    with pytest.raises(ValueError, match="unknown stage"):
        load_stage_config("qa")


@pytest.mark.parametrize(
    ("section", "field", "value", "message"),
    [
        ("drift", "severe", 0.05, "moderate < severe"),
        ("gate", "f1_floor", 0.0, "f1_floor"),
        ("serverless", "memory_mb", 1500, "memory_mb"),
        ("glue", "number_of_workers", 1, "number_of_workers"),
        ("retention", "log_group_days", 10, "log_group_days"),
        ("retention", "inference_ia_after_days", 10, "inference_ia_after_days"),
    ],
)
def test_invalid_values_are_rejected(section, field, value, message):
    cfg = load_stage_config("dev")
    broken = dataclasses.replace(getattr(cfg, section), **{field: value})
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(cfg, **{section: broken})


def test_json_round_trip_for_lambdas():
    cfg = load_stage_config("prod", {"alarm_email": "a@b.org"})
    assert type(cfg).from_json(cfg.to_json()) == cfg
    large = dataclasses.replace(cfg, tracking_server_size="Large")
    assert type(cfg).from_json(large.to_json()).tracking_server_size == "Large"


def test_tracking_server_size_is_one_sagemaker_offers():
    cfg = load_stage_config("dev")
    assert cfg.tracking_server_size == "Small"
    with pytest.raises(ValueError, match="tracking_server_size must be one of"):
        dataclasses.replace(cfg, tracking_server_size="XLarge")


def test_lake_layout_matches_the_architecture():
    assert LAKE.raw_notes == "raw/notes/" and LAKE.quarantine == "quarantine/"
    assert LAKE.curated_training == "curated/training/" and LAKE.models == "models/"
    assert LAKE.inference_entities == "inference/entities/"
    with pytest.raises(ValueError):
        dataclasses.replace(LAKE, raw_notes="raw/notes")
