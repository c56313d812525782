# The two commands: `make train` and `make test`. Everything runs in .venv, made on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-installs only when pyproject.toml changes.
STAMP := $(VENV)/.installed-stamp

ARGS ?=
PYTEST_ARGS ?=
# `make test` runs its tests in parallel processes (pytest-xdist), one per core up to 8; each
# test runs torch on one thread (tests/conftest.py). TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= auto

.PHONY: install train eval test test-quick test-slow test-gpu rename lint precommit format benchmark clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all]'
	touch $(STAMP)

## make train ARGS="model=bilstm trainer.max_epochs=20"
train: install
	$(BIN)/python scripts/train.py $(ARGS)

## make eval ARGS="ckpt_path=logs/train/runs/<time>/checkpoints/last.ckpt"
eval: install
	$(BIN)/python scripts/eval.py $(ARGS)

## The default suite: fast, no GPU, no network; tests spread over the cores (TEST_WORKERS).
test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --maxprocesses=8 $(PYTEST_ARGS)

## A fork's first feedback in about a minute: every config composes, the config checks refuse
## bad values, one training step of each task (tests marked `quick`).
test-quick: install
	$(BIN)/python -m pytest -m "quick and not slow and not gpu" $(PYTEST_ARGS)

## Long training runs (results, fault injection).
test-slow: install
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

## CUDA tests (skipped without a GPU).
test-gpu: install
	$(BIN)/python -m pytest -m gpu $(PYTEST_ARGS)

## ruff lint, ruff format check and mypy (settings in pyproject.toml); changes no file.
lint: install
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/ruff format --check src tests scripts benchmarks
	$(BIN)/mypy src benchmarks

## Installs the git hook (.pre-commit-config.yaml: ruff, ruff format, mypy on every commit),
## then runs it once on every file.
precommit: install
	$(BIN)/pre-commit install
	$(BIN)/pre-commit run --all-files

## make rename NAME=myproj: the distribution's name in pyproject.toml (and its `all` extra),
## the wandb project and the install lines of the docs; the import package stays `seqlab`.
## Before `make install`, which would install the old name. NAME is taken from the command line
## only: some shells (WSL) export NAME as the machine's name.
rename:
	$(PYTHON) scripts/rename.py '$(if $(filter command line,$(origin NAME)),$(NAME))'

format: install
	$(BIN)/ruff check --fix src tests scripts benchmarks
	$(BIN)/ruff format src tests scripts benchmarks

benchmark: install
	$(BIN)/python scripts/benchmark.py $(ARGS)

clean:
	rm -rf logs .pytest_cache .hypothesis .ruff_cache .mypy_cache
