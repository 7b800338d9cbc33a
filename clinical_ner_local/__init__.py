"""Local mode: run the system's pipelines on this machine without an AWS account.

`asl` executes Step Functions definitions (the ones CDK synthesizes), `cfn` reads them out of
a synthesized cloud assembly, `emulator` runs an embedded AWS API emulator (moto server) for
the handlers' boto3 calls.
"""
