# Two commands on a fresh machine: `make demo` (installs into .venv, runs the demo)
# and `make test`. Reference motion is read from ../shared/cmu-mocap unless
# MOCAPACT_MOCAP_PATH says otherwise.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export MOCAPACT_MOCAP_PATH ?= $(abspath ../shared/cmu-mocap)
export MUJOCO_GL ?= egl
export HF_HUB_OFFLINE ?= 1

# The tested version of every package: what install (and so CI) puts in .venv; `make lock` refreshes it.
LOCK := requirements.lock
LOCK_VENV := .venv-lock

.PHONY: install lock demo test lint format bench clean

$(VENV)/.installed: pyproject.toml $(LOCK)
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c $(LOCK) pip
	# Exactly the locked versions ([all] and dev: the CPU build of torch among them), then the project alone.
	$(BIN)/pip install --quiet -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

install: $(VENV)/.installed

# A fresh resolution of pyproject.toml's ranges in a scratch venv, written as the new lock.
lock:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade pip
	# The CPU build of torch first, so the [train] extra's torch range installs nothing more; then every extra.
	$(LOCK_VENV)/bin/pip install --quiet torch==2.13.0
	$(LOCK_VENV)/bin/pip install --quiet -e ".[all,dev]"
	{ printf '%s\n' '# Tested versions of every package in .venv: what `make install` (and so CI) installs, exactly.' \
	    '# Refresh with `make lock` (a fresh resolution of pyproject.toml'"'"'s ranges in a scratch venv), then run the tests.'; \
	  $(LOCK_VENV)/bin/pip freeze --all --exclude-editable; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf $(LOCK_VENV)

demo: install
	$(BIN)/python -m mocapact_envs.tools.demo --out-dir demo_output

test: install
	$(BIN)/python -m pytest -n 2 --dist loadgroup tests

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

bench: install
	$(BIN)/python benchmarks/env_throughput.py

clean:
	rm -rf $(VENV) $(LOCK_VENV) demo_output .pytest_cache
