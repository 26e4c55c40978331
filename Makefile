# envctl: `make demo` runs the main job end to end; `make test` runs the tests.
# Both install what is missing on a fresh Debian machine (as root) and start the
# local stack (Docker Engine, registry on 127.0.0.1:5000, base image).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ENVCTL := $(BIN)/envctl
PYTEST_ARGS ?=

.PHONY: all install stack stack-down stack-status demo test lint typecheck unit integration bench clean

all: test

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV) || { [ "$$(id -u)" = 0 ] && apt-get update -q \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,postgres,gcp]'
	@# An editable install compiles no bytecode (a wheel's does); without it, and with
	@# PYTHONDONTWRITEBYTECODE set, every envctl run compiles its modules again.
	$(BIN)/python -m compileall -q pipeline >/dev/null
	@# The report's browser test drives Debian's chromium through chromedriver.
	if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -q \
			&& DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
		else echo "chromium and chromium-driver are missing (not root): the browser test will skip"; fi; \
	fi
	touch $@

install: $(BIN)/.installed

stack: install
	$(ENVCTL) stack up

stack-down: install
	$(ENVCTL) stack down

stack-status: install
	$(ENVCTL) stack status

lint: install
	$(BIN)/ruff check pipeline tests bench scripts
	$(BIN)/ruff format --check pipeline tests bench scripts

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: stack
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

test: lint typecheck stack
	$(BIN)/pytest $(PYTEST_ARGS)

demo: stack
	$(ENVCTL) validate
	$(BIN)/python scripts/demo.py

bench: stack
	@for b in bench/[!_]*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
