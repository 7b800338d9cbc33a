"""CDK stacks of the clinical NER system: one module per stack, assembled by `stacks.stage`."""
