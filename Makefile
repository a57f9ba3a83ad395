# The two set-up commands of the README are `make serve` and `make test`; both create
# the virtual environment on first use, with every extra (`.[all,dev]`). Override
# PYTHON to pick another interpreter. `make test` also builds a second, throw-away
# virtual environment with the base install only (tests/test_base_install.py).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint typecheck pytest bench venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	$(BIN)/python -m pip check
	touch $(STAMP)

venv: $(STAMP)

## Run the main job: the edge controller daemon on its embedded defaults.
serve: $(STAMP)
	$(BIN)/stoic serve

## Run the whole test suite: lint, type check, tests.
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check stoic tests benchmarks
	$(BIN)/ruff format --check stoic tests benchmarks
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy stoic

pytest: $(STAMP)
	$(BIN)/pytest -q

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build *.egg-info
