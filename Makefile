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

# System packages some tests need (SSH server, Debian build tools); installed only when we are
# root on a Debian-like machine, otherwise those tests skip with their reason.
system-test-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; \
	  for p in $(SYSTEM_TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing system test packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	fi

SYSTEM_TEST_PACKAGES := debhelper dh-python python3-all python3-setuptools

test: install system-test-deps
	$(BIN)/ruff check evqueue tests bench
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check evqueue tests bench

bench: install
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) var build dist *.egg-info

-include packaging.mk
