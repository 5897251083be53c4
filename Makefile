# `make demo` and `make test` set everything up first (a virtual environment in .venv with the
# pinned torch/torchvision and the package), so both work on a fresh machine.

PYTHON  ?= $(shell command -v python3.11 || command -v python3)
VENV    ?= .venv
BIN      = $(VENV)/bin
STAMP    = $(VENV)/.installed
# Docker Compose v2 (`docker compose`), or the standalone `docker-compose` where only that exists.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)

.PHONY: help install test lint typecheck unit demo bench compose-config build up down ps logs

help:
	@echo "install demo test lint typecheck unit bench | compose-config build up down ps logs"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## virtual environment with the package (editable) and the dev tools

demo: $(STAMP)  ## embedded API + worker on Animal-MNIST; no servers needed
	$(BIN)/forgetd demo

test: $(STAMP) lint typecheck  ## the whole suite: needs PostgreSQL and Redis (see README)
	$(BIN)/python -m pytest

unit: $(STAMP)  ## fast tests only (no database, broker or worker)
	$(BIN)/python -m pytest tests/unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)  ## benchmarks; results in bench/results/*.json
	$(BIN)/python -m bench.sisa_deletion
	$(BIN)/python -m bench.class_forgetting
	$(BIN)/python -m bench.audit_overhead

compose-config:  ## validate docker-compose.yml (needs only the client, no engine)
	$(COMPOSE) -f docker-compose.yml config -q

build:
	$(COMPOSE) build

up:  ## postgres, redis, migrate, api, GPU worker
	$(COMPOSE) up -d --build

down:
	$(COMPOSE) down

ps:
	$(COMPOSE) ps

logs:
	$(COMPOSE) logs -f
