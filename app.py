#!/usr/bin/env python3
"""CDK entry point: ``cdk synth -c stage=dev|staging|prod`` (default dev).

Per-stage settings come from `clinical_ner.pipeline.stage_config`; ``-c alarm_email=...`` and
``-c approval_mode=auto|manual`` override the stage defaults. cdk-nag (AwsSolutions + HIPAA
Security) runs on every synth and fails it on any unacknowledged finding.
"""

from aws_cdk import App

from stacks.stage import build_app

app = App()
build_app(app)
app.synth()
