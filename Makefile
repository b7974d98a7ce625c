# Two-command quick start: `make run` and `make test` (see README).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench install system-test-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

run: install
	$(BIN)/evqueue --config etc/evqueue.conf

# System packages some tests need (Debian build tools, headless Chromium): installed only when
# we are root on a Debian-like machine; otherwise those tests skip and say why.
SYSTEM_TEST_PACKAGES := chromium ca-certificates python3-venv openssh-server

system-test-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; \
	  for p in $(SYSTEM_TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if ! dpkg-checkbuilddeps >/dev/null 2>&1; then missing="$$missing build-deps"; fi; \
	  if [ -n "$$missing" ]; then \
	    echo "installing system test packages:$$missing"; \
	    apt-get update -qq; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      $(SYSTEM_TEST_PACKAGES) dpkg-dev >/dev/null; \
	    DEBIAN_FRONTEND=noninteractive apt-get build-dep -y -qq --no-install-recommends ./ >/dev/null; \
	  fi; \
	fi

test: install system-test-deps
	$(BIN)/ruff check evqueue tests bench
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check evqueue tests bench

# Every benchmark of bench/, quick by default (about 2 minutes); `make bench BENCH_FULL=1` runs
# each with its default settings (more rounds and instances, 1 M rows listed: much longer).
Q = $(if $(BENCH_FULL),,--quick)
bench: install
	@set -e; run() { echo "== $$*"; $(BIN)/python "$$@"; }; \
	run bench/ping.py $(Q); \
	run bench/instances.py --matrix $(Q); \
	run bench/latency.py $(Q); \
	run bench/resources.py $(Q); \
	run bench/instances_list.py $(Q); \
	run bench/schedules.py $(if $(BENCH_FULL),,--seconds 3); \
	run bench/spawn.py $(if $(BENCH_FULL),,--tasks 300 --rounds 1); \
	run bench/events.py $(if $(BENCH_FULL),,--subscribers 20 --instances 300 --rounds 1); \
	run bench/serialize.py $(if $(BENCH_FULL),,1); \
	if $(BIN)/python -c "import pymysql; pymysql.connect(host='127.0.0.1', user='root')" \
	  2>/dev/null; then run bench/storage_compare.py $(if $(BENCH_FULL),,--instances 300 --rounds 1); \
	else echo "== bench/storage_compare.py skipped: no MariaDB on 127.0.0.1:3306"; fi

clean:
	rm -rf $(VENV) var build dist *.egg-info

-include packaging.mk
