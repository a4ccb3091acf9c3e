# fast_litellm: `make demo` and `make test` set everything up themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The LiteLLM release the integration is tested against (see docs/litellm.md).
LITELLM_VERSION := 1.110.2
# What the LiteLLM Proxy (`litellm --config`) imports in that release besides LiteLLM's own
# dependencies, by name (its `proxy` extra does not resolve from the registry here), and
# prometheus_client: for tests/python/with_litellm/test_litellm_proxy.py and docs/litellm-proxy.md.
LITELLM_PROXY_DEPS := "fastapi>=0.136.3,<1" "uvicorn>=0.33,<1" "uvloop>=0.22.1,<1" "orjson>=3.11.6,<4" \
	"apscheduler>=3.11.2,<4" "backoff>=2.2.1,<3" "python-multipart>=0.0.27,<1" "pyjwt>=2.13,<3" \
	"websockets>=15.0.1,<16" "rq>=2.7,<3" "semver>=3.0.4,<4" "expression>=5.6,<6" "fastapi-sso>=0.19,<1" \
	"mcp>=2.3.0,<3" "soundfile>=0.12.1,<1" "prometheus_client>=0.20,<1"
# LiteLLM fetches a model price map from the internet at import unless told otherwise.
export LITELLM_LOCAL_MODEL_COST_MAP := True

.DEFAULT_GOAL := help

.PHONY: help
help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# The httpx the suite runs on (what `pip install litellm` brings today), and the older release the
# transport and LiteLLM suites run on too (`make test-httpx-older`); pyproject.toml's range.
HTTPX_VERSION := 0.29.0
HTTPX_OLDER := 0.28.1
# The suites that say how the transports behave, and those that say what LiteLLM gets: run again
# on the older httpx, and (transports) with `import httpx` resolving to httpx2.
TRANSPORT_SUITES := transports/test_transport.py http1/test_http1.py transports/test_trace.py http2/test_http2.py \
	proxies/test_proxy.py proxies/test_proxy_pool.py transports/test_libraries.py
LITELLM_SUITES := with_litellm/test_litellm.py with_litellm/test_litellm_hooks.py with_litellm/test_litellm_http2.py \
	with_litellm/test_litellm_coverage.py with_litellm/test_openai_sdk.py

# What the pytest suite needs besides the package (its own dependencies come with it). httpx2
# comes with LiteLLM's openai (3.x), on CPython 3.11+.
TEST_DEPS := "httpx==$(HTTPX_VERSION)" pytest pytest-timeout pytest-asyncio pytest-benchmark trustme hypothesis trio \
	h2 "litellm==$(LITELLM_VERSION)" $(LITELLM_PROXY_DEPS)

$(VENV)/.deps: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "maturin>=1.7,<2" $(TEST_DEPS)
	touch $@

.PHONY: venv
venv: $(VENV)/.deps

.PHONY: build
build: $(VENV)/.deps ## build the extension into the virtualenv (release mode)
	rm -f python/fast_litellm/_core*.so
	VIRTUAL_ENV=$(CURDIR)/$(VENV) PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/maturin develop --release -q

.PHONY: test
test: build ## cargo test; pytest on httpx $(HTTPX_VERSION); the behaviour suites on httpx2 and httpx $(HTTPX_OLDER)
	cargo test --quiet
	$(PY) -m pytest -q tests/python
	$(MAKE) --no-print-directory test-httpx2 test-httpx-older

.PHONY: test-httpx2
test-httpx2: build ## the transport suites with `import httpx` resolving to httpx2 (httpx2.alias_httpx())
	@if $(PY) -c "import httpx2" 2>/dev/null; then \
		cd tests/python && FAST_LITELLM_TEST_LIBRARY=httpx2 ../../$(PY) -m pytest -q $(TRANSPORT_SUITES); \
	else echo "test-httpx2: SKIPPED: no httpx2 for this Python (it needs CPython 3.11+)"; fi

# A virtualenv with the older httpx and the extension built by `make build` (imported from python/).
.venv-httpx$(HTTPX_OLDER)/.deps: pyproject.toml Makefile
	$(PYTHON) -m venv .venv-httpx$(HTTPX_OLDER)
	.venv-httpx$(HTTPX_OLDER)/bin/python -m pip install -q --upgrade pip
	.venv-httpx$(HTTPX_OLDER)/bin/python -m pip install -q $(subst httpx==$(HTTPX_VERSION),httpx==$(HTTPX_OLDER),$(TEST_DEPS))
	touch $@

.PHONY: test-httpx-older
test-httpx-older: build .venv-httpx$(HTTPX_OLDER)/.deps ## the transport and LiteLLM suites on httpx $(HTTPX_OLDER)
	.venv-httpx$(HTTPX_OLDER)/bin/python -c "import httpx; assert httpx.__version__ == '$(HTTPX_OLDER)', httpx.__version__"
	cd tests/python && PYTHONPATH=$(CURDIR)/python ../../.venv-httpx$(HTTPX_OLDER)/bin/python -m pytest -q \
		$(TRANSPORT_SUITES) $(LITELLM_SUITES)

.PHONY: wheel
wheel: $(VENV)/.deps ## build the abi3 wheel (CPython 3.10+) and the sdist into dist/
	rm -rf dist
	VIRTUAL_ENV=$(CURDIR)/$(VENV) PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/maturin build --release --out dist
	$(VENV)/bin/maturin sdist --out dist

.PHONY: check-wheel
check-wheel: wheel ## build the wheel, install it into a fresh virtualenv, import it and send a request
	$(PY) -m pytest -q tests/python/package/test_install.py

# The oldest and newest CPython the abi3 wheel supports. pyenv's interpreters when present, else
# pythonX.Y on the PATH; an absent one is reported as skipped, never passed over in silence.
MATRIX := 3.10 3.13

.PHONY: matrix
matrix: $(VENV)/.deps ## the pytest suite on CPython 3.10 and 3.13, with the wheel from `make wheel`
	@test -n "$$(ls dist/*.whl 2>/dev/null)" || $(MAKE) wheel
	@for v in $(MATRIX); do \
		py=$$(ls -d $$HOME/.pyenv/versions/$$v.*/bin/python$$v 2>/dev/null | tail -n 1); \
		py=$${py:-$$(command -v python$$v)}; \
		if [ -z "$$py" ] || ! "$$py" -c pass 2>/dev/null; then \
			echo "matrix: SKIPPED CPython $$v: no python$$v interpreter on this machine"; continue; fi; \
		echo "matrix: CPython $$v ($$py)"; \
		rm -rf .venv-$$v && "$$py" -m venv .venv-$$v \
		&& .venv-$$v/bin/python -m pip install -q --upgrade pip \
		&& .venv-$$v/bin/python -m pip install -q dist/*.whl $(TEST_DEPS) \
		&& .venv-$$v/bin/python -m pytest -q tests/python || exit 1; \
	done

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

.PHONY: stubcheck
stubcheck: build ## the stub _core.pyi matches the runtime (mypy.stubtest)
	$(PY) -m pip install -q "mypy>=1.10"
	$(PY) -m mypy.stubtest fast_litellm._core

.PHONY: clean
clean: ## remove build output and the virtualenv
	rm -rf target dist $(VENV) $(MATRIX:%=.venv-%) .venv-httpx$(HTTPX_OLDER) python/fast_litellm/_core*.so
