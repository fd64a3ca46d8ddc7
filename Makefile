# Two entry points (see README.md): `make quickstart` and `make test`.
# Each creates or updates the virtual environment in $(VENV) itself.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?= -m "not slow"
# The venv's console scripts (mlflow, uvicorn, saved_model_cli) for every recipe.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: venv quickstart test test-slow test-all clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

quickstart: $(STAMP)
	$(PY) -m pipeline.quickstart

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

# pytest exits 5 when no test is marked slow; that is not a failure.
test-slow: $(STAMP)
	$(PY) -m pytest -m slow || test $$? -eq 5

test-all: $(STAMP)
	$(PY) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
