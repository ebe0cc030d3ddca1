# One-command entry points; see README.md.
PYTHON ?= python3
export PYTHON

.PHONY: setup test demo clean

setup:
	@bash scripts/setup.sh

test: setup
	.venv/bin/python -m pytest tests

demo: setup
	.venv/bin/python scripts/demo.py

# Removes what setup put in the repo; the build cache stays (see README: "Removing it").
clean:
	rm -rf .venv out .pytest_cache
