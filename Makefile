# Two entry points for a fresh machine: `make run` (main job, local) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
RUN_DIR ?= local-run

# Offline-friendly CDK/jsii settings (no telemetry, no version check, no Node EOL banner).
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export CDK_DISABLE_CLI_TELEMETRY := true
export CDK_DISABLE_VERSION_CHECK := 1

.PHONY: setup setup-python setup-node setup-java setup-browser run test lint format synth benchmark clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip==25.3"
	$(PY) -m pip install --quiet -e ".[dev,infra]"
	$(PY) -m pip check
	touch $(STAMP)

setup-python: $(STAMP)

# The CDK CLI and asl-validator, pinned in package.json / package-lock.json.
$(NODE_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm (Node >= 20) is required: see README" >&2; exit 1; }
	npm ci --silent --no-audit --no-fund
	touch $(NODE_STAMP)

setup-node: $(NODE_STAMP)

# Local Spark (the Glue jobs' tests) needs a Java runtime.
setup-java:
	@command -v java >/dev/null || { \
		echo "installing a Java runtime for local Spark"; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless; }

# The workbench's browser test (tests/browser/) drives Debian's Chromium through Selenium.
setup-browser:
	@{ command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || { \
		echo "installing chromium and chromium-driver for the browser test"; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver; }

setup: setup-python setup-node setup-java setup-browser

# The embedded default: the whole loop on this machine, no AWS account. Trains on the bundled
# synthetic annotations through the CDK-synthesized state machine, deploys a local endpoint,
# extracts the synthetic notes, runs the Athena queries in DuckDB and the drift monitor.
run: setup-python setup-node setup-java  # the browser is only for the tests
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/clinical-ner local run --output $(RUN_DIR)

lint: setup-python
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup-python
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: setup lint
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest

synth: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" npx cdk synth --no-notices --quiet

benchmark: setup-python
	$(PY) benchmarks/benchmark_ner.py

clean:
	rm -rf $(VENV) $(RUN_DIR) node_modules cdk.out
