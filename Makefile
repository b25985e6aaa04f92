# `make test` and `make demo` set themselves up: a .venv with the project and its test extras; `make test`
# also installs Debian's chromium and a Chinese font for the browser tests (as root, or through sudo).
PYTHON ?= python3
CHROMIUM ?= /usr/bin/chromium
CJK_FONT ?= /usr/share/fonts/truetype/wqy/wqy-microhei.ttc
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint demo bench faults clean

$(CHROMIUM):
	@echo "installing Debian's chromium for the browser tests"
	$(SUDO) apt-get update -q
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends chromium

# a Chinese font, so the screenshots the browser tests save show the pages' Chinese, not boxes
$(CJK_FONT):
	@echo "installing a Chinese font for the browser tests' screenshots"
	$(SUDO) apt-get update -q
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends fonts-wqy-microhei

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/mypy

# one pytest-xdist worker per core (PYTEST_XDIST_AUTO_NUM_WORKERS=N picks another count). Not --dist
# loadfile or loadscope: they queue tests by id, and schemathesis gives each operation's test the same id
# (tests/e2e/test_openapi.py), so all but one would silently not run.
test: lint $(CHROMIUM) $(CJK_FONT)
	$(BIN)/python -m pytest -q -n auto

demo: $(STAMP)
	$(BIN)/cunsync demo

bench: $(STAMP)
	$(BIN)/python bench/ingest.py

# the fault-injection suite alone, with its table of faults injected and ops lost (also part of `make test`)
faults: $(STAMP)
	$(BIN)/python -m tests.faults

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .hypothesis build *.egg-info
