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
    found = kinds(learn(solved_in(1, 2, 2, 3, 1, 2) + failed(10), NOW))
    limit = found["iteration_limit"]
    assert limit.subject == "simple" and limit.changes == {"RALPH_MAX_ITERATIONS_SIMPLE": "3"}
    ev = limit.evidence
    assert (ev["tasks_total"], ev["solved"], ev["failed_past_limit"], ev["iterations_saved"]) == (16, 6, 10, 70)
    assert ev["tokens_saved"] == 10 * 7 * 1100 and ev["iterations_to_success"] == {"n": 6, "p50": 2, "p90": 3, "max": 3}
    assert ev["tasks"][0] == "t109" and len(ev["tasks"]) == 16  # newest first


def test_no_proposal_from_a_small_sample_or_too_few_successes():
    assert learn(solved_in(1, 2) + failed(1), NOW) == []  # three tasks
    assert "iteration_limit" not in kinds(learn(solved_in(1, 2) + failed(20), NOW))  # two successes are no distribution
    assert "iteration_limit" not in kinds(learn(solved_in(1, 2, 3) + failed(10), NOW, min_sample=11))


def test_no_lower_limit_until_enough_failures_ran_on_past_it_for_nothing():
    assert "iteration_limit" not in kinds(learn(solved_in(1, 2, 3) + failed(9, iterations=3), NOW))  # stopped there
    assert "iteration_limit" not in kinds(learn(solved_in(9, 10, 10) + failed(9), NOW))  # not lower
    assert "iteration_limit" not in kinds(learn(solved_in(1, 2, 3) + failed(9), NOW))  # 9 ran on: too few to show it
    assert "iteration_limit" in kinds(learn(solved_in(1, 2, 3) + failed(10), NOW))


def test_a_strategy_that_rescues_late_keeps_its_room_until_its_own_tasks_show_otherwise():
    """A restart rescued at iteration 3 must not lose it to a limit the plain loop's tasks support."""
    restart = {"restart": True, "diversity": True}
    loop = solved_in(1, 1, 1) + failed(10, iterations=5)
    late = [replace(o, task_id=f"r{o.task_id}", strategy=restart) for o in solved_in(1, 1, 2, 3) + failed(4, iterations=5)]
    now = replace(NOW, limits={**NOW.limits, "simple": 5})
    assert kinds(learn(loop, now))["iteration_limit"].changes == {"RALPH_MAX_ITERATIONS_SIMPLE": "1"}
    assert "iteration_limit" not in kinds(learn(loop + late, now))  # 4 restarts ran on past 3: too few to show it
    shown = late + [replace(o, task_id=f"s{o.task_id}", strategy=restart) for o in failed(6, iterations=5, start=300)]
    limit = kinds(learn(loop + shown, now))["iteration_limit"]
    assert limit.changes == {"RALPH_MAX_ITERATIONS_SIMPLE": "3"} and limit.evidence["ways_run"] == 2  # the restarts' 3, not the loop's 1
    never = [replace(o, task_id=f"g{o.task_id}", backend="goose") for o in failed(3, iterations=5, start=400)]
    assert kinds(learn(loop + never, now))["iteration_limit"].changes == {"RALPH_MAX_ITERATIONS_SIMPLE": "1"}  # no success: no say
    few = [replace(o, task_id=f"g{o.task_id}", backend="goose") for o in solved_in(1, start=500) + failed(3, iterations=5, start=400)]
    assert "iteration_limit" not in kinds(learn(loop + few, now))  # one success on goose: nothing shown for it


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
PLAIN_STRATEGY = Strategy()
PLAIN = rules.strategy_key(PLAIN_STRATEGY)
RESTART = Strategy(restart=True, diversity=True)


def past(
    iterations: int, solved: bool, backend: str = "aider", strategy: Strategy = PLAIN_STRATEGY, complexity: str = "simple"
) -> rules.PastTask:
    return rules.PastTask(complexity, backend, rules.strategy_key(strategy), iterations, solved)


def limit_for(
    prompt: str, history: rules.History, backend: str = "aider", strategy: Strategy = PLAIN_STRATEGY, requested: int | None = None
) -> rules.LimitChoice:
    return rules.choose_limit(requested, prompt, LIMITS, None, rules.learned_limit(prompt, backend, strategy, history))


def test_a_learned_limit_comes_from_past_tasks_of_the_same_class_backend_and_strategy_once_enough_have_finished():
    plain = [past(n, True) for n in (1, 2, 2)] + [past(10, False)] * 10
    late = [past(n, True, strategy=RESTART) for n in (1, 6, 7)] + [past(10, False, strategy=RESTART)] * 10
    other = [past(n, True, backend="goose") for n in (8, 8, 9)] + [past(10, False, backend="goose")] * 10
    history = rules.History(plain + late + other, after=39, min_evidence=10)
    choice = limit_for("fix the typo in the greeting", history)
    assert (choice.max_iterations, choice.source, choice.complexity) == (3, "learned", Complexity.simple)  # one above
    assert "13 past simple tasks on aider with this strategy: 3 solved, in at most 2 iterations; 10 still failing" in choice.reason
    assert limit_for("fix the typo in the greeting", history, strategy=RESTART).max_iterations == 8
    assert limit_for("fix the typo in the greeting", history, backend="goose").max_iterations == 10
    below = limit_for("fix the typo in the greeting", replace(history, after=40))
    assert (below.max_iterations, below.source) == (10, "adaptive")  # too few finished: the keyword classes
    assert limit_for("fix the typo in the greeting", replace(history, after=0)).source == "adaptive"  # off
    asked = limit_for("fix the typo in the greeting", history, requested=4)
    assert (asked.max_iterations, asked.source) == (4, "request")


def test_without_enough_evidence_alike_the_class_limit_decides():
    def source(tasks: list[rules.PastTask], strategy: Strategy = PLAIN_STRATEGY) -> str:
        return limit_for("fix the typo in the greeting", rules.History(tasks, after=5, min_evidence=10), strategy=strategy).source

    assert source([past(1, True)] * 2 + [past(10, False)] * 20) == "adaptive"  # two successes
    assert source([past(1, True)] * 3 + [past(10, False)] * 9) == "adaptive"  # nine ran on past 1: too few to show it
    assert source([past(1, True)] * 3 + [past(10, False)] * 10) == "learned"
    assert source([past(1, True, complexity="complex")] * 3 + [past(10, False, complexity="complex")] * 10) == "adaptive"
    assert source([past(1, True)] * 3 + [past(10, False)] * 10, strategy=RESTART) == "adaptive"  # ran otherwise
    capped = limit_for("fix it", rules.History([past(200, True)] * 3 + [past(300, False)] * 10, after=1, min_evidence=10))
    assert capped.max_iterations == 100  # never above the cap


def test_past_tasks_are_the_outcomes_the_loop_ended():
    ended = (
        solved_in(2)
        + failed(1)
        + [replace(outcome(7, False, 3), status="stopped")]
        + [replace(outcome(8, True, 1), strategy=RESTART.model_dump())]
    )
    assert learning.past_tasks(ended) == [past(2, True), past(10, False), past(1, True, strategy=RESTART)]
    assert PLAIN != rules.strategy_key(RESTART) and rules.strategy_key(Strategy.model_validate({})) == PLAIN
