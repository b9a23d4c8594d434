# The two commands of the README. Each installs what it needs first (idempotent, cached).
.PHONY: demo test setup bench

setup:
	./scripts/setup.sh

demo: setup
	.venv/bin/aistack demo

test:
	./scripts/setup.sh --test
	.venv/bin/pytest -ra

# The fast benchmarks (the loop and the API, under 3 minutes), each figure beside its same-run anchor.
bench:
	./scripts/setup.sh --bench
	.venv/bin/python bench/bench_loop.py
	.venv/bin/python bench/bench_api.py
