# Two entry points for a fresh machine: `make run` (main job, local) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN_DIR ?= local-run

.PHONY: setup run test lint format benchmark clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip==25.3"
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip check
	touch $(STAMP)

setup: $(STAMP)

# The embedded default: train on the bundled synthetic annotations, extract the bundled
# synthetic notes, no AWS account needed.
run: setup
	$(VENV)/bin/clinical-ner train --train clinical_ner/samples/synthetic_annotations.jsonl \
		--output $(RUN_DIR)/model --max-steps 300 --seed 0
	$(VENV)/bin/clinical-ner extract --model $(RUN_DIR)/model \
		clinical_ner/samples/synthetic_notes.jsonl --output $(RUN_DIR)/extraction
	@echo "model: $(RUN_DIR)/model  extraction: $(RUN_DIR)/extraction"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint
	$(PY) -m pytest

benchmark: setup
	$(PY) benchmarks/benchmark_ner.py

clean:
	rm -rf $(VENV) $(RUN_DIR)
