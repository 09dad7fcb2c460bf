# telbus — the two commands that matter: `make run` and `make test`.
SHELL := /bin/bash
PY      := .venv/bin/python
TELBUS  := .venv/bin/telbus
PIP     := .venv/bin/pip --cache-dir .cache/pip
STAMP   := .venv/.installed

.PHONY: run test unit integration up down clean bench chaos soak install jars status

run: $(STAMP) ## set up, start the stack, publish the demo workload, show what came out
	$(TELBUS) up
	$(TELBUS) demo run

test: $(STAMP) jars ## every test: unit and integration (real broker started by the suite)
	$(PY) -m pytest -q -p no:cacheprovider

unit: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

integration: $(STAMP) jars
	$(PY) -m pytest -q -p no:cacheprovider tests/integration

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x .venv/bin/python || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.lock
	$(PIP) install -q --no-deps -e .
	touch $(STAMP)

jars: $(STAMP) ## fetch the Kafka broker's jars with Maven (cached in .cache/kafka)
	$(PY) -c "from telbus.localbroker import ensure_jars; ensure_jars()"

up: $(STAMP) jars ## start broker, worker and sink in the background (idempotent)
	$(TELBUS) up

down: ## stop what `make up` started (by pid); data stays
	@test -x $(TELBUS) && $(TELBUS) down || true

clean: ## stop and remove local data (.data)
	@test -x $(TELBUS) && $(TELBUS) clean || rm -rf .data

status: $(STAMP)
	$(TELBUS) status

bench: $(STAMP) jars ## benchmarks: writes bench/results/*.json
	$(PY) -m bench.run

chaos: $(STAMP) jars ## fault suite on a private broker: writes bench/results/chaos.json
	$(PY) -m tests.chaos

soak: $(STAMP) jars ## 20 minutes at half the measured maximum: writes bench/results/soak.json
	$(PY) -m bench.soak
