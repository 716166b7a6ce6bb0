# raygate: `make run` serves the quickstart on http://127.0.0.1:8000; `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pytest-xdist workers for `make test`, each with its own Ray and Redis (a test file stays on one worker; the
# files that use the session platform all go to one, which alone starts it: tests/conftest.py). Much of the
# integration tier waits on processes starting, deadlines and drains, so two workers fit even two cores; `TEST_WORKERS=0` runs it in one process.
TEST_WORKERS ?= 2
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache

.PHONY: run test test-unit test-integration bench bench-gateway bench-planner lint clean venv

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	@if [ -z "$$REDIS_URL" ]; then ./scripts/ensure-system-deps.sh redis-server; fi
	$(BIN)/raygate up $(SPEC)

test: $(STAMP)
	./scripts/ensure-system-deps.sh redis-server
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile $(or $(PYTEST_ARGS),-p no:randomly)

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration" $(PYTEST_ARGS)

test-integration: $(STAMP)
	./scripts/ensure-system-deps.sh redis-server
	$(BIN)/python -m pytest -q -m integration $(PYTEST_ARGS)

bench: bench-gateway bench-planner

bench-gateway: $(STAMP)
	./scripts/ensure-system-deps.sh redis-server wrk
	$(BIN)/python bench/gateway.py

bench-planner: $(STAMP)
	$(BIN)/python bench/planner.py

lint: $(STAMP)
	$(BIN)/hadolint Dockerfile

clean:
	rm -rf $(VENV) .numba_cache build *.egg-info
