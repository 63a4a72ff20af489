# Cherry Live Gateway. `make run` and `make test` each set up everything they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=
PROFILE ?= smoke

.PHONY: run cluster test lint typecheck unit integration screenshots bench loadtest soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cherry-gateway serve --dev $(ARGS)

# A local cluster: a throwaway redis-server (127.0.0.1:6379 if free, data in a temp dir) and
# `cherry-gateway serve --dev --workers 2` against it on http://127.0.0.1:8080. Ctrl-C stops both.
# ARGS go to the gateway, e.g. ARGS="--workers auto --ice-host 127.0.0.1". Needs Debian's redis-server.
cluster: $(STAMP)
	$(BIN)/python -m loadtests.local_cluster $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/pytest -q tests/integration

# The README's screenshots (docs/screenshots/*.png) from tools/screenshots.py: a dev gateway and headless Chromium
# in a loopback-only namespace of its own, staging live rooms, chat and gifts, a guest on mic, a PK and the dashboard
# (about two minutes). Needs root, `ip netns`, Debian's chromium and fonts-noto-color-emoji (gifts are emoji); as root
# it installs the font when missing. ARGS go to the tool, e.g. ARGS="--out /tmp/shots". The tests write no screenshots.
screenshots: $(STAMP)
	@[ -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || [ "$$(id -u)" != 0 ] || \
	  { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq --no-install-recommends fonts-noto-color-emoji || \
	    { apt-get update -qq && apt-get install -y -qq --no-install-recommends fonts-noto-color-emoji; }; } || true
	$(BIN)/python -m tools.screenshots $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q -rs tests

bench: $(STAMP)
	$(BIN)/python -m bench.run $(ARGS)

# Headless Locust run of configs/profiles/$(PROFILE).toml against a gateway it starts and stops
# itself on 127.0.0.1; bounded in time. Exit: 0 PASS, 1 FAIL, 3 INVALID, 4 skipped stub profile,
# 5 SETUP (tokens refused or no token source), 2 other set-up errors. Against a production gateway:
# ARGS="--base-url URL --secret-env NAME" (or --secret-file PATH, --token-command CMD).
loadtest: $(STAMP)
	$(BIN)/python -m loadtests.run --profile $(PROFILE) $(ARGS)

# Soak: hosts, churning viewers, chat and PK cycles for DURATION (e.g. 120s, 30m, 2h) against a gateway it
# starts on 127.0.0.1 (or ARGS="--base-url URL [--pid PID] [--metrics-url URL]"); RSS, fds, threads, tasks and
# loop lag sampled, plotted and judged flat after a warm-up (docs/soak.md). Exit: 0 PASS, 1 FAIL, 2 set-up error.
DURATION ?= 30m
soak: $(STAMP)
	$(BIN)/python -m soak.run --duration $(DURATION) $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
