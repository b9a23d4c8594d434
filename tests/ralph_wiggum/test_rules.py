"""Every decision rule of the loop, branch by branch (pure functions: no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aistack.contracts import Complexity, TaskStatus
from aistack.ralph_wiggum import rules
from aistack.ralph_wiggum.rules import IterationFacts, Limits

LIMITS = Limits(simple=10, default=20, complex=50, adaptive=True, cap=100)


def facts(n=1, ok=True, out="reply", files=(), check=None, check_out=None):
    return IterationFacts(number=n, succeeded=ok, output=out, files_modified=tuple(files), check_exit_code=check, check_output=check_out)


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


def decide(history, max_iterations=5, stuck=3, approval=False, evidence=None):
    return rules.after_iteration(history[-1], evidence, history, max_iterations, stuck, approval)


def test_success_on_last_allowed_iteration_is_completed():
    last = facts(n=5, check=0)
    ev = rules.evidence_for(last, "true", None)
    assert decide([last], max_iterations=5, evidence=ev) == rules.Decision(TaskStatus.completed, "check_command")


def test_limit_reached_without_evidence_is_exhausted_not_completed():
    assert decide([facts(n=5, files=["a"])], max_iterations=5).status is TaskStatus.exhausted


def test_continue_or_wait_for_approval():
    assert decide([facts(n=1, files=["a"])]).status is TaskStatus.running
    assert decide([facts(n=1, files=["a"])], approval=True).status is TaskStatus.awaiting_approval


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
    assert rules.compose_prompt("P", None, facts(check=1)) == "P"
    assert rules.compose_prompt("P", "pytest", None) == "P"
    assert rules.compose_prompt("P", "pytest", facts(check=0)) == "P"
    composed = rules.compose_prompt("P", "pytest", facts(check=2, check_out="E   assert 1 == 2"))
    assert composed.startswith("P\n\n") and "exit code 2" in composed and "assert 1 == 2" in composed


def test_excerpt_keeps_the_end():
    assert rules.excerpt("x" * 10 + "END", 5) == "…x" * 0 + "…xxEND"
    assert rules.excerpt(None) == ""
