# The two commands of the README. Each installs what it needs first (idempotent, cached).
.PHONY: demo test setup check bench

setup:
	./scripts/setup.sh

demo: setup
	.venv/bin/aistack demo

# The type and lint gate: part of `make test`.
check:
	.venv/bin/ruff check src tests bench
	.venv/bin/ruff format --check src tests bench
	.venv/bin/mypy

# AISTACK_TESTS_REQUIRE_ALL: a suite whose dependency is missing fails here instead of skipping.
test:
	./scripts/setup.sh --test
	$(MAKE) --no-print-directory check
	AISTACK_TESTS_REQUIRE_ALL=1 .venv/bin/pytest -ra

# The fast benchmarks (the loop and the API, under 3 minutes), each figure beside its same-run anchor.
bench:
	./scripts/setup.sh --bench
	.venv/bin/python bench/bench_loop.py
	.venv/bin/python bench/bench_api.py
