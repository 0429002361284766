# Two commands for a fresh machine: `make demo` (the active fine-tuning loop in simulation) and
# `make test`. Both install what they need first (scripts/setup.sh, idempotent).
SHELL := /bin/bash
PY := .venv/bin/python
export MUJOCO_GL ?= egl

.PHONY: setup demo test test-all lint
setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m active_finetune.commands.demo_loop

test: setup
	bash scripts/run_tests.sh

test-all: setup
	bash scripts/run_tests.sh --runslow
