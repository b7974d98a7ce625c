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
SYSTEM_TEST_PACKAGES := chromium ca-certificates python3-venv

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

bench: install
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) var build dist *.egg-info

-include packaging.mk
