# The two commands of the README. Each installs what it needs first (idempotent, cached).
.PHONY: demo test setup

setup:
	./scripts/setup.sh

demo: setup
	.venv/bin/aistack demo

test:
	./scripts/setup.sh --test
	.venv/bin/pytest -ra
