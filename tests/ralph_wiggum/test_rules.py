"""Every decision rule of the loop, branch by branch (pure functions: no I/O)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aistack.contracts import Complexity, IterationLimits, TaskStatus
from aistack.ralph_wiggum import rules
from aistack.ralph_wiggum.records import IterationRecord, TaskRecord
from support import REPO_ROOT


def Limits(simple: int, default: int, complex: int, adaptive: bool, cap: int) -> IterationLimits:  # noqa: N802
    return IterationLimits(
        ralph_max_iterations_simple=simple, ralph_max_iterations_default=default, ralph_max_iterations_complex=complex,
        ralph_adaptive_iterations=adaptive, ralph_max_iterations_cap=cap,
    )  # fmt: skip


LIMITS = Limits(simple=10, default=20, complex=50, adaptive=True, cap=100)


def facts(n=1, ok=True, out="reply", files=(), check=None, check_out=None):
    status = "success" if ok else "error"
    return _it(n, status=status, output=out, files_modified=tuple(files), check_exit_code=check, check_output=check_out)


# --- limits ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "requested, prompt, limits, expected, source, complexity",
    [
        (7, "anything", LIMITS, 7, "request", None),
        (None, "Fix the typo in README", LIMITS, 10, "adaptive", Complexity.simple),
        (None, "Refactor the storage layer to use repositories", LIMITS, 50, "adaptive", Complexity.complex),
        (None, " ".join(["word"] * 200), LIMITS, 50, "adaptive", Complexity.complex),
        (None, "Do:\n- a\n- b\n- c\n- d\n- e", LIMITS, 50, "adaptive", Complexity.complex),
        (None, " ".join(["word"] * 60), LIMITS, 20, "adaptive", Complexity.default),
        (None, "Fix the typo in README", Limits(10, 20, 50, False, 100), 20, "default", None),
        (None, "Refactor everything", Limits(10, 20, 50, True, 30), 30, "adaptive", Complexity.complex),
        (None, "Fix the typo", Limits(10, 20, 50, False, 15), 15, "default", None),
    ],
)
def test_choose_limit(requested, prompt, limits, expected, source, complexity):
    choice = rules.choose_limit(requested, prompt, limits)
    assert (choice.max_iterations, choice.source, choice.complexity) == (expected, source, complexity)
    assert choice.reason


def test_a_backends_limit_comes_after_the_requests_and_under_the_cap():
    assert (rules.choose_limit(None, "Refactor everything", LIMITS, 4).max_iterations, rules.choose_limit(None, "x", LIMITS, 4).source) == (
        4,
        "backend",
    )
    assert rules.choose_limit(7, "anything", LIMITS, 4).source == "request"
    assert rules.choose_limit(None, "anything", Limits(10, 20, 50, True, 30), 99).max_iterations == 30


@pytest.mark.parametrize("requested, problem", [(None, False), (1, False), (100, False), (0, True), (101, True), (-3, True)])
def test_limit_error(requested, problem):
    message = rules.limit_error(requested, 100)
    assert (message is not None) == problem
    if problem:
        assert "between 1 and 100" in message and str(requested) in message


# --- promise -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "output, found",
    [
        ("work done\n<promise>DONE</promise>\n", True),
        ("work done\n  <promise>  DONE </promise>  \n\n\n", True),
        ("\x1b[32m<promise>DONE</promise>\x1b[0m", True),
        ("I will print <promise>DONE</promise> when finished\nstill working", False),
        ("<promise>DONE</promise>\nmore text after", False),
        ("say `<promise>DONE</promise>` when done", False),
        ("<promise>NOT DONE</promise>", False),
        ("", False),
        ("<promise>DONE", False),
    ],
)
def test_promise_line(output, found):
    assert (rules.promise_line(output, "DONE") is not None) == found


@given(st.text(min_size=1, max_size=40).filter(lambda t: t.strip() and "\n" not in t and "\r" not in t))
def test_promise_survives_whitespace_changes(promise):
    spaced = "  ".join(promise.split())
    assert rules.promise_line(f"output\n<promise>{spaced}</promise>\n", promise) is not None


# --- evidence ------------------------------------------------------------------------------------


def test_check_command_decides_when_given():
    assert rules.evidence_for(facts(check=1, files=["a"]), "pytest", None) is None
    ev = rules.evidence_for(facts(check=0, check_out="1 passed"), "pytest", None)
    assert ev.rule == "check_command" and ev.check_exit_code == 0 and ev.check_output == "1 passed"


def test_check_timeout_is_not_success():
    assert rules.evidence_for(facts(check=None, files=["a"]), "pytest", None) is None


def test_check_passing_counts_even_if_agent_errored():
    assert rules.evidence_for(facts(ok=False, check=0), "make test", None).rule == "check_command"


def test_promise_rule():
    assert rules.evidence_for(facts(out="done\n<promise>OK</promise>"), None, "OK").rule == "completion_promise"
    assert rules.evidence_for(facts(out="the promise is <promise>OK</promise>, soon", files=["x"]), None, "OK") is None


def test_check_and_promise_both_needed():
    assert rules.evidence_for(facts(out="no promise", check=0), "true", "OK") is None
    assert rules.evidence_for(facts(out="<promise>OK</promise>", check=1), "true", "OK") is None
    ev = rules.evidence_for(facts(out="<promise>OK</promise>", check=0), "true", "OK")
    assert ev.rule == "check_command" and ev.promise_line == "<promise>OK</promise>"


@pytest.mark.parametrize("ok, files, done", [(True, ["a.py"], True), (True, [], False), (False, ["a.py"], False)])
def test_diff_rule_without_check_or_promise(ok, files, done):
    ev = rules.evidence_for(facts(ok=ok, files=files), None, None)
    assert (ev is not None) == done
    if done:
        assert ev.rule == "diff" and ev.files_modified == files


# --- next status ---------------------------------------------------------------------------------


def decide(history, max_iterations=5, stuck=3, evidence=None):
    return rules.after_iteration(history[-1], evidence, history, max_iterations, stuck)


def test_success_on_last_allowed_iteration_is_completed():
    last = facts(n=5, check=0)
    ev = rules.evidence_for(last, "true", None)
    assert decide([last], max_iterations=5, evidence=ev) == rules.Decision(TaskStatus.completed, "check_command")


def test_limit_reached_without_evidence_is_exhausted_not_completed():
    assert decide([facts(n=5, files=["a"])], max_iterations=5).status is TaskStatus.exhausted


def test_without_evidence_below_the_limit_the_task_goes_on():
    assert decide([facts(n=1, files=["a"])]).status is TaskStatus.running  # approval, if needed, is the runner's gate


def test_stuck_after_threshold_same_output_no_changes():
    same = [facts(n=i, out=f"nothing to do (took {i}.2 s)") for i in (1, 2, 3)]
    assert decide(same, max_iterations=10).status is TaskStatus.failed
    assert decide(same, max_iterations=10).reason == "stuck"
    assert decide(same[:2], max_iterations=10).status is TaskStatus.running  # below threshold
    assert decide(same, max_iterations=10, stuck=0).status is TaskStatus.running  # disabled


def test_not_stuck_when_output_differs_or_files_change():
    varied = [facts(n=1, out="a"), facts(n=2, out="b"), facts(n=3, out="a")]
    assert decide(varied, max_iterations=10).status is TaskStatus.running
    changed = [facts(n=1, out="a"), facts(n=2, out="a", files=["x"]), facts(n=3, out="a")]
    assert decide(changed, max_iterations=10).status is TaskStatus.running


def test_evidence_beats_stuck_and_limit():
    same = [facts(n=i, out="x", check=0 if i == 3 else 1) for i in (1, 2, 3)]
    ev = rules.evidence_for(same[-1], "true", None)
    assert decide(same, max_iterations=3, evidence=ev).status is TaskStatus.completed


@pytest.mark.parametrize(
    "required, next_it, approved_through, wait",
    [(False, 1, 0, False), (True, 1, 0, True), (True, 1, 1, False), (True, 2, 1, True), (True, 3, 3, False)],
)
def test_needs_approval_gates_every_iteration(required, next_it, approved_through, wait):
    assert rules.needs_approval(required, next_it, approved_through) is wait


# --- retries and prompt --------------------------------------------------------------------------


def test_retry_delay_backs_off_within_budget():
    assert [rules.retry_delay(a, 0, 120) for a in (1, 2, 3, 4, 5, 6)] == [1, 2, 4, 8, 10, 10]
    assert rules.retry_delay(3, 119.5, 120) == 0.5
    assert rules.retry_delay(1, 120, 120) is None
    assert rules.retry_delay(1, 0, 0) is None


def test_compose_prompt_appends_failed_check_only():
    assert rules.compose_prompt("P", None, [facts(check=1)]) == "P"
    assert rules.compose_prompt("P", "pytest", []) == "P"
    assert rules.compose_prompt("P", "pytest", [facts(check=0)]) == "P"
    composed = rules.compose_prompt("P", "pytest", [facts(check=2, check_out="E   assert 1 == 2")])
    assert composed.startswith("P\n\n") and "exit code 2" in composed and "assert 1 == 2" in composed


def test_a_run_that_changed_only_protected_files_made_no_progress_and_the_next_prompt_names_them():
    cheat = replace(facts(check=1, check_out="E   assert 1 == 2"), protected_undone=("tests/test_a.py",))
    recorded = rules.with_progress(cheat, None, "pytest")
    assert recorded.status == rules.NO_PROGRESS and recorded.error == "no progress: changed only protected files, and that was undone"
    composed = rules.compose_prompt("P", "pytest", [recorded])
    assert "Attempt 1 changed tests/test_a.py, which this task does not let you change" in composed
    assert "assert 1 == 2" in composed  # the check, on the real tests, still says what is wrong
    work = replace(cheat, files_modified=("app.py",))  # it also did work: that is progress, and kept
    assert rules.with_progress(work, None, "pytest").status == "success"
    assert "tests/test_a.py" in rules.compose_prompt("P", "pytest", [work])


def test_excerpt_keeps_the_end():
    assert rules.excerpt("x" * 10 + "END", 5) == "…x" * 0 + "…xxEND"
    assert rules.excerpt(None) == ""


# --- the state machine and an iteration's outcome ----------------------------------------------

S = TaskStatus
OPEN = {S.queued, S.running, S.awaiting_approval}


@pytest.mark.parametrize(
    "action, sources, target",
    [
        (rules.Action.start, {S.queued, S.running}, S.running),
        (rules.Action.ask_approval, {S.running}, S.awaiting_approval),
        (rules.Action.approve, {S.awaiting_approval}, S.running),
        (rules.Action.reject, {S.awaiting_approval}, S.rejected),
        (rules.Action.stop, OPEN, S.stopped),
        (rules.Action.fail, OPEN, S.failed),
        (rules.Action.proceed, {S.running}, S.running),
        (rules.Action.complete, {S.running}, S.completed),
        (rules.Action.exhaust, {S.running}, S.exhausted),
    ],
)
def test_each_action_leads_from_its_sources_to_one_status(action, sources, target):
    step = rules.transition(action)
    assert (step.sources, step.target) == (frozenset(sources), target)


def test_an_ended_task_has_no_way_out_and_every_status_is_reachable():
    assert not [pair for pair in rules.TRANSITIONS if pair[0].terminal]
    assert {S.queued} | set(rules.TRANSITIONS.values()) == set(S)


@pytest.mark.parametrize("status", [S.running, S.completed, S.failed, S.exhausted])
def test_every_decision_after_an_iteration_is_a_transition_from_running(status):
    step = rules.transition(rules.Decision(status).action)
    assert step.target is status and S.running in step.sources


def _task(**fields) -> TaskRecord:
    now = datetime.now(UTC)
    values = {"id": "t1", "prompt": "p", "backend": "command", "workspace": "/w", "status": S.running,
              "max_iterations": 5, "limit_source": "request", "created_at": now, "updated_at": now, **fields}  # fmt: skip
    return TaskRecord(**values)


def _it(n: int = 1, **fields) -> IterationRecord:
    return IterationRecord(**{"task_id": "t1", "number": n, "started_at": datetime.now(UTC), "status": "success", **fields})


@pytest.mark.parametrize(
    "task, it, history, status, reason, kinds",
    [
        (_task(check_command="pytest"), _it(check_exit_code=0, check_output="ok"), [], S.completed, "check_command",
         ["check", "iteration_finished"]),
        (_task(check_command="pytest"), _it(check_exit_code=1), [], None, None, ["check", "iteration_finished"]),
        (_task(), _it(files_modified=("a",)), [], S.completed, "diff", ["iteration_finished"]),
        (_task(require_approval=True), _it(), [], None, None, ["iteration_finished"]),  # the runner asks before the next
        (_task(max_iterations=2), _it(2), [_it(1, output="x")], S.exhausted, "max_iterations", ["iteration_finished"]),
        (_task(), _it(3, output="same"), [_it(1, output="same"), _it(2, output="same")], S.failed, "stuck",
         ["iteration_finished"]),
    ],
)  # fmt: skip
def test_an_iterations_outcome_is_everything_to_store(task, it, history, status, reason, kinds):
    out = rules.outcome(it, task, history, stuck_threshold=3)
    assert out.update.status is status  # None: the task goes on running, unchanged
    assert out.update.completion_reason == reason
    assert [kind for kind, _ in out.events] == kinds
    finished = dict(out.events)["iteration_finished"]
    assert finished["iteration"] == it.number and finished["files_modified"] == list(it.files_modified)
    assert (out.update.evidence is not None) == (status is S.completed)
    assert (out.update.error is not None) == (reason == "stuck")


def test_the_architecture_doc_shows_this_state_machine():
    """docs/architecture.md draws the table; it must stay the one the code runs."""
    doc = (REPO_ROOT / "docs" / "architecture.md").read_text()
    lines = doc[doc.index("| from \\ action |") :].splitlines()
    actions = [cell.strip() for cell in lines[0].strip("|").split("|")[1:]]
    drawn = {}
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        source, *cells = (cell.strip() for cell in line.strip("|").split("|"))
        if source in {s.value for s in S}:
            drawn |= {(S(source), rules.Action(a)): S(c) for a, c in zip(actions, cells, strict=True) if c}
    assert drawn == rules.TRANSITIONS
