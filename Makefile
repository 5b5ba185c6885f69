# Parley: `make run` starts a working assistant, `make test` runs every test on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
APT_PACKAGES := chromium espeak-ng sox
EXTRAS ?= dev,local,piper,llama,postgres,redis
# reinstall when pyproject.toml or the extras change
STAMP  := $(VENV)/.installed-$(shell (cat pyproject.toml; echo '$(EXTRAS)') | cksum | cut -d' ' -f1)

.PHONY: install run test test-deps lint typecheck bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# llama-cpp-python compiles llama.cpp (a few minutes, once; pip caches the wheel). Portable
	# flags, so a wheel built here runs on any x86-64 machine.
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PIP) install -q -e '.[$(EXTRAS)]'
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

test: test-deps lint typecheck
	$(VENV)/bin/pytest -q

bench: install
	$(PY) bench/run.py
	$(PY) bench/local_ai.py
	$(PY) bench/sfu.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
