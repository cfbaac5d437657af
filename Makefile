# mcpgw — the two commands that matter: `make up` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: up test test-wheel wheel install filters lint unit integration bench bench-dataplane bench-dataplane-profile bench-controlplane bench-smoke soak clean help redis inspector chromium

help:
	@echo "make up      install, build the filters and run the gateway on the demo registry"
	@echo "make test    install, build the filters and run every check and test"
	@echo "make filters build the Zig filters into plugin-server/plugins/"
	@echo "make bench   run the benchmarks (bench/)"
	@echo "make bench-smoke  run every benchmark with tiny sizes (part of make test)"
	@echo "make soak    30 minutes of mixed load + registry edits; RSS per process over time (MINUTES=N)"
	@echo "make wheel   build the wheel into dist/ (the filter is compiled into it)"
	@echo "make test-wheel  build the wheel, install it in a clean venv, run it from outside the repo"
	@echo "make clean   remove the venv, built filters and caches"

# Re-install only when the dependency list changes.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

# Tests run a real redis-server; install Debian's package when we can (we are root in CI).
redis:
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -qq redis-server >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null)); \
	  fi; }
	@command -v redis-server >/dev/null || { echo "error: redis-server is missing; install it (Debian/Ubuntu: apt-get install redis-server)"; exit 1; }

# The CORS test drives a real browser: Debian's Chromium (Playwright from PyPI drives it; its own
# browser download is never used). Installed with apt-get when we can (root), else a clear error.
chromium:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -qq chromium >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)); \
	  fi; }
	@command -v chromium >/dev/null || { echo "error: chromium is missing; install it (Debian/Ubuntu: apt-get install chromium)"; exit 1; }

# The MCP Inspector CLI for the integration tests: Node 22 and @modelcontextprotocol/inspector,
# pinned in tests/inspector.py, installed from npm into .cache/inspector/ (once; a stamp records
# the versions). Needs only some npm to start from; Debian's is installed when we can (root).
inspector: $(STAMP)
	@command -v npm >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -qq npm >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq npm >/dev/null)); \
	  fi; }
	@command -v npm >/dev/null || { echo "error: npm is missing; install it (Debian/Ubuntu: apt-get install npm)"; exit 1; }
	$(PY) -m tests.inspector

filters: $(STAMP)
	$(PY) wasm-filters/build.py

# The checkout's demo registry in place, so edits to examples/registry show while it runs
# (an installed `mcpgw up` without -f serves a temporary copy of the bundled one instead).
up: filters
	$(VENV)/bin/mcpgw up -f examples/registry

# The wheel into dist/ (its build compiles the filter into the package; docs/install.md).
wheel: $(STAMP)
	$(PY) -m pip wheel --no-deps --wheel-dir dist .

lint: $(STAMP)
	$(VENV)/bin/ruff check controlplane plugin-server tests bench wasm-filters/build.py setup.py
	$(VENV)/bin/ruff format --check controlplane plugin-server tests bench wasm-filters/build.py setup.py
	$(PY) wasm-filters/build.py --check-fmt

unit: $(STAMP)
	$(PY) wasm-filters/build.py --test
	$(PY) -m pytest tests/unit -q

integration: filters redis chromium
	$(PY) -m pytest tests/integration -q

test: filters lint redis inspector chromium
	$(PY) wasm-filters/build.py --test
	$(PY) -m pytest tests -q -ra --ignore=tests/wheel
	@$(MAKE) --no-print-directory bench-smoke
	@$(MAKE) --no-print-directory test-wheel

# The wheel as a user gets it: built from the tracked sources (the build compiles the filter),
# installed with its dependencies into a clean venv outside the repo (pip's cache is reused),
# then mcpgw --version, bootstrap (+ envoy --mode validate), validate, up (tools/list through
# its Envoy, clean stop) and serve, run from outside the repo. ~2 minutes (up to 5 on a busy
# machine), most of it Zig compiling the filter inside the wheel build.
test-wheel: $(STAMP)
	$(PY) -m pytest tests/wheel -q -ra -s

bench: bench-dataplane bench-controlplane

# Data plane: floor / proxy / mcpgw / native / python side by side (installs wrk and nginx
# with apt-get when missing), then memory at 1/100/1000 servers. ~6 minutes.
bench-dataplane: filters
	$(PY) bench/dataplane.py

# Where tools/list's extra Envoy CPU goes: a ladder of Envoys from native (and a native-module
# floor) to the real stack, then the filter's host calls timed inside V8 (bench/wasm_probe.zig).
# Not part of `bench`. ~3 minutes.
bench-dataplane-profile: filters
	$(PY) bench/dataplane_profile.py

# Control plane: translation (100 … 100,000 tools), propagation (admin write → tools/list
# through Envoy at 10/100/1,000 servers) and ADS fan-out (100 streams). ~5 minutes.
bench-controlplane: filters
	$(PY) bench/translation.py
	$(PY) bench/propagation.py
	$(PY) bench/fanout.py

# Every benchmark with tiny sizes (seconds each), results to a temp dir, never bench/results/:
# proves on every `make test` that each still runs and yields its figures. ~1.5 minutes.
bench-smoke: filters
	$(PY) bench/smoke.py

# Soak: the real stack (each part its own process) under mixed load and one admin edit per
# second for $(MINUTES) minutes; RSS of every process every 10 s, its slope after warm-up and a
# plot into bench/results/soak.{md,json,png}. Not part of `bench`. `make soak MINUTES=15`.
MINUTES ?= 30
soak: filters
	$(PY) bench/soak.py --minutes $(MINUTES)

clean:
	rm -rf $(VENV) plugin-server/plugins/*/ .pytest_cache .ruff_cache build dist
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find wasm-filters -name .zig-cache -type d -prune -exec rm -rf {} +
