# recsys-airflow: `make demo` and `make test` do all set-up on a fresh machine with Python 3.11.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Local Airflow: inside the repo (git-ignored), SQLite metadata DB, no examples.
export AIRFLOW_HOME := $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export PATH := $(BIN):$(PATH)

DEMO_DAYS ?= 14
# uv installs the pinned set (constraints.txt) in about half pip's time; pip only installs uv itself.
UV_VERSION := 0.13.8

.PHONY: help install jdbc-drivers browser demo test lint format airflow-home constraints clean serve airflow

help:
	@echo "make demo   - install, seed the embedded source DB, extract the last $(DEMO_DAYS) days, train, show the result"
	@echo "make test   - install and run the whole test suite (ruff + pytest, incl. the real-Airflow e2e tests)"
	@echo "make airflow - airflow standalone on this repo (UI :8080) to trigger the DAGs from their forms"
	@echo "make serve MODEL=<dir|gs://|s3://> - run the prediction server on :8080 (default: the champion)"
	@echo "make lint   - ruff check + format check"
	@echo "make clean  - remove .venv and the local AIRFLOW_HOME"

install: $(STAMP) jdbc-drivers

# Java 17 runs Spark; the JDBC drivers come from Debian (extraction_backend=spark-local and its tests).
JDBC_JARS := /usr/share/java/postgresql.jar /usr/share/java/mariadb-java-client.jar
jdbc-drivers:
	@if ! ls $(JDBC_JARS) >/dev/null 2>&1 || ! command -v java >/dev/null; then \
		echo "== installing Java 17 and the JDBC drivers (Debian packages)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q openjdk-17-jre-headless libpostgresql-jdbc-java libmariadb-java; \
	fi

# Debian's Chromium, driven by Playwright (executable_path) in the UI tests: no browser download.
browser:
	@if ! command -v chromium >/dev/null; then \
		echo "== installing Debian's chromium (UI tests)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium; \
	fi

$(STAMP): requirements.txt requirements-dev.txt requirements-serving.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==26.3" "uv==$(UV_VERSION)"
	$(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode \
		-r requirements.txt -r requirements-dev.txt -r requirements-serving.txt -c constraints.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

airflow-home: install
	mkdir -p $(AIRFLOW_HOME)/data
	$(BIN)/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || (cat $(AIRFLOW_HOME)/db-migrate.log; exit 1)
	$(BIN)/python -m recsys_devtools.demo setup

demo: airflow-home
	@echo "== [1/6] seeding the embedded source database (synthetic, 30 days)"
	$(BIN)/python -m recsys_devtools.seed --url sqlite:///$(AIRFLOW_HOME)/data/source.db --replace synthetic --days 30 --malformed-fraction 0.002
	@echo "== [2/6] running recsys_extract for the last $(DEMO_DAYS) days"
	AIRFLOW__LOGGING__LOGGING_LEVEL=WARNING $(BIN)/python -m recsys_devtools.demo extract --days $(DEMO_DAYS)
	$(BIN)/python -m recsys_devtools.demo summary
	@echo "== [3/6] training the two-tower model and the two-stage policy, serving the best on validation, gating, exporting (recsys_two_tower)"
	AIRFLOW__LOGGING__LOGGING_LEVEL=WARNING $(BIN)/python -m recsys_devtools.demo train --days $(DEMO_DAYS) 2> $(AIRFLOW_HOME)/train.log \
		|| (tail -30 $(AIRFLOW_HOME)/train.log; exit 1)
	@echo "== [4/6] serving the champion with the prediction server (the serving container's entrypoint)"
	$(BIN)/python -m recsys_devtools.demo_cloud serve 2> $(AIRFLOW_HOME)/serve.log || (tail -30 $(AIRFLOW_HOME)/serve.log; exit 1)
	@echo "== [5/6] + [6/6] recsys_vertex_deploy and recsys_personalize against EMULATED Vertex AI / Personalize / S3"
	AIRFLOW__LOGGING__LOGGING_LEVEL=WARNING $(BIN)/python -m recsys_devtools.demo_cloud emulated 2> $(AIRFLOW_HOME)/emulated.log \
		|| (tail -30 $(AIRFLOW_HOME)/emulated.log; exit 1)
	@echo "== done: make airflow opens the UI on this state"

# The whole stack in one process (SimpleAuthManager; the admin password is printed), UI on :8080.
airflow: airflow-home
	@echo "== airflow standalone: UI on http://localhost:8080 (AIRFLOW_HOME=$(AIRFLOW_HOME); DAGs paused at creation)"
	$(BIN)/airflow standalone

test: install browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python tests/suites.py $(PYTEST_ARGS)

# Serve an exported model locally, exactly as the serving container does (AIP_* env honoured).
MODEL ?= $(shell $(BIN)/python -c "import json,sys; print(json.load(open('$(AIRFLOW_HOME)/recsys-data/models/champion.json'))['model_dir'])" 2>/dev/null)
serve: install
	@test -n "$(MODEL)" || (echo "no model: pass MODEL=<exported model dir> or run make demo first"; exit 2)
	AIP_STORAGE_URI="$(MODEL)" $(BIN)/python -m recsys.serving

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Regenerate constraints.txt from a throw-away venv with the top-level requirements only.
constraints:
	rm -rf /tmp/recsys-constraints-venv
	$(PYTHON) -m venv /tmp/recsys-constraints-venv
	/tmp/recsys-constraints-venv/bin/pip install --quiet -r requirements.txt -r requirements-dev.txt \
		-r requirements-serving.txt
	( echo "# Full pinned set (Airflow's constraints convention), generated by 'make constraints' from a clean install"; \
	  echo "# of requirements.txt + requirements-dev.txt on Python 3.11. Do not edit by hand."; \
	  /tmp/recsys-constraints-venv/bin/pip freeze --exclude-editable ) > constraints.txt

clean:
	rm -rf $(VENV) $(AIRFLOW_HOME)
