# The README's two commands: `make demo` and `make test`. Both bootstrap themselves.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
PYTEST_ARGS ?=

.PHONY: demo test lint bootstrap

bootstrap:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@$(UV) sync --frozen --quiet

demo: bootstrap
	$(UV) run bevis demo --out demo-out

test: bootstrap
	$(UV) run pytest $(PYTEST_ARGS)

lint: bootstrap
	$(UV) run ruff check .
	$(UV) run lint-imports
	$(UV) run mypy
