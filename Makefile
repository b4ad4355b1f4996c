# ai-door-system. `make run` and `make test` set everything up themselves (first time: minutes;
# afterwards: seconds). See README.md.
VENV    ?= .venv
PYTHON  ?= python3.11
STAMP   := $(VENV)/.aidoor-installed
PYTEST_ARGS ?=

.PHONY: setup run serve test test-mysql lint migrate clean

setup: $(STAMP)

$(STAMP): pyproject.toml infra/install.sh
	PYTHON=$(PYTHON) VENV=$(VENV) infra/install.sh

run: $(STAMP)
	$(VENV)/bin/aidoor run

serve: $(STAMP)
	$(VENV)/bin/aidoor serve

migrate: $(STAMP)
	$(VENV)/bin/aidoor migrate

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# ruff (lint + format check, settings in pyproject.toml) and the import-layer contracts
# ([tool.importlinter] in pyproject.toml). All three run; it fails if any does. .ci/run calls
# this before the tests.
lint: $(STAMP)
	@rc=0; \
	$(VENV)/bin/ruff check . || rc=1; \
	$(VENV)/bin/ruff format --check . || rc=1; \
	$(VENV)/bin/lint-imports || rc=1; \
	exit $$rc

# The same suite against the local MariaDB/MySQL server.
test-mysql: $(STAMP)
	AIDOOR_TEST_DATABASE_URL=$${AIDOOR_TEST_DATABASE_URL:-mysql+pymysql://root@127.0.0.1:3306/test} \
		$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
