# Two commands matter: `make run` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck check security chaos bench bench-engine bench-compare bench-generate bench-events bench-service bench-pgbouncer failover clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,dev,bench]'
	touch $(STAMP)

$(VENV): $(STAMP)

# The lock service on the embedded PostgreSQL with a little background load; prints the
# dashboard, API docs and metrics URLs. (The old terminal demo: .venv/bin/omninode-lock demo)
run: $(STAMP)
	$(BIN)/omninode-lock serve --demo-load --log-level warning

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider --cov --cov-report=term:skip-covered

lint: $(STAMP)
	$(BIN)/ruff check src tests bench chaos
	$(BIN)/ruff format --check src tests bench chaos

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

# Lock systems side by side + our engine's scale curves (~15 min; ARGS=--quick for ~2 min).
# Writes bench/results/peers.{json,csv,md,png}; ARGS=--readme also rewrites README's section.
bench: $(STAMP)
	$(BIN)/python -m bench.peers $(ARGS)

# Static security analysis (bandit; skips justified in pyproject's [tool.bandit]) and a
# dependency audit that says so when its vulnerability source cannot be reached.
security: $(STAMP)
	$(BIN)/bandit -q -c pyproject.toml -r src
	$(BIN)/bandit -q -c pyproject.toml -s B608 src/omninode_bridge/demos/contention.py
	$(BIN)/python .ci/pip_audit.py

# The chaos run: >= 10,000 operations under every fault kind, checked; writes
# bench/results/chaos.json (the suite runs a short one: pytest -m chaos).
chaos: $(STAMP)
	$(BIN)/python -m chaos

bench-engine: $(STAMP)
	$(BIN)/python -m bench.engine

# Before/after of the engine bench against a git revision: make bench-compare BASE=<rev>
bench-compare: $(STAMP)
	$(BIN)/python -m bench.compare --base $(BASE)

bench-generate: $(STAMP)
	$(BIN)/python -m bench.generate

bench-events: $(STAMP)
	$(BIN)/python -m bench.events

bench-service: $(STAMP)
	$(BIN)/python -m bench.service

# pairs/s direct vs through PgBouncer (transaction mode) in one run -> bench/results/pgbouncer.json
bench-pgbouncer: $(STAMP)
	$(BIN)/python -m bench.pgbouncer

# a synchronous replica promoted mid-run under a fenced workload -> bench/results/failover.json
failover: $(STAMP)
	$(BIN)/python -m bench.failover

clean:
	rm -rf $(VENV) .omninode .pytest_cache .mypy_cache .ruff_cache
