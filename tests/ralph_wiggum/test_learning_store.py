"""Outcomes and proposals in the store, on each database it runs on: a task's outcome is written in
the transaction that ends it (whichever way it ends), and a proposal's life (kept, refreshed,
superseded, decided) is a compare-and-set with every decision recorded."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, replace

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from aistack.contracts import TaskStatus
from aistack.ralph_wiggum.learning import Proposal, outcome_of
from aistack.ralph_wiggum.records import IterationRecord, NewTask, TaskRecord, TaskUpdate, utcnow
from aistack.ralph_wiggum.store import outcomes

RUNNING = [TaskStatus.running]
PYTEST_FAILURE = """\
=================================== FAILURES ===================================
__________________________________ test_add ____________________________________

    def test_add():
>       assert add(1, 2) == 3
E       assert -1 == 3

test_calc.py:4: AssertionError
=========================== short test summary info ============================
FAILED test_calc.py::test_add - assert -1 == 3
============================== 1 failed in 0.02s ===============================
"""


NOW = utcnow()
OUTCOME = outcome_of(TaskRecord("x", "p", "command", "/w", TaskStatus.failed, 1, "request", NOW, NOW), [], None)


def new_task(task_id: str, **fields) -> NewTask:
    return NewTask(**{"id": task_id, "prompt": "fix the typo in the greeting", "backend": "command", "workspace": "/w",
                      "max_iterations": 5, "limit_source": "adaptive", **fields})  # fmt: skip


def iteration(task_id: str, number: int, **fields) -> IterationRecord:
    return IterationRecord(**{"task_id": task_id, "number": number, "started_at": utcnow(), "status": "success", "output": "o",
                              "duration_seconds": 2.0 * number, "prompt_tokens": 100, "completion_tokens": 10, **fields})  # fmt: skip


def test_a_task_that_ends_writes_its_outcome_in_the_same_transaction(open_store):
    store = open_store(model="qwen2.5-coder-1.5b")

    async def scenario():
        await store.add_task(new_task("t1", check_command="pytest -q", context={"files": ["a.py", "b.py"]}, strategy={"keep_best": True}))
        await store.apply("t1", TaskUpdate(status=TaskStatus.running), [TaskStatus.queued])
        await store.record_iteration(iteration("t1", 1, check_exit_code=1, check_output="boom"), TaskUpdate(), [], RUNNING)
        assert await store.outcomes() == []  # not finished yet
        await store.record_iteration(iteration("t1", 2, check_exit_code=1, check_output="same"), TaskUpdate(), [], RUNNING)
        last = iteration("t1", 3, files_modified=("a.py",), check_exit_code=0, check_output="ok")
        evidence = {"rule": "check_command", "iteration": 3, "detail": "d"}
        done = TaskUpdate(status=TaskStatus.completed, completion_reason="check_command", evidence=evidence)
        await store.record_iteration(last, done, [], RUNNING)
        [o] = await store.outcomes()
        assert (o.task_id, o.status, o.reason, o.complexity) == ("t1", "completed", "check_command", "simple")
        assert (o.words, o.items, o.context_files, o.workspace) == (6, 0, 2, "/w")
        assert (o.backend, o.model, o.strategy, o.iterations, o.max_iterations, o.limit_source) == (
            "command", "qwen2.5-coder-1.5b", {"keep_best": True}, 3, 5, "adaptive")  # fmt: skip
        assert (o.evidence_rule, o.check_passed, o.check_failure, o.promise, o.diff) == ("check_command", True, None, None, True)
        assert (o.prompt_tokens, o.completion_tokens, o.seconds, o.longest_iteration_seconds, o.idle_run) == (300, 30, 12.0, 6.0, 2)
        assert o.finished_at == (await store.get("t1")).finished_at

    asyncio.run(scenario())


def test_every_way_out_writes_one_outcome_and_a_failing_check_is_named(open_store):
    store = open_store()

    async def scenario():
        await store.add_task(new_task("stopped"))
        await store.apply("stopped", TaskUpdate(status=TaskStatus.stopped, completion_reason="stopped by user"))
        await store.apply("stopped", TaskUpdate(status=TaskStatus.failed, error="late"))  # already ended: no second outcome
        await store.add_task(new_task("exhausted", check_command="pytest -q", completion_promise="DONE"))
        await store.apply("exhausted", TaskUpdate(status=TaskStatus.running), [TaskStatus.queued])
        it = iteration("exhausted", 1, files_modified=("calc.py",), check_exit_code=1, check_output=PYTEST_FAILURE)
        await store.record_iteration(it, TaskUpdate(status=TaskStatus.exhausted, completion_reason="max_iterations"), [], RUNNING)
        by_id = {o.task_id: o for o in await store.outcomes()}
        assert set(by_id) == {"stopped", "exhausted"}
        stopped = by_id["stopped"]
        assert (stopped.status, stopped.iterations, stopped.seconds, stopped.diff) == ("stopped", 0, 0.0, False)
        gone = by_id["exhausted"]
        assert (gone.check_passed, gone.check_failure, gone.promise, gone.idle_run) == (False, "test_add", False, 0)

    asyncio.run(scenario())


def proposal(subject: str, value: str, tasks: list[str]) -> Proposal:
    return Proposal("iteration_limit", subject, f"limit {value}", {"RALPH_MAX_ITERATIONS_SIMPLE": value}, {"tasks": tasks})


def test_proposals_are_kept_refreshed_superseded_and_decided_once(open_store):
    store = open_store()

    async def scenario():
        [first] = await store.save_proposals([proposal("simple", "4", ["a"])])
        assert first.status == "open" and first.changes == {"RALPH_MAX_ITERATIONS_SIMPLE": "4"}
        [again] = await store.save_proposals([proposal("simple", "4", ["a", "b"])])  # same change: new evidence, same proposal
        assert again.id == first.id and again.evidence == {"tasks": ["a", "b"]}
        [other] = await store.save_proposals([proposal("simple", "5", ["c"])])  # a different change replaces it
        assert other.id != first.id and (await store.proposal(first.id)).status == "superseded"
        accepted = await store.decide(other.id, "accepted", "ann", ["open"], "accepted", previous={"RALPH_MAX_ITERATIONS_SIMPLE": None})
        assert accepted is not None and accepted.status == "accepted" and accepted.previous == {"RALPH_MAX_ITERATIONS_SIMPLE": None}
        assert await store.decide(other.id, "rejected", "bob", ["open"], "rejected") is None  # no longer open
        assert await store.save_proposals([proposal("simple", "5", ["c", "d"])]) == []  # accepted already
        await store.decide(other.id, "rolled_back", "bob", ["accepted"], "rolled_back", detail="too tight")
        assert [(d.decision, d.who, d.detail) for d in await store.decisions(other.id)] == [
            ("accepted", "ann", None), ("rolled_back", "bob", "too tight")]  # fmt: skip
        assert [p.id for p in await store.proposals("rolled_back")] == [other.id]
        assert [p.id for p in await store.proposals()] == [other.id, first.id]
        assert await store.proposal(999) is None

    asyncio.run(scenario())


def test_an_outcome_that_cannot_be_written_leaves_the_task_unfinished(open_store):
    """One transaction: a row already there for the task (as a crash between two writes would
    leave, were they two) makes the whole end fail, the iteration and the status included."""
    store = open_store()

    async def scenario():
        await store.add_task(new_task("t1"))
        await store.apply("t1", TaskUpdate(status=TaskStatus.running), [TaskStatus.queued])
        with store.engine.begin() as db:
            db.execute(insert(outcomes), asdict(replace(OUTCOME, task_id="t1")))
        with pytest.raises(IntegrityError):
            await store.record_iteration(iteration("t1", 1), TaskUpdate(status=TaskStatus.completed), [], RUNNING)
        task = await store.get("t1")
        assert task.status is TaskStatus.running and task.iteration == 0 and await store.iterations("t1") == []

    asyncio.run(scenario())
