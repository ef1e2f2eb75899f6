# Two commands on a fresh machine: `make demo` (installs into .venv, runs the demo)
# and `make test`. Reference motion is read from ../shared/cmu-mocap unless
# MOCAPACT_MOCAP_PATH says otherwise.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export MOCAPACT_MOCAP_PATH ?= $(abspath ../shared/cmu-mocap)
export MUJOCO_GL ?= egl
export HF_HUB_OFFLINE ?= 1

.PHONY: install demo test lint format bench clean

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch first, so the project's torch range installs nothing more.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python -m mocapact_envs.demo --out-dir demo_output

test: install
	$(BIN)/python -m pytest -n 2 --dist loadgroup tests

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

bench: install
	$(BIN)/python benchmarks/env_throughput.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache
