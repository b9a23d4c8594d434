"""How the loop tries again (the task's `Strategy`), rule by rule: no progress, the next prompt,
the best checkpoint, the sampling schedule. Pure functions: no I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from aistack.contracts import Sampling, Strategy, TaskStatus
from aistack.ralph_wiggum import rules
from aistack.ralph_wiggum.records import IterationRecord, TaskRecord

REPEATED = "repeated the previous reply, and the check got no further"
FAILING = {2: "E   assert 1 == 2\n2 failed, 1 passed in 0.02s", 1: "E   assert 3 == 4\n1 failed, 2 passed in 0.02s"}


def it(
    n: int, reply: str = "reply", files: tuple[str, ...] = (), failing: int | None = 1, commit: str | None = None, **more
) -> IterationRecord:
    """Iteration `n`; `failing`: how many tests its check left failing (0: it passed; None: no check)."""
    check = {} if failing is None else {"check_exit_code": 1 if failing else 0, "check_output": FAILING.get(failing, "passed")}
    values = {"task_id": "t1", "number": n, "started_at": datetime.now(UTC), "status": "success", "output": reply,
              "files_modified": files, "checkpoint_commit": commit or (f"c{n}" if files else None), **check, **more}  # fmt: skip
    return IterationRecord(**values)


def recorded(history: list[IterationRecord], check: str | None = "pytest") -> list[IterationRecord]:
    """The iterations as the runner records them: each classified against the one before."""
    out: list[IterationRecord] = []
    for item in history:
        out.append(rules.with_progress(item, out[-1] if out else None, check))
    return out


# --- no progress -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "current, previous, check, why",
    [
        (it(2), it(1, files=("a",)), "pytest", "changed no file"),
        (it(1), None, None, "changed no file"),
        (it(2, files=("a",)), it(1, files=("a",)), None, None),  # a change without a check is progress
        (it(2, status="error"), it(1), "pytest", None),  # a failed run is an error, not no progress
        (it(2, failing=0), it(1), "pytest", None),  # the check passes: the task is done
        (it(2, files=("a",)), it(1, files=("a",)), "pytest", REPEATED),
        (it(2, files=("a",), failing=1), it(1, files=("a",), failing=2), "pytest", None),  # the same reply, a better check
        (it(2, "other reply", files=("a",)), it(1, files=("a",)), "pytest", None),
        (it(2, "took 2.5 s", files=("a",)), it(1, "took 1.3 s", files=("a",)), "pytest", REPEATED),  # numbers aside
    ],
)  # fmt: skip
def test_no_progress(current, previous, check, why):
    assert rules.no_progress(current, previous, check) == why
    stored = rules.with_progress(current, previous, check)
    assert stored.status == (rules.NO_PROGRESS if why else current.status)
    assert stored.error == (f"no progress: {why}" if why else current.error)


def test_no_progress_is_neither_success_nor_evidence_and_stuck_still_needs_no_change_at_all():
    history = recorded([it(1, "same", files=("a",)), it(2, "same", files=("a",)), it(3, "same", files=("a",))])
    assert [i.status for i in history] == ["success", rules.NO_PROGRESS, rules.NO_PROGRESS]
    assert not history[-1].succeeded
    # legitimate work (files change) is never stuck, however alike the replies
    assert not rules.is_stuck(history, 3)
    idle = recorded([it(1, "same"), it(2, "same"), it(3, "same")])
    assert rules.is_stuck(idle, 3) and all(i.status == rules.NO_PROGRESS for i in idle)


# --- the next prompt ----------------------------------------------------------------------------------


@pytest.mark.parametrize("context", ["carried", "fresh"])
def test_no_request_repeats_the_one_before(context):
    """The observed failure: a no-op reply, then the very same request again and again."""
    strategy = Strategy(context=context)
    history = recorded([it(n, "I fixed it.\n```\n```") for n in (1, 2, 3, 4)])
    prompts = [rules.compose_prompt("P", "pytest", history[:n], strategy) for n in range(5)]
    assert len(set(prompts)) == 5
    assert "Attempt 4 changed no file." in prompts[4]
    assert ("I fixed it." in prompts[4]) is (context == "carried")  # fresh: no earlier reply
    assert prompts[4].startswith("P\n\nThe check `pytest` failed")  # the prompt first, for the prefix cache


def test_an_error_that_changed_nothing_is_named_so_the_next_request_differs():
    history = recorded([it(1, status="error", error="command exited with 1")])
    assert "Attempt 1 ended in an error (command exited with 1)" in rules.compose_prompt("P", "pytest", history)


def test_todays_prompt_is_unchanged_after_an_iteration_that_made_progress():
    history = recorded([it(1, files=("a",), failing=2)])
    assert rules.compose_prompt("P", "pytest", history) == (
        "P\n\nThe check `pytest` failed after the previous attempt (exit code 1). Its output:\n```\n"
        f"{FAILING[2]}\n```\nFix the cause and finish the task."
    )


def test_shaped_feedback_gives_the_first_failure_and_falls_back_to_the_tail():
    output = (
        "===== FAILURES =====\n_____ test_add _____\n\n    def test_add():\n>       assert add(1, 1) == 2\nE       assert 0 == 2\n\n"
        "test_calc.py:10: AssertionError\n===== short test summary info =====\nFAILED test_calc.py::test_add\n===== 1 failed in 0.01s ====="
    )
    history = [it(1, files=("a",), check_output=output)]
    shaped = rules.compose_prompt("P", "pytest", history, Strategy(feedback="shaped"))
    assert "(1 failing, 0 passing). Its first failure, in the project's own code" in shaped
    assert ">       assert add(1, 1) == 2\nE       assert 0 == 2" in shaped and "short test summary" not in shaped
    plain = [it(1, files=("a",), check_output="make: *** Error 2")]
    assert "Its output:\n```\nmake: *** Error 2\n```" in rules.compose_prompt("P", "make", plain, Strategy(feedback="shaped"))


# --- the best checkpoint ---------------------------------------------------------------------------------


def test_a_worse_attempt_is_undone_only_with_keep_best():
    history = recorded([it(1, files=("a.py",), failing=1), it(2, files=("a.py", "b.py"), failing=2)])
    kept = rules.position(history, "base", keep_best=True)
    assert (kept.commit, kept.best_commit, kept.best.number, kept.undone.number) == ("c1", "c1", 1, 2)  # type: ignore[union-attr]
    assert rules.position(history, "base", keep_best=False).commit == "c2"
    prompt = rules.compose_prompt("P", "pytest", history, Strategy(keep_best=True))
    assert "Attempt 2 changed a.py, b.py and made the check worse (2 failing, 1 passing, against 1 failing, 2 passing" in prompt
    assert "the files are as attempt 1 left them" in prompt and FAILING[1] in prompt and FAILING[2] not in prompt


def test_the_tree_stays_at_the_best_until_a_change_is_no_worse():
    history = recorded([
        it(1, files=("a",), failing=2), it(2, files=("a",), failing=1), it(3, "x", files=("a",), failing=2),
        it(4, "y", failing=1),  # changed nothing: the tree is still the best one
        it(5, "z", files=("b",), failing=1),  # as good: the tree moves on
    ])  # fmt: skip
    positions = [rules.position(history[:n], "base", keep_best=True) for n in range(1, 6)]
    assert [p.commit for p in positions] == ["c1", "c2", "c2", "c2", "c5"]
    assert [p.undone.number if p.undone else None for p in positions] == [None, None, 3, None, None]
    assert [p.best.number for p in positions if p.best] == [1, 2, 2, 2, 2]  # the first of equals stays the best


def test_the_best_can_be_the_base_when_the_first_attempt_changed_nothing():
    history = recorded([it(1, failing=1), it(2, files=("a",), failing=2)])
    at = rules.position(history, "base", keep_best=True)
    assert (at.commit, at.best.number) == ("base", 1)  # type: ignore[union-attr]


def test_outcome_records_the_best_checkpoint_and_what_to_restore():
    now = datetime.now(UTC)
    task = TaskRecord(id="t1", prompt="p", backend="command", workspace="/w", status=TaskStatus.running, max_iterations=5,
                      limit_source="request", created_at=now, updated_at=now, check_command="pytest", base_commit="base",
                      strategy=Strategy(keep_best=True).model_dump())  # fmt: skip
    history = recorded([it(1, files=("a",), failing=1)])
    worse = rules.with_progress(it(2, "other", files=("a",), failing=2), history[-1], "pytest")
    out = rules.outcome(worse, task, history, stuck_threshold=3)
    events = dict(out.events)
    assert out.restore == "c1" and out.decision.status is TaskStatus.running
    assert events["iteration_finished"]["best_iteration"] == 1 and events["iteration_finished"]["best_checkpoint"] == "c1"
    assert events["checkpoint_restored"] == {"iteration": 2, "to_iteration": 1, "commit": "c1",
                                             "reason": "2 failing, 1 passing, worse than after iteration 1"}  # fmt: skip
    todays = rules.outcome(worse, replace(task, strategy=None), history, stuck_threshold=3)
    assert todays.restore is None and "best_iteration" not in dict(todays.events)["iteration_finished"]


def test_restart_puts_the_tree_back_at_the_base_after_each_failed_check():
    history = recorded([it(1, "a", files=("a",), failing=1), it(2, "b", files=("a",), failing=2), it(3, "c", files=("a",), failing=0)])
    positions = [rules.position(history[:n], "base", keep_best=False, restart=True) for n in (1, 2, 3)]
    assert [p.commit for p in positions] == ["base", "base", "c3"]  # a pass stays where it is
    assert [p.best.number for p in positions if p.best] == [1, 1, 3] and positions[1].best_commit == "c1"
    assert rules.position(history[:2], "base", keep_best=True, restart=True).undone is None  # a restart, not an undo
    prompt = rules.compose_prompt("P", "pytest", history[:2], Strategy(restart=True))
    assert "The files are back as they were before attempt 2" in prompt and FAILING[2] in prompt  # the last attempt's failure
    assert "made the check worse" not in prompt and "Its reply was" not in prompt
    unchecked = recorded([it(1, files=("a.py",), failing=None)], None)
    assert rules.position(unchecked, "base", keep_best=False, restart=True).commit == "c1"  # no check: no restart


def test_a_restarting_task_goes_back_to_the_base_and_ends_at_its_best_attempt():
    now = datetime.now(UTC)
    task = TaskRecord(id="t1", prompt="p", backend="command", workspace="/w", status=TaskStatus.running, max_iterations=3,
                      limit_source="request", created_at=now, updated_at=now, check_command="pytest", base_commit="base",
                      strategy=Strategy(restart=True).model_dump())  # fmt: skip
    history = recorded([it(1, "a", files=("a",), failing=1)])
    second = rules.with_progress(it(2, "b", files=("a",), failing=2), history[-1], "pytest")
    going_on = rules.outcome(second, task, history, stuck_threshold=3)
    assert going_on.restore == "base" and going_on.decision.status is TaskStatus.running
    assert dict(going_on.events)["checkpoint_restored"] == {"iteration": 2, "to_iteration": None, "commit": "base", "reason": "restart"}
    last = rules.outcome(second, replace(task, max_iterations=2), history, stuck_threshold=3)  # exhausted here
    assert last.decision.status is TaskStatus.exhausted and last.restore == "c1"  # the branch keeps attempt 1, the better one
    assert dict(last.events)["checkpoint_restored"]["reason"] == "the task ended: its best attempt"
    passed = rules.outcome(rules.with_progress(it(2, "b", files=("a",), failing=0), history[-1], "pytest"), task, history, 3)
    assert passed.restore is None and passed.decision.status is TaskStatus.completed


# --- sampling ------------------------------------------------------------------------------------------


def test_diversity_samples_each_retry_hotter_with_a_seed_of_its_own():
    assert [rules.sampling(n, diversity=False) for n in (1, 2, 5)] == [None, None, None]
    schedule = [rules.sampling(n, diversity=True) for n in (1, 2, 3, 4, 5)]
    assert schedule[0] is None  # the first attempt runs as a single shot would
    assert schedule[1:] == [Sampling(temperature=t, seed=n) for t, n in ((0.4, 2), (0.7, 3), (1.0, 4), (1.0, 5))]


# --- parallel candidates -----------------------------------------------------------------------------


def test_the_candidate_whose_check_got_furthest_is_kept_the_first_of_equals():
    two_failing, one_failing = (1, FAILING[2]), (1, FAILING[1])
    assert rules.pick_candidate([two_failing, one_failing]) == (1, {"kept": 2, "checks": ["2 failing, 1 passing", "1 failing, 2 passing"]})
    assert rules.pick_candidate([one_failing, two_failing])[0] == 0
    assert rules.pick_candidate([one_failing, one_failing])[0] == 0
    assert rules.pick_candidate([(None, ""), two_failing])[0] == 1  # a timed-out check got least far
    assert rules.pick_candidate([(1, FAILING[1]), (0, "ok")]) == (1, {"kept": 2, "checks": ["1 failing, 2 passing", "the check passed"]})


def test_the_second_candidate_never_samples_as_the_first():
    assert rules.candidate_sampling(1, None) == Sampling(temperature=0.7, seed=10_001)
    assert rules.candidate_sampling(4, Sampling(temperature=1.0, seed=4)) == Sampling(temperature=1.0, seed=10_004)
