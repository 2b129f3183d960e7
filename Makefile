# The README's two commands: `make demo` (the simulated network) and `make test` (the suite);
# `make test-fast` is the quick lane while editing (tests not marked slow).
# Both create .venv and install the project into it; nothing needs to be installed first
# beyond Python >= 3.11 and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# pytest-xdist workers: `auto` is one per core; `make test PYTEST_WORKERS=0` runs serially.
PYTEST_WORKERS ?= auto

.PHONY: all install demo test test-fast lint typecheck pytest protos protos-check config-ref fixtures bench bench-scale soak clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/trisa-peer demo

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check trisa_peer tests scripts $(wildcard bench) $(wildcard soak)

typecheck: $(STAMP)
	$(BIN)/mypy trisa_peer

pytest: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS)

# Everything not marked slow (no end-to-end, subprocess or hypothesis tests); no lint or
# types: `make test` runs those and every test.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) -m "not slow"

# Regenerate trisa_peer/_pb from protos/: modules plus their mypy-protobuf .pyi stubs
# (imports rewritten to live inside trisa_peer).
protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

# Exit 1 if trisa_peer/_pb (modules or stubs) differs from what protos/ generates.
protos-check: $(STAMP)
	$(BIN)/python scripts/gen_protos.py --check

# Regenerate docs/config.md (every option of both CLIs) from the parsers; after adding a
# flag run this and commit the file (tests/test_config_reference.py compares them).
config-ref: $(STAMP)
	$(BIN)/python scripts/gen_config_ref.py

# Regenerate the committed test PKI in certs/fixtures/.
fixtures: $(STAMP)
	$(BIN)/python scripts/make_fixtures.py

# the bench extra (matplotlib, for bench/report.png) only here: `make test` does not need it
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python bench/run.py

# bench plus the size figures S1 (1,000,000 stored transfers) and S2 (100,000 directory
# records, and db copy of them): about 20 minutes more
bench-scale: $(BENCH_STAMP)
	$(BIN)/python bench/run.py --scale

# The reliability suite (hostile peers, crashes, outages; loopback only, bounded): prints
# each case's figures against its targets, writes soak/results.json, exit 1 on a miss.
# tests/test_soak.py runs every case at a small scale with the same assertions.
soak: $(STAMP)
	$(BIN)/python soak/run.py

clean:
	rm -rf $(VENV) build *.egg-info
