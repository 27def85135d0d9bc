# Two entry points for a fresh clone (see README Quickstart):
#   make quickstart   set up .venv and run the default pipeline (dvc repro)
#   make test         set up .venv with the test extras and run the test suite
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
# Telemetry off (README, Telemetry): Prefect, MLflow, DVC.
export DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1

.PHONY: setup setup-dev quickstart repro test bench serve plots browser-check

# Offline page for `dvc plots show` (Vega inlined, ~0.9 MB: generated, not committed; .dvc/config names it)
PLOTS_TEMPLATE := .dvc/tmp/t2i-plots-template.html

$(VENV)/.base: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -c constraints.txt -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(BIN)/pip install -c constraints.txt -e ".[dev,tfhub]"
	touch $@

$(PLOTS_TEMPLATE): $(VENV)/.base
	$(BIN)/python -m t2i.dvc_plots $@

setup: $(VENV)/.base $(PLOTS_TEMPLATE)
setup-dev: $(VENV)/.dev $(PLOTS_TEMPLATE)

quickstart: setup repro

repro:
	dvc repro
	python -m t2i.summary

test: setup-dev browser-check
	python -m pytest -q

# The browser tests drive Debian's `chromium` (apt-get install chromium; .ci/run does it).
browser-check:
	@command -v chromium >/dev/null || [ -x /usr/bin/chromium ] || \
	  echo "warning: no chromium: the browser tests will skip (fail under CI=true); apt-get install chromium"

serve: setup
	t2i serve

plots: setup
	dvc plots show

bench: setup-dev
	python benchmarks/embed.py
	python benchmarks/train_step.py
