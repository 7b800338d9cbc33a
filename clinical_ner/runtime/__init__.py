"""Entry glue for what AWS runs: SageMaker train and serve, extraction steps, endpoint capture."""
