# notifyhub: `make run` starts the hub, `make test` checks everything.
# Needs GNU make and python3 >= 3.11 on PATH; everything else goes into $(VENV).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Extra arguments: `make run ARGS="--port 9000"`, `make test PYTEST_ARGS="-x tests/hub"`.
ARGS ?=
PYTEST_ARGS ?=
# Test processes (pytest-xdist): each starts its own PostgreSQL and Redis; much of a
# test's time is waiting on sockets and timers, so two overlap well on two cores.
PYTEST_WORKERS ?= 2

# Stamps record what is installed, so a second `make run` starts at once; editing
# pyproject.toml reinstalls.
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test lint pytest bench soak image-test compose-test venv clean help

help:
	@echo "make run    create $(VENV), install notifyhub, start the hub (embedded PostgreSQL)"
	@echo "make test   install the test tools, run ruff, mypy and the whole test suite"
	@echo "make lint   ruff and mypy only"
	@echo "make bench  run the load benchmarks against a real hub process (docs/benchmarks.md)"
	@echo "make soak   two hubs under mixed load and faults for 3 minutes, then checks (docs/reliability.md)"
	@echo "make image-test  build the container image and check it runs (docs/deployment.md)"
	@echo "make compose-test  the image in .ci/image/compose.yaml: two hubs behind HAProxy"
	@echo "make clean  remove $(VENV) and caches (keeps the data in .notifyhub)"

run: $(RUN_STAMP)
	$(BIN)/notifyhub serve $(ARGS)

test: lint pytest

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

pytest: $(TEST_STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=10 $(PYTEST_ARGS)

# Starts its own throwaway PostgreSQL, Redis, hubs and a python-socketio peer; see
# docs/benchmarks.md (`make bench ARGS=--quick` for a short run).
bench: $(TEST_STAMP)
	$(BIN)/python -m bench $(ARGS)

# Two hubs, PostgreSQL and Redis under load and faults, then loss/duplicate/order checks;
# see docs/reliability.md (`make soak ARGS="--seconds 600"` for a longer run).
soak: $(TEST_STAMP)
	$(BIN)/python -m bench.soak $(ARGS)

# Docker (started, and installed from Debian's packages, when missing), the base image
# from Debian's packages (kept once built), the image, then tests/image/image_check.py
# against it: a file `make test` never collects. See docs/deployment.md.
IMAGE ?= notifyhub:local
image-test: $(TEST_STAMP)
	bash .ci/image/docker.sh
	IMAGE=$(IMAGE) bash .ci/image/build.sh
	NOTIFYHUB_IMAGE=$(IMAGE) $(BIN)/pytest -p no:xdist --durations=5 $(PYTEST_ARGS) \
		tests/image/image_check.py

# The same image in .ci/image/compose.yaml (two hubs, HAProxy, PostgreSQL and Redis built
# from Debian's packages), checked through the load balancer by tests/image/compose_check.py.
compose-test: $(TEST_STAMP)
	bash .ci/image/docker.sh
	IMAGE=$(IMAGE) bash .ci/image/build.sh
	NOTIFYHUB_IMAGE=$(IMAGE) $(BIN)/pytest -p no:xdist --durations=5 $(PYTEST_ARGS) \
		tests/image/compose_check.py

venv: $(BIN)/python

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
		echo "notifyhub needs $(PYTHON) >= 3.11 on PATH (found: $$($(PYTHON) --version 2>&1))" >&2; \
		exit 1; }
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	@echo "installing notifyhub into $(VENV) (the first time takes a minute)"
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

# The test install includes everything the run install has.
$(TEST_STAMP): pyproject.toml | $(BIN)/python
	@echo "installing notifyhub and its test tools into $(VENV) (the first time takes a minute)"
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@ $(RUN_STAMP)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
