# Two entry points for a fresh clone (see README Quickstart):
#   make quickstart   set up .venv and run the default pipeline (dvc repro)
#   make test         set up .venv with the test extras and run the test suite
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
# Telemetry off (see docs/tracking notes): Prefect, MLflow, DVC.
export DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1

.PHONY: setup setup-dev quickstart repro test bench

$(VENV)/.base: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -c constraints.txt -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(BIN)/pip install -c constraints.txt -e ".[dev,tfhub]"
	touch $@

setup: $(VENV)/.base
setup-dev: $(VENV)/.dev

quickstart: setup repro

repro:
	dvc repro
	python -m t2i.summary

test: setup-dev
	python -m pytest -q

bench: setup-dev
	python benchmarks/embed.py
	python benchmarks/train_step.py
