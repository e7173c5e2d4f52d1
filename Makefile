# warmd: `make demo` and `make test` set everything up on a fresh Debian 12 machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# OpenHCS's own environment (it is never a dependency of warmd): warmd-openhcs's tests and
# benchmark run there.
OPENHCS_VENV  ?= bench/openhcs/.venv
OPENHCS_STAMP := $(OPENHCS_VENV)/.installed

.PHONY: demo test deps test-deps venv bench bench-openhcs test-openhcs fuzz clean

# Debian packages systemd-python builds against (only when root and missing).
deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	   ! dpkg -s libsystemd-dev pkg-config >/dev/null 2>&1; then \
	    echo "installing libsystemd-dev pkg-config"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libsystemd-dev pkg-config; \
	fi

$(STAMP): pyproject.toml | deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' scipy
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/plate/demo.py

# Tools for the manual-page and packaging tests (they skip, saying why, without them):
# mandoc lints the pages, rpm parses the spec, debhelper and friends build the .deb,
# lintian checks it, and Debian's own Python libraries run the packaged daemon; the
# libraries Qt needs to open OpenHCS's GUI offscreen in its test.
# Installed only when root on Debian and missing (about 20 s), so that `make test` runs
# every test but the GPU ones, as CI does.
TEST_PACKAGES := mandoc rpm debhelper dh-python pybuild-plugin-pyproject python3-all \
                 python3-setuptools lintian python3-cloudpickle python3-psutil python3-systemd \
                 libegl1 libgl1 libxkbcommon0 libfontconfig1 libdbus-1-3 libglib2.0-0

test-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	   ! dpkg -s $(TEST_PACKAGES) >/dev/null 2>&1; then \
	    echo "installing $(TEST_PACKAGES)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	        --no-install-recommends $(TEST_PACKAGES); \
	fi

# Then the tests that need OpenHCS, in its own environment (about 1.5 GB, made once), after
# OpenHCS has prepared its function catalog's disk cache (a minute the first time, seconds
# after): every OpenHCS process of those tests reads it.
test: $(STAMP) test-deps $(OPENHCS_STAMP)
	$(BIN)/python -m pytest -q
	$(OPENHCS_VENV)/bin/python -m openhcs.runtime.zmq_execution_server_launcher --prepare-capabilities \
	    --log-level WARNING 2>&1 | grep -v "Could not import OpenHCS module\\|not available, skipping" || true
	$(OPENHCS_VENV)/bin/python -m pytest -q -m openhcs

# The long fuzz run over the frame reader and the request handlers (tests/fuzz/); the short
# one is part of `make test`. Inputs that found new coverage stay in tests/fuzz/corpus.
FUZZ_RUNS ?= 1000000
FUZZ_DIR  := tests/fuzz

fuzz: $(STAMP)
	mkdir -p $(FUZZ_DIR)/corpus $(FUZZ_DIR)/artifacts
	$(BIN)/python $(FUZZ_DIR)/fuzz_requests.py -runs=$(FUZZ_RUNS) -max_len=4096 -print_final_stats=1 \
	    -artifact_prefix=$(FUZZ_DIR)/artifacts/ $(FUZZ_DIR)/corpus

# The benchmark's own environment: warmd from this checkout plus the peers it is measured
# against. `make bench BENCH_ARGS=--quick` for a short run; see docs/benchmarks.md.
BENCH_VENV  ?= bench/.venv
BENCH_STAMP := $(BENCH_VENV)/.installed
BENCH_ARGS  ?=

$(BENCH_STAMP): pyproject.toml bench/requirements.txt | deps
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --upgrade pip
	$(BENCH_VENV)/bin/pip install -q -e . -r bench/requirements.txt
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python bench/run.py $(BENCH_ARGS)

# OpenHCS on warmd (warmd-openhcs, examples/openhcs): its own environment, as openhcs is
# never a dependency of warmd. `make bench-openhcs` measures warmd-openhcs against OpenHCS's
# own execution server; `make test-openhcs` runs the tests marked openhcs alone.

$(OPENHCS_STAMP): pyproject.toml bench/openhcs/requirements.txt | deps
	$(PYTHON) -m venv $(OPENHCS_VENV)
	$(OPENHCS_VENV)/bin/pip install -q --upgrade pip
	$(OPENHCS_VENV)/bin/pip install -q -e '.[test]' -r bench/openhcs/requirements.txt
	touch $(OPENHCS_STAMP)

bench-openhcs: $(OPENHCS_STAMP)
	$(OPENHCS_VENV)/bin/python bench/openhcs/bench.py $(BENCH_ARGS)

test-openhcs: $(OPENHCS_STAMP)
	$(OPENHCS_VENV)/bin/python -m pytest -q -m openhcs

clean:
	rm -rf $(VENV) build *.egg-info daemon/*.egg-info
