# The two set-up commands of the README are `make serve` and `make test`; both create
# the virtual environment on first use, with every extra (`.[all,dev]`). Override
# PYTHON to pick another interpreter. `make test` also builds a second, throw-away
# virtual environment with the base install only (tests/test_base_install.py).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The scanners live apart: checkov's pins conflict with the dev tools (requirements-scan.txt).
SCAN_VENV ?= .venv-scan
SCAN_STAMP := $(SCAN_VENV)/.installed
DOCKERFILES := docker/Dockerfile.controller docker/Dockerfile.function-cpu docker/Dockerfile.function-gpu

.PHONY: serve test lint typecheck scan pytest images bench venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	$(BIN)/python -m pip check
	touch $(STAMP)

venv: $(STAMP)

$(SCAN_STAMP): requirements-scan.txt
	test -x $(SCAN_VENV)/bin/python || $(PYTHON) -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/python -m pip install --quiet -r requirements-scan.txt
	$(SCAN_VENV)/bin/python -m pip check
	touch $(SCAN_STAMP)

## Run the main job: the edge controller daemon on its embedded defaults.
serve: $(STAMP)
	$(BIN)/stoic serve

## Run the whole test suite: lint, type check, manifest and Dockerfile scan, tests.
test: lint typecheck scan pytest

lint: $(STAMP)
	$(BIN)/ruff check stoic tests benchmarks
	$(BIN)/ruff format --check stoic tests benchmarks
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy stoic

## Static checks of deploy/ and docker/ (offline): every finding fixed or justified in place.
scan: $(SCAN_STAMP)
	$(SCAN_VENV)/bin/hadolint $(DOCKERFILES)
	$(SCAN_VENV)/bin/checkov --skip-download --quiet --compact --framework kubernetes -d deploy
	$(SCAN_VENV)/bin/checkov --skip-download --quiet --compact --framework dockerfile -d docker

pytest: $(STAMP)
	$(BIN)/pytest -q

## Build the controller and CPU function images with podman and smoke-test them (root).
images:
	bash docker/build-images.sh

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(SCAN_VENV) .mypy_cache .pytest_cache .ruff_cache build *.egg-info
