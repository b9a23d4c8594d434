"""The loop in process: the real runner, scheduler, task service and store (SQLite and PostgreSQL),
driven by a scripted agent in a workspace without git. Every rule and every transition, in seconds."""

from __future__ import annotations

import asyncio

import pytest
from loop_fakes import Loop, Step, make_loop, wait_until
from sqlalchemy import update

from aistack.contracts import TaskCreate, TaskStatus
from aistack.ralph_wiggum import rules
from aistack.ralph_wiggum.records import TaskUpdate
from aistack.ralph_wiggum.runner import StopRequested, TaskFailed
from aistack.ralph_wiggum.store import leases
from aistack.ralph_wiggum.tasks import TaskError, TaskInvalid, TaskNotFound

pytestmark = pytest.mark.timeout(120)  # in process, seconds each: a hang is a failure, soon


@pytest.fixture
def store(open_store):
    return open_store()


def run(coro):
    return asyncio.run(coro)


async def submit(loop: Loop, **body) -> str:
    body = {"prompt": "make it pass", "backend": "scripted", "workspace": "repo", **body}
    return (await loop.tasks.accept(TaskCreate(**body))).id


async def mid_iteration(loop: Loop) -> str:
    """A task submitted and scheduled, its agent inside iteration 1."""
    task_id = await submit(loop)
    loop.scheduler.start()
    await wait_until(lambda: loop.agent.requests)
    return task_id


async def drive(loop: Loop, **body):
    """Submit a task and run it to where the runner stops; the task, its iterations and events."""
    task_id = await submit(loop, **body)
    await loop.runner.run(task_id)
    task = await loop.store.get(task_id)
    return task, await loop.store.iterations(task_id), await loop.store.events_after(task_id, 0)


def test_iterates_until_the_check_passes_and_records_the_evidence(tmp_path, store):
    steps = [Step(writes=("a.py",), check_exit=1), Step(writes=("b.py",), check_exit=2), Step(writes=("a.py",), check_exit=0)]
    loop = make_loop(tmp_path, store, steps)
    task, its, events = run(drive(loop, check_command="pytest"))
    assert task.status is TaskStatus.completed and task.iteration == 3 and task.completion_reason == "check_command"
    assert task.evidence["rule"] == "check_command" and task.evidence["iteration"] == 3
    assert [it.number for it in its] == [1, 2, 3] and [it.check_exit_code for it in its] == [1, 2, 0]
    assert [it.checkpoint_commit for it in its] == [f"{task.id}-1", f"{task.id}-2", f"{task.id}-3"]
    assert (task.prompt_tokens, task.completion_tokens) == (30, 6)
    kinds = [e.type for e in events]
    assert kinds == ["status", "status"] + ["iteration_started", "check", "iteration_finished"] * 3 + ["status"]
    assert [e.data["status"] for e in events if e.type == "status"] == ["queued", "running", "completed"]
    assert loop.workspace.removed == [task.id]
    # the failed check's output is appended to the next prompt; the first prompt is the task's own
    prompts = [r.prompt for r in loop.agent.requests]
    assert prompts[0] == "make it pass" and "exit code 1" in prompts[1] and "check said 2" in prompts[2]


def test_without_check_or_promise_a_real_diff_is_the_evidence(tmp_path, store):
    loop = make_loop(tmp_path, store, [Step(writes=()), Step(writes=("x.txt",))])
    task, its, _ = run(drive(loop))
    assert task.status is TaskStatus.completed and task.completion_reason == "diff" and task.iteration == 2
    assert its[0].files_modified == () and its[1].files_modified == ("x.txt",)


def test_a_promise_counts_only_on_the_replys_last_line(tmp_path, store):
    steps = [Step(reply="I will say <promise>DONE</promise> later\nworking"), Step(reply="all good\n<promise>DONE</promise>")]
    loop = make_loop(tmp_path, store, steps)
    task, _, _ = run(drive(loop, completion_promise="DONE"))
    assert task.status is TaskStatus.completed and task.iteration == 2 and task.evidence["promise_line"] == "<promise>DONE</promise>"


def test_the_limit_without_evidence_is_exhausted_never_completed(tmp_path, store):
    loop = make_loop(tmp_path, store, [Step(writes=("f",), check_exit=1)])
    task, its, _ = run(drive(loop, check_command="false", max_iterations=4))
    assert task.status is TaskStatus.exhausted and task.completion_reason == "max_iterations" and len(its) == 4
    assert task.evidence is None


def test_the_same_reply_without_changes_is_stuck(tmp_path, store):
    loop = make_loop(tmp_path, store, [Step(reply="nothing to do (took 1.5 s)")], ralph_stuck_iterations=3)
    task, its, _ = run(drive(loop, check_command="false", max_iterations=10))
    assert task.status is TaskStatus.failed and task.completion_reason == "stuck" and len(its) == 3
    assert task.error.startswith("stuck: 3 iterations in a row")


def test_approval_gates_every_iteration_and_a_rejection_ends_the_task(tmp_path, store):
    loop = make_loop(tmp_path, store, [Step(writes=("a",), check_exit=1)])

    async def scenario():
        task_id = await submit(loop, check_command="false", require_approval=True)
        await loop.runner.run(task_id)  # stops at the gate before iteration 1
        task = await loop.store.get(task_id)
        assert task.status is TaskStatus.awaiting_approval and task.iteration == 0
        approved = await loop.tasks.decide(task_id, True)
        assert approved.status is TaskStatus.running and approved.approved_through == 1
        await loop.runner.run(task_id)  # one iteration, then the gate again
        task = await loop.store.get(task_id)
        assert task.status is TaskStatus.awaiting_approval and task.iteration == 1
        gate = [e for e in await loop.store.events_after(task_id, 0) if e.type == "approval_needed"]
        assert [e.data["iteration"] for e in gate] == [1, 2] and gate[1].data["files_modified"] == ["a"]
        rejected = await loop.tasks.decide(task_id, False)
        assert rejected.status is TaskStatus.rejected and rejected.completion_reason == "rejected by user"
        assert loop.workspace.removed == [task_id]
        with pytest.raises(TaskError, match="is rejected, not awaiting approval"):
            await loop.tasks.decide(task_id, True)

    run(scenario())


def test_transient_failures_are_retried_without_spending_iterations(tmp_path, store, monkeypatch):
    steps = [Step(transient=True), Step(transient=True), Step(writes=("a",), check_exit=0)]
    loop = make_loop(tmp_path, store, steps, ralph_transient_retry_seconds=60)
    monkeypatch.setattr(rules, "retry_delay", lambda attempt, elapsed, budget: 0.0)  # no real backoff in a test
    task, its, events = run(drive(loop, check_command="true"))
    assert task.status is TaskStatus.completed and len(its) == 1 and its[0].transient_retries == 2
    assert [e.data["attempt"] for e in events if e.type == "transient_retry"] == [1, 2]


def test_a_backend_that_stays_unreachable_fails_the_task_after_the_retry_budget(tmp_path, store):
    loop = make_loop(tmp_path, store, [Step(transient=True)], ralph_transient_retry_seconds=0)
    with pytest.raises(TaskFailed, match="llm unreachable — gave up after 0 s of retries"):
        run(drive(loop))


def test_a_stop_seen_in_the_store_ends_the_run(tmp_path, store):
    loop = make_loop(tmp_path, store, [Step(writes=("a",))])

    async def scenario():
        task_id = await submit(loop, check_command="false")
        await loop.store.apply(task_id, TaskUpdate(stop_requested=True))  # e.g. written by another process
        with pytest.raises(StopRequested):
            await loop.runner.run(task_id)
        assert loop.agent.requests == []

    run(scenario())


def test_a_resumed_task_continues_after_its_last_recorded_iteration(tmp_path, store):
    loop = make_loop(tmp_path, store, [Step(writes=("a",), check_exit=1), Step(wait=30)])

    async def scenario():
        task_id = await submit(loop, check_command="pytest", max_iterations=5)
        first_run = asyncio.create_task(loop.runner.run(task_id))
        await wait_until(lambda: len(loop.agent.requests) == 2)  # iteration 1 recorded, 2 under way
        first_run.cancel()  # the service stops: the task stays `running`
        await asyncio.gather(first_run, return_exceptions=True)
        (one,) = await loop.store.iterations(task_id)
        loop.agent.steps, loop.agent.requests = [Step(writes=("b",), check_exit=0)], []
        await loop.runner.run(task_id)  # the restart
        task = await loop.store.get(task_id)
        assert task.status is TaskStatus.completed and task.iteration == 2
        assert [r.iteration for r in loop.agent.requests] == [2]
        assert loop.workspace.prepared == [(task_id, None), (task_id, one.checkpoint_commit)]

    run(scenario())


async def interrupted_in_iteration_2(loop) -> str:
    """A task whose process went away in the middle of its iteration 2 (it stays `running`)."""
    task_id = await submit(loop, check_command="pytest", max_iterations=5)
    first_run = asyncio.create_task(loop.runner.run(task_id))
    await wait_until(lambda: len(loop.agent.requests) == 2)  # iteration 2 under way
    first_run.cancel()  # the process goes away mid-iteration
    await asyncio.gather(first_run, return_exceptions=True)
    return task_id


def test_an_iteration_interrupted_by_a_restart_runs_again_as_its_second_attempt(tmp_path, store):
    loop = make_loop(tmp_path, store, [Step(writes=("a",), check_exit=1), Step(wait=30)])

    async def scenario():
        task_id = await interrupted_in_iteration_2(loop)
        loop.agent.steps = [Step(writes=("b",), check_exit=0)]
        await loop.runner.run(task_id)  # the restart
        assert loop.agent.abandoned == [(task_id, 2, 1)]  # the backend's run ended before the tree is put back
        assert len(loop.workspace.prepared) == 2
        starts = [
            (e.data["iteration"], e.data["attempt"]) for e in await loop.store.events_after(task_id, 0) if e.type == "iteration_started"
        ]
        assert starts == [(1, 1), (2, 1), (2, 2)]
        assert [it.number for it in await loop.store.iterations(task_id)] == [1, 2]

    run(scenario())


def test_an_interrupted_run_that_did_not_end_when_abandoned_fails_the_task_and_its_tree_is_not_put_back(tmp_path, store):
    loop = make_loop(tmp_path, store, [Step(writes=("a",), check_exit=1), Step(wait=30)])

    async def scenario():
        task_id = await interrupted_in_iteration_2(loop)
        loop.agent.abandon_ends_the_run = False  # e.g. the wrapper still says `"ended": false` after a minute
        with pytest.raises(TaskFailed, match="run by scripted did not end when cancelled; its changes cannot be kept apart"):
            await loop.runner.run(task_id)
        assert loop.agent.abandoned == [(task_id, 2, 1)] and len(loop.workspace.prepared) == 1  # the tree stays as it was

    run(scenario())


def test_an_unknown_backend_fails_the_task_with_the_available_ones(tmp_path, store):
    loop = make_loop(tmp_path, store, [Step()])

    async def scenario():
        task_id = await submit(loop)
        loop.runner.backends = {}
        with pytest.raises(TaskFailed, match="backend 'scripted' is not configured here"):
            await loop.runner.run(task_id)

    run(scenario())


def test_submissions_are_validated_before_anything_is_stored(tmp_path, store):
    loop = make_loop(tmp_path, store, [Step()])
    loop.workspace.problems["repo"] = "workspace repo is not a git repository"

    async def scenario():
        for body, field, words in [
            ({"backend": "nope"}, "backend", "unknown backend 'nope'; available: scripted"),
            ({"max_iterations": 51}, "max_iterations", "between 1 and 50"),
            ({"workspace": "../outside"}, "workspace", "must lie inside WORKSPACE_ROOT"),
            ({}, "workspace", "is not a git repository"),
            ({"workspace": ".", "context": {"files": "a.py"}}, "context.files", "must be a list of file paths"),
        ]:
            with pytest.raises(TaskInvalid) as err:
                await submit(loop, **body)
            assert err.value.field == field and words in str(err.value) and err.value.status == 422
        assert (await loop.store.list_tasks(None, 10, 0))[1] == 0
        with pytest.raises(TaskNotFound):
            await loop.tasks.get("missing")

    run(scenario())


def test_the_scheduler_runs_tasks_first_in_first_out_within_its_slots(tmp_path, store):
    loop = make_loop(tmp_path, store, [Step(writes=("a",), check_exit=0, wait=0.05)], ralph_max_concurrent_tasks=1)

    async def scenario():
        first, second = await submit(loop, check_command="t"), await submit(loop, check_command="t")
        loop.scheduler.start()
        await wait_until(lambda: _status(loop, second, TaskStatus.completed))
        await loop.scheduler.shutdown()
        a, b = await loop.store.get(first), await loop.store.get(second)
        assert a.finished_at <= b.started_at  # one slot: the second started after the first ended
        assert [r.task_id for r in loop.agent.requests] == [first, second]

    run(scenario())


def test_a_stop_ends_the_running_iteration_at_once(tmp_path, store):
    loop = make_loop(tmp_path, store, [Step(wait=30)])

    async def scenario():
        task_id = await mid_iteration(loop)
        await loop.tasks.stop(task_id)
        await wait_until(lambda: _status(loop, task_id, TaskStatus.stopped))
        task = await loop.store.get(task_id)
        assert task.completion_reason == "stopped by user" and task.iteration == 0 and loop.agent.cancelled == 1
        await wait_until(lambda: loop.workspace.removed == [task_id])  # just after the status is written
        with pytest.raises(TaskError, match="already ended as stopped"):
            await loop.tasks.stop(task_id)
        await loop.scheduler.shutdown()

    run(scenario())


def test_a_queued_task_stops_without_running(tmp_path, store):
    loop = make_loop(tmp_path, store, [Step()])

    async def scenario():
        task_id = await submit(loop)
        await loop.tasks.stop(task_id)  # no scheduler runs: nothing drives it
        task = await loop.store.get(task_id)
        assert task.status is TaskStatus.stopped and task.stop_requested and loop.agent.requests == []

    run(scenario())


def test_shutdown_leaves_a_running_task_running_to_resume(tmp_path, store):
    loop = make_loop(tmp_path, store, [Step(wait=30)])

    async def scenario():
        task_id = await mid_iteration(loop)
        await loop.scheduler.shutdown()
        task = await loop.store.get(task_id)
        assert task.status is TaskStatus.running and task.iteration == 0 and loop.workspace.removed == []

    run(scenario())


async def _status(loop: Loop, task_id: str, status: TaskStatus) -> bool:
    task = await loop.store.get(task_id)
    return task is not None and task.status is status


def test_a_stop_that_arrives_before_the_drive_begins_still_ends_the_task(tmp_path, store):
    loop = make_loop(tmp_path, store, [Step(wait=30)])

    async def scenario():
        task_id = await submit(loop)
        (lease,) = await loop.store.claim("w", [TaskStatus.queued], set(), 1, 30)
        loop.scheduler._launch(lease)  # noqa: SLF001 - a drive created, not yet run
        await loop.tasks.stop(task_id)  # cancels it before its first step
        await wait_until(lambda: _status(loop, task_id, TaskStatus.stopped))
        assert loop.scheduler.active_count == 0 and (await loop.store.get(task_id)).iteration == 0
        if not loop.store.shared:  # SQLite writes on the event loop: the stop lands before the drive's first step
            assert loop.agent.requests == []  # (PostgreSQL's write runs in a thread: the drive may have begun)
        await loop.scheduler.shutdown()

    run(scenario())


def test_an_iteration_that_ends_after_its_task_was_stopped_elsewhere_is_not_recorded(tmp_path, store):
    """A stop written by another process (the task is `stopped` in the store) while an iteration
    runs here: the iteration's result must not bring the task back to life."""
    reply = asyncio.Event()
    loop = make_loop(tmp_path, store, [Step(writes=("a",), check_exit=1, until=reply)])

    async def scenario():
        task_id = await submit(loop, check_command="false")
        run_here = asyncio.create_task(loop.runner.run(task_id))
        await wait_until(lambda: loop.agent.requests)
        await loop.store.apply(task_id, TaskUpdate(status=TaskStatus.stopped, completion_reason="stopped by user"))
        reply.set()  # the iteration ends only after the stop is in the store
        with pytest.raises(StopRequested):
            await run_here
        task = await loop.store.get(task_id)
        assert task.status is TaskStatus.stopped and task.iteration == 0
        assert await loop.store.iterations(task_id) == [] and loop.workspace.removed == [task_id]

    run(scenario())


def test_a_stop_written_through_another_process_ends_the_running_iteration(tmp_path, store):
    """An API replica only marks the task (`stop_requested`); the worker that runs it sees that in
    its heartbeat, ends the iteration and records the stop."""
    loop = make_loop(tmp_path, store, [Step(wait=30)])

    async def scenario():
        task_id = await mid_iteration(loop)
        await loop.store.apply(task_id, TaskUpdate(stop_requested=True))
        await wait_until(lambda: _status(loop, task_id, TaskStatus.stopped))
        assert loop.agent.cancelled == 1 and await loop.store.iterations(task_id) == [] and loop.workspace.removed == [task_id]
        await loop.scheduler.shutdown()

    run(scenario())


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # on SQLite this process is the only worker
def test_a_drive_whose_lease_another_worker_took_over_is_dropped_and_records_nothing(tmp_path, store):
    """This worker was cut off past its lease, and another claimed the task: the heartbeat finds
    the lease gone and ends the iteration here; nothing of it is recorded, nothing is cleaned up
    (the tree is the new holder's to put back), and the task stays `running` for its new worker."""
    loop = make_loop(tmp_path, store, [Step(wait=30)])

    async def scenario():
        task_id = await mid_iteration(loop)
        held = loop.scheduler._leases[task_id]  # noqa: SLF001
        take_over = update(leases).where(leases.c.task_id == task_id).values(worker_id="other", epoch=held.epoch + 1)
        await loop.store._run(lambda db: db.execute(take_over))  # noqa: SLF001 - what the other worker's claim writes
        await wait_until(lambda: loop.scheduler.active_count == 0)
        task = await loop.store.get(task_id)
        assert task.status is TaskStatus.running and task.iteration == 0 and loop.agent.cancelled == 1
        assert await loop.store.iterations(task_id) == [] and loop.workspace.removed == []
        assert [e.type for e in await loop.store.events_after(task_id, 0)][-1] == "iteration_started"
        await loop.scheduler.shutdown()

    run(scenario())
