"""Every state machine the app synthesizes runs on the local interpreter of `make run`.

The local ASL interpreter (`clinical_ner_local.asl`) implements only what our synthesized
definitions use and rejects the rest. These tests check each synthesized definition (dev and
prod) statically, so a definition that starts using a construct the interpreter lacks (a Map
state, another intrinsic, a callback task...) fails `make test` rather than `make run` half-way;
the fix is to add the construct to the interpreter (docs/local-mode.md) or not to use it.
"""

from __future__ import annotations

import pytest

from clinical_ner_local.asl import StateMachine, TaskRegistry, check_supported
from clinical_ner_local.cfn import CloudAssembly
from clinical_ner_local.runner import GLUE_SYNC, SNS_PUBLISH, TRAIN_SYNC, TRANSFORM_SYNC


@pytest.fixture(scope="module", params=["dev", "prod"])
def assembly(request) -> CloudAssembly:
    synth = request.getfixturevalue(request.param)
    return CloudAssembly.from_directory(synth.outdir)


def test_every_synthesized_state_machine_passes_the_static_check(assembly):
    machines = assembly.state_machines()
    assert {m.stack.rsplit("-", 1)[-1] for m in machines} >= {"Training", "Extraction"}
    for info in machines:
        check_supported(info.definition)  # raises UnsupportedAslError naming state and field


def test_every_task_has_a_local_handler_in_the_runner(assembly):
    """The runner's registrations (`runner.LocalPipeline`) cover every Task Resource."""
    registry = TaskRegistry()
    for resource in (GLUE_SYNC, TRAIN_SYNC, TRANSFORM_SYNC, SNS_PUBLISH):
        registry.register(resource, lambda params, ctx: params)
    for fn in assembly.lambda_functions():
        registry.register_lambda(fn.function_name, lambda event, ctx: event)
    for info in assembly.state_machines():
        # raises MissingTaskHandlerError listing each Task no handler is registered for
        StateMachine(info.definition, registry, name=info.name).check_handlers()
