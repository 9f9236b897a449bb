# The two commands of the README: `make run` and `make test`. Both create .venv when needed.
PYTHON ?= python3
VENV ?= .venv
# Every core: one training job per core. More jobs than cores (the old default, 4 on 2 cores)
# only time-shares the cores, and the run's "train s" then measure jobs sharing one.
CORES ?= all
BIN := $(VENV)/bin

.PHONY: run test lint format report rulegraph noop-benchmark tensorboard readme clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed, found " + sys.version' 
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: envs/requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r envs/requirements.txt
	touch $@

$(VENV)/.installed-test: envs/requirements-test.txt $(VENV)/.installed-run
	$(BIN)/python -m pip install --quiet -r envs/requirements-test.txt
	touch $@

run: $(VENV)/.installed-run
	$(BIN)/snakemake --cores $(CORES)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check workflow tests
	$(BIN)/ruff format --check workflow tests
	$(BIN)/mypy
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint

format: $(VENV)/.installed-test
	$(BIN)/ruff format workflow tests
	$(BIN)/snakefmt Snakefile rules

report: $(VENV)/.installed-run
	$(BIN)/snakemake --report report.html

# Every sample's event files (results/<model>/<sample>/tensorboard), one run per sample.
TENSORBOARD_PORT ?= 6006
tensorboard: $(VENV)/.installed-run
	$(BIN)/tensorboard --logdir results --port $(TENSORBOARD_PORT)

# The README's results and benchmark tables, from the last run's results/ (never typed by hand).
readme: $(VENV)/.installed-run
	PYTHONPATH=workflow $(BIN)/python -m dynsparse.readme README.md results

rulegraph: $(VENV)/.installed-run
	$(BIN)/snakemake --rulegraph mermaid-js > docs/rulegraph.mmd

noop-benchmark: $(VENV)/.installed-test
	$(BIN)/python tests/benchmarks/noop_rerun.py

clean:
	rm -rf build data results logs benchmarks .snakemake report.html
