# Two entry points (see README): `make run` and `make test`. Both create the venv on first use.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup run test lint test-cross bench clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v cmake >/dev/null || { echo "edgebench: error: cmake not found (Debian: apt-get install cmake g++)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

# Set-up included: builds (or reuses) llama.cpp, assembles the default model, measures.
run: setup
	$(BIN)/edgebench run

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# ruff + mypy (strict on the package) + every test, against the real llama.cpp build.
test: lint
	$(BIN)/pytest

# aarch64 rk3588/rpi5 presets, cross-compiled and run under qemu-user (slow; installs the toolchain).
test-cross: setup
	@command -v aarch64-linux-gnu-g++ >/dev/null && command -v qemu-aarch64 >/dev/null || \
		apt-get install -y g++-aarch64-linux-gnu qemu-user
	$(BIN)/pytest -m cross -v

clean-venv:
	rm -rf $(VENV)
