# The two commands of the README's quickstart: `make train` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Installed once per change of pyproject.toml; the stamp files make reruns instant.
STAMP      := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# pytest-xdist workers: one per core (the tests use one torch thread each). PYTEST_WORKERS=0 runs serially.
PYTEST_WORKERS ?= auto

.PHONY: install train test lint format bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

train: $(STAMP)
	$(VENV)/bin/omniformer-train $(ARGS)

lint: $(TEST_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(TEST_STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test: lint
	$(PY) -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks $(ARGS)

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache build *.egg-info
