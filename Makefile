# Set-up and tests in two commands: `make run` and `make test` (see README.md).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
PORT ?= 8000
WEB_WORKERS ?= 4
PG_URL ?= postgres://postgres@127.0.0.1:5432/ctspine
DEMO_ACCOUNT := .demo-account
export PYTHONUNBUFFERED := 1

.PHONY: run dev test test-fast lint install demo-data browser bench clean

$(STAMP): requirements.txt requirements-ml.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt -r requirements-ml.txt -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

# Demo data only when no dataset is configured.
demo-data: install
	@if [ -z "$$CTSPINE_DATA_ROOT" ]; then \
	  if [ ! -f demo-data/data_split.txt ]; then $(PY) manage.py make_demo_dataset demo-data --cases 24; fi; \
	fi

define say_which_model
	@if [ -z "$$CTSPINE_NNUNET_MODEL_DIR" ]; then \
	  echo "Segmentation: demo model, trained on synthetic phantoms; not for real CT (set CTSPINE_NNUNET_MODEL_DIR to use a real one)"; \
	else echo "Segmentation: model folder $$CTSPINE_NNUNET_MODEL_DIR"; fi
endef

run: install demo-data
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput -v 0
	$(PY) manage.py ingest --workers 2
	$(PY) manage.py demo_account $(DEMO_ACCOUNT) --url http://127.0.0.1:$(PORT)
	$(say_which_model)
	$(PY) manage.py db_worker --queue-name default --no-reload & WORKER=$$!; \
	trap "kill $$WORKER" EXIT INT TERM; \
	$(VENV)/bin/gunicorn ctspine_site.wsgi --bind 127.0.0.1:$(PORT) --workers $(WEB_WORKERS) --timeout 120

# Django's development server, for working on the code.
dev: install demo-data
	$(PY) manage.py migrate --noinput
	$(PY) manage.py demo_account $(DEMO_ACCOUNT) --url http://127.0.0.1:$(PORT)
	$(say_which_model)
	$(PY) manage.py runserver $(PORT)

# Debian's Chromium for the browser tests; never a downloaded browser build.
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: install browser lint
	$(PY) -m pytest -q
	@if $(PY) -c "import socket; socket.create_connection(('127.0.0.1', 5432), 2)" 2>/dev/null; then \
	  echo "--- database tests again on PostgreSQL ($(PG_URL))"; \
	  DATABASE_URL=$(PG_URL) $(PY) -m pytest -q -m "django_db and not browser and (postgres or not slow)"; \
	else echo "SKIPPED: PostgreSQL is not listening on 127.0.0.1:5432, database tests ran on SQLite only"; fi

test-fast: install
	$(PY) -m pytest -q -m "not browser and not slow" -x

bench: install
	$(PY) bench/ingest.py
	$(PY) bench/tiles.py
	$(PY) bench/metrics.py

clean:
	rm -rf cache staticfiles .pytest_cache

# Seeded bugs against the tests (bench/mutations.py): a few minutes, not part of `make test`.
.PHONY: mutants
mutants: install
	$(PY) bench/mutations.py
