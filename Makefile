# Two entry points (see README): `make run` and `make test`. Both create the venv on first use.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup run test lint test-cross bench clean-venv sysdeps-run sysdeps-test

# Debian packages: bubblewrap (the code sandbox of the quality suite) for runs; Debian's chromium
# (headless DOM check of the HTML report) for tests too. Installed when missing and we are root.
SYSDEPS_RUN := bwrap:bubblewrap
SYSDEPS_TEST := $(SYSDEPS_RUN) chromium:chromium ip:iproute2
define install_missing
	@missing=""; for pair in $(1); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
		command -v $$cmd >/dev/null || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing:$$missing"; \
			apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
		else echo "edgebench: note: missing Debian packages:$$missing (apt-get install$$missing)"; fi; \
	fi
endef

sysdeps-run:
	$(call install_missing,$(SYSDEPS_RUN))

sysdeps-test:
	$(call install_missing,$(SYSDEPS_TEST))

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v cmake >/dev/null || { echo "edgebench: error: cmake not found (Debian: apt-get install cmake g++)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

# Set-up included: builds (or reuses) llama.cpp, assembles the default model, measures.
run: setup sysdeps-run
	$(BIN)/edgebench run

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# ruff + mypy (strict on the package) + every test, against the real llama.cpp build.
test: sysdeps-test lint
	$(BIN)/pytest -m "not cross"

# aarch64 rk3588/rpi5 presets, cross-compiled and run under qemu-user (slow; installs the toolchain).
test-cross: setup
	@command -v aarch64-linux-gnu-g++ >/dev/null && command -v qemu-aarch64 >/dev/null || \
		apt-get install -y g++-aarch64-linux-gnu qemu-user
	$(BIN)/pytest -m cross -v

clean-venv:
	rm -rf $(VENV)
