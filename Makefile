# Cold Harbour. Quick start: `make demo`, `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip -q --disable-pip-version-check

.PHONY: demo look test lint bench venv deps dev-deps system-deps node-deps clean-db

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.deps: requirements.txt | $(BIN)/python
	$(PIP) install -r requirements.txt
	@touch $@

$(VENV)/.dev-deps: requirements.txt requirements-dev.txt | $(BIN)/python
	$(PIP) install -r requirements-dev.txt
	@touch $@ $(VENV)/.deps

venv: $(BIN)/python
deps: $(VENV)/.deps
dev-deps: $(VENV)/.dev-deps

# Browser tests need Debian's chromium + chromedriver; the entrypoint test needs shellcheck.
# Installed when missing (root + apt only); prints what it installs.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	command -v shellcheck >/dev/null 2>&1 || missing="$$missing shellcheck"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	if [ -z "$$missing" ]; then \
		echo "system deps: chromium, chromedriver, shellcheck and npm present"; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "system deps: installing$$missing with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else \
		echo "system deps: missing$$missing and cannot install them (need root + apt-get)" >&2; exit 1; \
	fi

# The dashboard's browser packages (package.json): plotly.js's cartesian bundle and regenerator-runtime.
# Optional for `make demo` (without npm: plotly's full bundle and Dash's polyfill); `make test` checks them.
node_modules/.installed: package.json
	@if command -v npm >/dev/null 2>&1; then \
		echo "node deps: npm install (plotly.js-cartesian-dist-min, regenerator-runtime)"; \
		npm install --no-audit --no-fund --loglevel=error && touch $@; \
	else \
		echo "node deps: npm not found; the dashboard will serve plotly's full bundle"; \
	fi

node-deps: node_modules/.installed

## demo: embedded PostgreSQL + simulator + workers + dashboard on http://127.0.0.1:5000 (Ctrl-C stops all)
demo: deps node-deps
	$(BIN)/python -m scripts.demo

## test: the whole suite (embedded PostgreSQL, or TEST_DATABASE_URL when set)
test: dev-deps system-deps node-deps
	$(BIN)/python -m pytest -q

## lint: ruff + mypy (strict on core/ and workers/)
lint: dev-deps
	$(BIN)/ruff check .
	$(BIN)/mypy core workers dashboard simulator
	shellcheck entrypoint.sh

## bench: every benchmark's quick variant; writes bench/results/latest.json
bench: dev-deps
	$(BIN)/python -m bench all --quick

clean-db:
	rm -rf .coldharbour/pgdata

## look: the demo on free ports, a minute of trading, screenshots of every page (light/dark, desktop/390 px)
##       in .coldharbour/look/<time>/ (paths printed, problems listed); `make look ARGS=--docs` refreshes docs/screenshots/
look: deps dev-deps system-deps node-deps
	$(BIN)/python -m scripts.look $(ARGS)
