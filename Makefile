# chatgw: the two commands are `make run` and `make test`.
# The suite runs on the Python the function runs (Lambda's python3.13): from PATH, else from pyenv.
# Without 3.13 the venv is made with python3 (3.11+ runs the gateway; `make install` says which it took).
PY313 = $(shell for c in "$$(command -v python3.13)" "$$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)"/versions/3.13*/bin/python3.13; do \
	[ -n "$$c" ] && "$$c" -c 'import sys; print(sys.executable)' 2>/dev/null && break; done)
PY ?= $(or $(PY313),python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
# Lock files (exact versions and hashes; `make lock` refreshes them, `make lock UPGRADE=1` upgrades):
# what the Lambda package ships (sam build reads it), what `make run` installs, what `make install`/`make test` install.
LAMBDA_LOCK := handler/requirements.txt
LOCAL_LOCK := requirements-local.txt
DEV_LOCK := requirements-dev.txt
UV_VERSION := 0.13.9
PIP_QUIET ?= -q
HOST ?= 127.0.0.1
PORT ?= 8000
STATE_DIR ?= .chatgw

# AWS SAM CLI lives in a venv of its own: it is heavy and pins its own dependencies.
SAM_VERSION := 1.170.0
SAM_VENV := .venv-sam
SAM := SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam
SAM_STAMP := $(SAM_VENV)/.installed-$(SAM_VERSION)
# `sam build` without a container needs python3.13 on PATH: PY313 above.


.PHONY: install run test test-under-load lint typecheck unit build deploy bench bench-quick clean sam-install template-lint chromium lock clients

# Everything: the gateway, uvicorn and the test and lint toolchain (pytest, moto, mypy, ruff, cfn-lint, ...).
install: $(STAMP)

$(STAMP): pyproject.toml $(DEV_LOCK)
	@echo "make install: $(VENV) with the gateway and its test toolchain, exact versions from $(DEV_LOCK)"
	@$(PY) -c 'import sys; v = sys.version_info[:2]; print(f"make install: Python {v[0]}.{v[1]} ({sys.executable})" + ("" if v == (3, 13) else ": not 3.13, the function runtime; the suite is meant to run on 3.13 (pyenv install 3.13)"))'
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_QUIET) --require-hashes -r $(DEV_LOCK)
	$(BIN)/python -m pip install $(PIP_QUIET) --no-deps -e .
	touch $(STAMP) $(RUN_STAMP)

# Only what running needs (the `local` extra: FastAPI, uvicorn, boto3, ...), not the test toolchain.
$(RUN_STAMP): pyproject.toml $(LOCAL_LOCK)
	@echo "make run: installing what the gateway needs to run into $(VENV) (exact versions from $(LOCAL_LOCK));"
	@echo "          the test toolchain comes with make test"
	@$(PY) -c 'import sys; v = sys.version_info[:2]; print(f"make run: Python {v[0]}.{v[1]}" + ("" if v == (3, 13) else " (3.13, the function runtime, was not found; 3.11+ runs the gateway)"))'
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --progress-bar off --require-hashes -r $(LOCAL_LOCK) | grep -v '^Requirement already satisfied' || true
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/chatgw serve --host $(HOST) --port $(PORT) --state-dir $(STATE_DIR)

# Re-resolve the three lock files from pyproject.toml (with uv, from PyPI). The Lambda lock is resolved
# for the function's platform (Python 3.13, arm64 Linux); the others for every platform, Python 3.11+.
UV := $(BIN)/uv
UV_COMPILE := UV_INDEX_URL=https://pypi.org/simple $(UV) pip compile pyproject.toml --generate-hashes --quiet $(if $(UPGRADE),--upgrade,)

lock:
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q 'uv==$(UV_VERSION)'
	$(UV_COMPILE) --python-version 3.13 --python-platform aarch64-manylinux_2_34 -o $(LAMBDA_LOCK)
	$(UV_COMPILE) --extra local --universal --python-version 3.11 -o $(LOCAL_LOCK)
	$(UV_COMPILE) --extra dev --universal --python-version 3.11 -o $(DEV_LOCK)

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
test: lint typecheck template-lint chromium clients
	CHATGW_TEST_STRICT=1 $(BIN)/pytest

# The quick loop while editing: the unit tests (tests/unit mirrors handler/chatgw) and one contract suite
# per port (tests/contract), without lint, typecheck, Chromium or SAM, and without the tests marked slow.
unit: $(STAMP)
	$(BIN)/pytest -p no:cacheprovider -m "not slow" tests/unit tests/contract $(PYTEST_ARGS)

# The suite beside a CPU hog on every core (tests/under_load.sh: bounded, killed when pytest ends,
# whatever its result): no test may depend on how fast the machine is. Heavy on a shared machine.
test-under-load: install sam-install chromium clients
	CHATGW_TEST_STRICT=1 tests/under_load.sh $(BIN)/pytest -p no:cacheprovider $(PYTEST_ARGS)

# The real CLI clients the doors are tested with (Claude Code, Codex: native binaries in their npm
# packages, exact versions in tests/clients/package-lock.json). npm comes from Debian when missing.
CLIENTS := tests/clients
CLIENTS_STAMP := $(CLIENTS)/node_modules/.installed

clients: $(CLIENTS_STAMP)

$(CLIENTS_STAMP): $(CLIENTS)/package.json $(CLIENTS)/package-lock.json
	@if ! command -v npm >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm; \
		else echo "make clients: npm is missing (apt-get install nodejs npm as root)"; exit 1; fi; fi
	cd $(CLIENTS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

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
