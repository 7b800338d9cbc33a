"""Clinical NER core: the one package every runtime (CLI, Glue, Lambda, SageMaker) imports."""

__version__ = "0.1.0"
