"""The learner as a table of outcomes in, proposals out (pure functions: no store, no clock)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from aistack.contracts import Complexity, IterationLimits, Strategy
from aistack.ralph_wiggum import learning, rules
from aistack.ralph_wiggum.learning import Current, learn
from aistack.ralph_wiggum.records import IterationRecord, OutcomeRecord

T0 = datetime(2026, 11, 1, tzinfo=UTC)
NOW = Current(limits={"simple": 10, "default": 20, "complex": 50}, stuck_iterations=3, iteration_timeout_seconds=900)


def outcome(n: int, solved: bool, iterations: int, **fields) -> OutcomeRecord:
    base = OutcomeRecord(
        task_id=f"t{n}", status="completed" if solved else "exhausted", reason=None, complexity="simple", words=8, items=0,
        context_files=0, workspace="/w", backend="aider", model="qwen", strategy=None, iterations=iterations, max_iterations=10,
        limit_source="adaptive", evidence_rule="check_command" if solved else None, check_command="pytest", check_passed=solved,
        check_failure=None, promise=None, diff=True, prompt_tokens=1000 * iterations, completion_tokens=100 * iterations,
        seconds=20.0 * iterations, longest_iteration_seconds=30.0, idle_run=1, finished_at=T0 + timedelta(minutes=n),
    )  # fmt: skip
    return replace(base, **fields)


def solved_in(*counts: int, start: int = 0) -> list[OutcomeRecord]:
    return [outcome(start + i, True, c) for i, c in enumerate(counts)]


def failed(count: int, iterations: int = 10, start: int = 100, **fields) -> list[OutcomeRecord]:
    return [outcome(start + i, False, iterations, **fields) for i in range(count)]


def kinds(proposals) -> dict[str, learning.Proposal]:
    return {p.kind: p for p in proposals}


def test_a_class_limit_drops_to_the_most_any_success_needed_and_says_what_it_saves():
    found = kinds(learn(solved_in(1, 2, 2, 3, 1, 2) + failed(6), NOW))
    limit = found["iteration_limit"]
    assert limit.subject == "simple" and limit.changes == {"RALPH_MAX_ITERATIONS_SIMPLE": "3"}
    ev = limit.evidence
    assert (ev["tasks_total"], ev["solved"], ev["failed_past_limit"], ev["iterations_saved"]) == (12, 6, 6, 42)
    assert ev["tokens_saved"] == 6 * 7 * 1100 and ev["iterations_to_success"] == {"n": 6, "p50": 2, "p90": 3, "max": 3}
    assert ev["tasks"][0] == "t105" and len(ev["tasks"]) == 12  # newest first


def test_no_proposal_from_a_small_sample_or_too_few_successes():
    assert learn(solved_in(1, 2) + failed(1), NOW) == []  # three tasks
    assert "iteration_limit" not in kinds(learn(solved_in(1, 2) + failed(20), NOW))  # two successes are no distribution
    assert "iteration_limit" not in kinds(learn(solved_in(1, 2, 3) + failed(9), NOW, min_sample=13))


def test_no_lower_limit_when_the_failures_stopped_before_it_or_it_is_not_lower():
    assert "iteration_limit" not in kinds(learn(solved_in(1, 2, 3) + failed(9, iterations=3), NOW))
    assert "iteration_limit" not in kinds(learn(solved_in(9, 10, 10) + failed(9), NOW))


def test_stopped_and_rejected_tasks_are_no_evidence():
    stopped = [replace(o, status="stopped") for o in failed(20)]
    assert learn(solved_in(1, 2, 3) + stopped, NOW) == []


def test_each_backends_timeout_follows_its_longest_successful_iteration_in_one_proposal():
    aider = solved_in(1, 1, 1) + failed(9, longest_iteration_seconds=900.0)
    script = [replace(o, task_id=f"c{o.task_id}", backend="command", longest_iteration_seconds=2.0) for o in solved_in(1, 1, 1) + failed(9)]
    few = [replace(o, task_id=f"g{o.task_id}", backend="goose") for o in solved_in(1, 1, 1)]  # too few tasks: kept as it is
    now = replace(NOW, backend_timeouts={"goose": 300})
    timeout = kinds(learn(aider + script + few, now))["iteration_timeout"]
    assert timeout.changes == {"RALPH_BACKEND_TIMEOUT_SECONDS": "aider=60,command=60,goose=300"}  # 1.5 x 30 s, at least a minute
    aider_evidence = timeout.evidence["aider"]
    assert aider_evidence["failed_with_longer"] == 9 and aider_evidence["longest_iteration_seconds_of_solved"]["max"] == 30.0
    assert set(timeout.evidence) == {"aider", "command"} and "aider 900 -> 60 s" in timeout.summary
    slow = [replace(o, longest_iteration_seconds=500.0) for o in solved_in(1, 1, 1)]
    assert "iteration_timeout" not in kinds(learn(slow + failed(9), replace(NOW, backend_timeouts={"aider": 800})))  # 750 is close


def test_the_stuck_threshold_sits_above_what_a_success_came_back_from():
    found = kinds(learn(solved_in(2, 2, 2) + failed(9, idle_run=5), replace(NOW, stuck_iterations=6)))
    assert found["stuck_threshold"].changes == {"RALPH_STUCK_ITERATIONS": "2"} and found["stuck_threshold"].evidence["failed_idling"] == 9
    assert "stuck_threshold" not in kinds(learn(solved_in(2, 2, 2) + failed(9, idle_run=0), replace(NOW, stuck_iterations=6)))


def test_the_strategy_that_solves_a_class_more_often_is_proposed_with_its_settings():
    best = {"keep_best": True, "feedback": "shaped"}
    today = solved_in(1, 1, 1, 1) + failed(8)
    better = [replace(o, task_id=f"b{o.task_id}", strategy=best) for o in solved_in(1, 1, 1, 1, 1, 1, 1, 1) + failed(4)]
    strategy = kinds(learn(today + better, NOW))["strategy"]
    assert strategy.changes == {"RALPH_STRATEGY_KEEP_BEST": "true", "RALPH_STRATEGY_FEEDBACK": "shaped"}
    per = strategy.evidence["per_strategy"]
    assert sorted(v["success_rate"] for v in per.values()) == [0.333, 0.667]
    assert "strategy" not in kinds(learn(today + better, replace(NOW, strategy=Strategy(keep_best=True, feedback="shaped"))))


def test_a_backend_that_fails_a_class_another_solves_is_named():
    good = solved_in(*[1] * 10)
    bad = failed(10, backend="goose", model="qwen")
    [advice] = [p for p in learn(good + bad, NOW) if p.kind == "backend"]
    assert advice.subject == "simple:goose/qwen" and advice.changes == {} and advice.evidence["better"] == {"aider/qwen": 1.0}


def test_the_same_check_failing_across_tasks_drafts_a_task_to_fix_it():
    same = failed(4, check_failure="test_add", workspace="/repo")
    other = failed(3, start=200, check_failure="test_sub", workspace="/repo")
    [task] = [p for p in learn(same + other, NOW, min_sample=4) if p.kind == "task"]
    assert task.task is not None and task.task["workspace"] == "/repo" and task.task["check_command"] == "pytest"
    assert "test_add" in task.task["prompt"] and task.evidence["tasks_total"] == 4 and task.changes == {}


def test_features_and_idle_runs_of_a_task():
    assert learning.features("Do:\n- a\n- b\n", {"files": ["x.py"], "read_only_files": ["y.py"]}) == ("default", 5, 2, 2)
    its = [IterationRecord("t", n, T0, "success", files_modified=files) for n, files in enumerate([(), ("a",), (), (), ("b",), ()], 1)]
    assert learning.idle_run(its) == 2 and learning.idle_run([]) == 0


LIMITS = IterationLimits(ralph_max_iterations_simple=10, ralph_max_iterations_default=20, ralph_max_iterations_complex=50,
                         ralph_adaptive_iterations=True, ralph_max_iterations_cap=100)  # fmt: skip


def past(words: int, iterations: int, solved: bool, items: int = 0, files: int = 0) -> rules.PastTask:
    return rules.PastTask("simple", words, items, files, iterations, solved)


def test_a_learned_limit_comes_from_the_most_similar_past_tasks_once_enough_have_finished():
    short = [past(6, n, True) for n in (1, 2, 2)] + [past(6, 10, False)] * 12
    longer = [past(30, n, True) for n in (6, 7, 8)]  # less like a 6-word prompt: not among its nearest 15
    history = short + longer
    choice = rules.choose_limit(None, "fix the typo in the greeting", LIMITS, past=history, learn_after=18)
    assert (choice.max_iterations, choice.source, choice.complexity) == (3, "learned", Complexity.simple)
    assert "3 solved, in at most 2 iterations" in choice.reason
    below = rules.choose_limit(None, "fix the typo in the greeting", LIMITS, past=history, learn_after=19)
    assert (below.max_iterations, below.source) == (10, "adaptive")  # too few finished: the keyword classes
    off = rules.choose_limit(None, "fix the typo in the greeting", LIMITS, past=history, learn_after=0)
    assert off.source == "adaptive"
    asked = rules.choose_limit(4, "fix the typo in the greeting", LIMITS, past=history, learn_after=1)
    assert (asked.max_iterations, asked.source) == (4, "request")


def test_too_few_similar_successes_or_another_class_fall_back_to_the_class_limit():
    few = [past(6, 1, True)] * 2 + [past(6, 10, False)] * 20
    assert rules.choose_limit(None, "fix the typo in the greeting", LIMITS, past=few, learn_after=5).source == "adaptive"
    others = [rules.PastTask("complex", 6, 0, 0, 1, True)] * 20  # solved, but of another class
    assert rules.choose_limit(None, "fix the typo in the greeting", LIMITS, past=others, learn_after=5).source == "adaptive"
    assert rules.learned_limit("fix it", 0, [past(6, 200, True)] * 5, cap=100).max_iterations == 100  # never above the cap


def test_past_tasks_are_the_outcomes_the_loop_ended():
    ended = solved_in(2) + failed(1) + [replace(outcome(7, False, 3), status="stopped")]
    assert learning.past_tasks(ended) == [rules.PastTask("simple", 8, 0, 0, 2, True), rules.PastTask("simple", 8, 0, 0, 10, False)]
