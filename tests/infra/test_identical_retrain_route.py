"""The synthesized training state machine ends a retrain identical to production after Register.

Runs the definition as synthesized on the local ASL interpreter with the fakes of
`test_local_training_run`; the register fake answers like `registry.register_candidate` when
the candidate's model_version is production's.
"""

from __future__ import annotations

from test_local_training_run import FakePipeline, assembly, execute  # noqa: F401 (fixture)


class IdenticalRetrain(FakePipeline):
    def register_model(self, event, context):
        self.record("register_model", event)
        return {
            "identical_to_production": True,
            "registered": False,
            "summary": "identical to production (m-abc), not registered",
            "production_package_arn": "arn:pkg/2",
            "model_version": "m-abc",
        }


def test_identical_retrain_ends_after_register_without_gate_or_deploy(assembly):  # noqa: F811
    url = "s3://lake/models/clinical-ner-dev-exec-0/output/model.tar.gz"
    fakes = IdenticalRetrain(assembly, production_model=url)
    result = execute(assembly, fakes, {"trigger": "drift", "dataset_version": "ds-2024-01-01"})
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    assert [name for name, _ in fakes.calls] == ["resolve_dataset", "train", "register_model"]
    entered = result.states_entered()
    assert entered[-2:] == ["IdenticalToProduction", "NotRegisteredIdentical"]
    assert result.output["register"]["summary"].startswith("identical to production")
    assert fakes.published == []


def test_a_registered_candidate_still_goes_to_the_gate(assembly):  # noqa: F811
    fakes = FakePipeline(assembly)  # its register answer has no identical_to_production
    result = execute(assembly, fakes, {"trigger": "manual", "dataset_version": "ds-2024-01-01"})
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    assert "IdenticalToProduction" in result.states_entered()
    assert "gate_model" in [name for name, _ in fakes.calls]
