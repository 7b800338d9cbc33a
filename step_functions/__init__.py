"""Step Functions state machine definitions (CDK constructs that build the chains)."""
