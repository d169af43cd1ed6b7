# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Both create .venv from the lock file when it is missing or out of date.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.8
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench lock clean serve stop torture

install: $(STAMP)

# Bytecode is compiled at install: uv does not by default, and where
# PYTHONDONTWRITEBYTECODE is set Python never caches it, so every command
# would compile Prefect, botocore and pydantic again (0.5-2 s a start).
$(STAMP): requirements.lock pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv==$(UV_VERSION)
	$(UV) pip sync --quiet --compile-bytecode --python $(PY) requirements.lock
	$(UV) pip install --quiet --compile-bytecode --python $(PY) --no-deps --editable .
	$(PY) -m compileall -q walship walship_cli flows tasks deployments bench scripts
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m scripts.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest -n 2 --dist loadfile --durations=25

# The unit tier, a check while editing: in-process tests on the local backend (no Prefect server, no S3
# server, no CLI subprocesses), under a minute. `make test` runs everything.
UNIT_TESTS := architecture codec errors frames generations layout resync_replaced retention_plan retry \
	snapshot_restore storage stream_snapshot url wal capture_time
test-fast: $(STAMP)
	$(VENV)/bin/pytest -n 2 --dist loadfile -m "not seaweedfs and not prefect_server" -k "not moto" \
		$(foreach name,$(UNIT_TESTS),tests/test_$(name).py)

# Seeded torture runs (tests/torture/): random seeds for SECONDS in all (default 600), or one SEED
# replayed; LENGTH is each schedule's length in seconds, VERSION the schedule's (default: the newest).
# Failing seeds are printed with their replay.
SECONDS ?= 600
LENGTH ?= 12
torture: $(STAMP)
	$(PY) -m tests.torture --length $(LENGTH) $(if $(VERSION),--version $(VERSION)) \
		$(if $(SEED),--seed $(SEED),--for $(SECONDS))

# A Prefect server on 127.0.0.1:$PREFECT_SERVER_API_PORT (default 4200; state in $PREFECT_HOME, default
# build/prefect) serving prefect.yaml's deployments; `make stop` ends both. Site values come from
# SET="database=/srv/app.db replica=s3://bucket/app" or WALSHIP_DATABASE, WALSHIP_REPLICA...;
# with no database, `make demo`'s.
serve: $(STAMP)
	$(PY) -m deployments.local_server start $(foreach value,$(SET),--set $(value))

stop: $(STAMP)
	$(PY) -m deployments.local_server stop

# A process worker for prefect.yaml's pool, polling every second (needs PREFECT_API_URL).
.PHONY: worker
worker: $(STAMP)
	$(PY) -m deployments.worker

# walship's alerts (deployments/automations.yaml) created or updated on the server PREFECT_API_URL
# names, posting to WALSHIP_ALERT_WEBHOOK; SILENCE (seconds) replaces the "shipping stopped" window.
.PHONY: automations
automations: $(STAMP)
	$(PY) -m deployments.automations $(if $(SILENCE),--silence $(SILENCE))

bench: $(STAMP)
	$(PY) -m bench.snapshot_restore

# Re-resolve pins after editing pyproject.toml's dependencies.
lock: $(STAMP)
	$(UV) pip compile --quiet pyproject.toml --extra dev --python-version 3.11 --generate-hashes -o requirements.lock

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
