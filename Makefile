# healthbook: two commands on a fresh machine: `make demo` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test unit bench bench-analytics bench-replay faults soak fuzz up down status lint install clean browser screenshots observe

$(STAMP): pyproject.toml schemas/_native.c
	@command -v python3 >/dev/null || { echo "python3 is missing: install Python 3.11 (Debian: apt-get install python3 python3-venv)"; exit 1; }
	bash stack/stack.sh compiler
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	bash stack/stack.sh up
	$(PY) -m commands.cli ca init
	$(PY) -m commands.cli topics
	$(PY) -m commands.cli migrate

down:
	bash stack/stack.sh down

status:
	bash stack/stack.sh status

demo: up
	$(PY) -m commands.cli demo $(ARGS)

browser:
	bash stack/stack.sh browser

# Prometheus (127.0.0.1:9090) and Alertmanager (127.0.0.1:9095) with healthbook's alert rules over the running
# services; `make down` stops them with the rest. What each alert means: docs/operations.md.
observe: up
	bash stack/stack.sh observe

screenshots: up browser
	HEALTHBOOK_SCREENSHOTS=docs/images $(PY) -m pytest -q tests/integration/test_citizen_page.py

test: up browser
	bash stack/stack.sh observe-install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	promtool test rules ops/prometheus/alerts_test.yml
	$(PY) -m pytest -q

# A year of visits released to every subscriber policy: the stage's visits/s, the check, a DuckDB chart.
bench-analytics: up
	$(PY) -m benchmarks.analytics_release $(ARGS)

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

bench: up
	$(PY) -m benchmarks.ceilings
	$(PY) -m benchmarks.query_latency
	$(PY) -m benchmarks.freshness
	$(PY) benchmarks/ingest.py

# Publishes 1,000,000 signed visits and rebuilds them with `healthbook replay` (about 15 minutes).
bench-replay: up
	$(PY) -m benchmarks.replay_national $(ARGS)

fuzz: $(STAMP)
	$(PY) -m tests.fuzz.run

faults: up
	$(PY) -m tests.fault_suite --docs docs/reliability.md --run-note "$(RUN_NOTE)"

# SOAK_MINUTES (30) and SOAK_SEED (random, printed) choose the run; the report goes into docs/reliability.md.
soak: up
	$(PY) -m tests.soak --docs docs/reliability.md

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .local stack/.kafka
