# chatgw: the two commands are `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
STATE_DIR ?= .chatgw

# AWS SAM CLI lives in a venv of its own: it is heavy and pins its own dependencies.
SAM_VERSION := 1.170.0
SAM_VENV := .venv-sam
SAM := SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam
SAM_STAMP := $(SAM_VENV)/.installed-$(SAM_VERSION)
# `sam build` without a container needs python3.13 on PATH: take it from PATH, else from pyenv.
PY313 = $(shell for c in "$$(command -v python3.13)" "$$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)"/versions/3.13*/bin/python3.13; do \
	[ -n "$$c" ] && "$$c" -c 'import sys; print(sys.executable)' 2>/dev/null && break; done)

.PHONY: install run test test-under-load lint typecheck unit build deploy bench bench-quick clean sam-install template-lint chromium

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/chatgw serve --host $(HOST) --port $(PORT) --state-dir $(STATE_DIR)

lint: install
	$(BIN)/ruff check handler tests bench
	$(BIN)/ruff format --check handler tests bench

typecheck: install
	$(BIN)/mypy

sam-install: $(SAM_STAMP)

$(SAM_STAMP):
	$(PY) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install -q --upgrade pip
	$(SAM_VENV)/bin/python -m pip install -q 'aws-sam-cli==$(SAM_VERSION)'
	touch $(SAM_STAMP)

template-lint: $(SAM_STAMP)
	$(SAM_VENV)/bin/cfn-lint template.yaml
	$(SAM) validate --lint --region us-east-1

build: $(SAM_STAMP)
	@if [ -z "$(PY313)" ]; then echo "make build: python3.13 not found on PATH or under pyenv; sam build (no container) needs it" >&2; exit 1; fi
	PATH="$(dir $(PY313)):$$PATH" $(SAM) build
	@# sam build ships no bytecode and /var/task is read-only, so every cold start would compile every
	@# module from source (measured: 2.4x the CPU of the init); unchecked-hash .pyc need no mtimes.
	"$(PY313)" -m compileall -q -j 0 --invalidation-mode unchecked-hash .aws-sam/build/Function

deploy: build
	$(SAM) deploy --guided

# CHATGW_TEST_STRICT=1: a tool a test needs (the SAM CLI, python3.13 for `sam build`) that is missing
# fails the run instead of skipping; CHATGW_TEST_WITHOUT=python3.13 leaves one out on purpose, by name.
test: lint typecheck template-lint chromium
	CHATGW_TEST_STRICT=1 $(BIN)/pytest

# The suite beside a CPU hog on every core (tests/under_load.sh: bounded, killed when pytest ends,
# whatever its result): no test may depend on how fast the machine is. Heavy on a shared machine.
test-under-load: install sam-install chromium
	CHATGW_TEST_STRICT=1 tests/under_load.sh $(BIN)/pytest -p no:cacheprovider $(PYTEST_ARGS)

# `chatgw usage --html` is checked in headless Chromium (Debian's package; CI runs as root).
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
		else echo "make chromium: /usr/bin/chromium is missing (apt-get install chromium as root)"; fi; fi

# The benchmark (bench/, docs/bench.md): loopback only, bounded; about 5 minutes on 2 cores.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m bench.run --quick $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(SAM_VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache
