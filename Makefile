# The two commands a newcomer needs: `make run` and `make test`. Everything else is a step of them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit functional bench fuzz chaos chaos-small scan deps clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

node_modules/.bin/azurite: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

deps: $(STAMP) node_modules/.bin/azurite

## make run: local stack (Azurite, Exchange simulator, Functions runner), samples provisioned, statuses shown
run: deps
	$(PY) -m localrun

## make test: lint, type check, every test (starts Azurite itself unless AZURITE_CONNECTION_STRING is set)
test: deps lint typecheck
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy shared exosim localrun bench chaos tests function_app.py

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

bench: deps
	$(PY) -m bench

## make fuzz: 200,000 generated hostile inputs to the notice parser (a few minutes; make test runs a few hundred)
fuzz: $(STAMP)
	$(PY) -m tests.fuzz --examples 200000

## make chaos: the reliability suite (crashes, outages, faults, mutated notices), full size, about 10 minutes
chaos: deps
	$(PY) -m chaos

## make chaos-small: the same scenarios at CI size (a couple of minutes)
chaos-small: deps
	$(PY) -m chaos --small

scan:
	bash scripts/checkov.sh

clean:
	rm -rf $(VENV) .venv-scan node_modules .run .mypy_cache .ruff_cache .pytest_cache .hypothesis
