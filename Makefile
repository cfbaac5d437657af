# mcpgw — the two commands that matter: `make up` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: up test install filters lint unit integration bench clean help redis

help:
	@echo "make up      install, build the filters and run the gateway on the demo registry"
	@echo "make test    install, build the filters and run every check and test"
	@echo "make filters build the Zig filters into plugin-server/plugins/"
	@echo "make bench   run the benchmarks (bench/)"
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

filters: $(STAMP)
	$(PY) wasm-filters/build.py

up: filters
	$(VENV)/bin/mcpgw up

lint: $(STAMP)
	$(VENV)/bin/ruff check controlplane plugin-server tests wasm-filters/build.py
	$(VENV)/bin/ruff format --check controlplane plugin-server tests wasm-filters/build.py
	$(PY) wasm-filters/build.py --check-fmt

unit: $(STAMP)
	$(PY) wasm-filters/build.py --test
	$(PY) -m pytest tests/unit -q

integration: filters redis
	$(PY) -m pytest tests/integration -q

test: filters lint redis
	$(PY) wasm-filters/build.py --test
	$(PY) -m pytest tests -q -ra

bench: filters
	@echo "no benchmarks yet (see bench/README.md)"

clean:
	rm -rf $(VENV) plugin-server/plugins/*/ .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find wasm-filters -name .zig-cache -type d -prune -exec rm -rf {} +
