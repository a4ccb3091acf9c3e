# fast_litellm: `make demo` and `make test` set everything up themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The LiteLLM release the integration is tested against (see docs/litellm.md).
LITELLM_VERSION := 1.110.2
# LiteLLM fetches a model price map from the internet at import unless told otherwise.
export LITELLM_LOCAL_MODEL_COST_MAP := True

.DEFAULT_GOAL := help

.PHONY: help
help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "maturin>=1.7,<2" "httpx>=0.27,<0.29" pytest pytest-timeout pytest-asyncio \
		pytest-benchmark trustme hypothesis trio "litellm==$(LITELLM_VERSION)"
	touch $@

.PHONY: venv
venv: $(VENV)/.deps

.PHONY: build
build: $(VENV)/.deps ## build the extension into the virtualenv (release mode)
	rm -f python/fast_litellm/_core*.so
	VIRTUAL_ENV=$(CURDIR)/$(VENV) PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/maturin develop --release -q

.PHONY: test
test: build ## cargo test on the Rust core, then pytest on the Python package
	cargo test --quiet
	$(PY) -m pytest -q tests/python

.PHONY: stress
stress: build ## the long reliability runs: stale connections, memory over 1M pool cycles and 100k requests
	$(PY) -m pytest -q -p no:cacheprovider -o timeout=1800 tests/stress

.PHONY: demo
demo: build ## run the demonstration (no API key, no network)
	$(PY) demo/demo.py

# The published fast-litellm wheel, in a virtualenv of its own (same package name), to compare
# against in the same run. Optional: without it the report leaves that row out.
.venv-published/.deps:
	$(PYTHON) -m venv .venv-published
	.venv-published/bin/python -m pip install -q "fast-litellm==0.1.10" && touch $@ \
		|| echo "note: the published fast-litellm wheel could not be installed; its rows are left out"

# nginx serves the transport benchmarks; installed from Debian when missing and possible.
.PHONY: nginx
nginx:
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || \
		( (apt-get update -qq && apt-get install -y -qq nginx-light) >/dev/null 2>&1 \
		|| echo "note: nginx could not be installed; the transport benchmarks are skipped" )

$(VENV)/.bench-deps: $(VENV)/.deps
	$(PY) -m pip install -q matplotlib aiohttp
	touch $@

.PHONY: bench
bench: build nginx $(VENV)/.bench-deps .venv-published/.deps ## run the benchmarks; write docs/benchmarks.md and charts
	$(PY) -m pytest -q benches -p no:cacheprovider -o timeout=3000 --benchmark-sort=name \
		--benchmark-columns=median,iqr,rounds

.PHONY: lint
lint: ## clippy with warnings as errors
	cargo clippy --all-targets -- -D warnings
	cargo clippy --features python -- -D warnings

.PHONY: clean
clean: ## remove build output and the virtualenv
	rm -rf target $(VENV) python/fast_litellm/_core*.so
