"""The store's contract, on each database it runs on (a SQLite file and a real PostgreSQL server),
and its schema under migrations: what the models say is what the migrations make, and a database
the first release made upgrades in place with every row."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, update
from sqlalchemy.exc import IntegrityError

from aistack.config import database_url as engine_url
from aistack.contracts import Strategy, TaskStatus
from aistack.procgroup import GroupIdentity
from aistack.ralph_wiggum import migrations
from aistack.ralph_wiggum.records import IterationRecord, NewTask, TaskUpdate, utcnow
from aistack.ralph_wiggum.store import LeaseLost, Store, metadata, tasks
from support import wait_until

RELEASE_1 = Path(__file__).parent / "data" / "release1.sql"


def new_task(task_id: str, **fields) -> NewTask:
    return NewTask(**{"id": task_id, "prompt": "p", "backend": "command", "workspace": "/w", "max_iterations": 3,
                      "limit_source": "request", **fields})  # fmt: skip


def iteration(task_id: str, number: int, **fields) -> IterationRecord:
    return IterationRecord(**{"task_id": task_id, "number": number, "started_at": utcnow(), "status": "success",
                              "output": f"out {number}", "prompt_tokens": 10, "completion_tokens": 2, **fields})  # fmt: skip


RUNNING = [TaskStatus.running]


def test_tasks_go_in_and_come_back_as_they_were_written(open_store):
    seen: list[str] = []
    store = open_store(on_event=seen.append)

    async def scenario():
        queued = await store.add_task(new_task("t1", context={"files": ["a.py"], "note": "ü"}))
        assert await store.get("t1") == queued and queued.status is TaskStatus.queued and queued.context["note"] == "ü"
        assert await store.get("nope") is None
        await store.add_task(new_task("t2"))
        page, total = await store.list_tasks(None, limit=1, offset=0)
        assert total == 2 and [t.id for t in page] == ["t2"]  # newest first
        assert ([t.id for t in (await store.list_tasks(TaskStatus.queued, 10, 0))[0]]) == ["t2", "t1"]
        assert [lease.task_id for lease in await store.claim("w", [TaskStatus.queued], exclude={"t1"}, limit=5, seconds=30)] == ["t2"]

    asyncio.run(scenario())
    assert wait_until(lambda: seen == ["t1", "t2"], 10), seen  # PostgreSQL's: through NOTIFY


def test_apply_is_a_compare_and_set_with_its_events(open_store):
    store = open_store()

    async def scenario():
        await store.add_task(new_task("t1"))
        assert await store.apply("t1", TaskUpdate(status=TaskStatus.completed), allowed_from=RUNNING) is None
        running = await store.apply("t1", TaskUpdate(status=TaskStatus.running), [TaskStatus.queued], [("note", {"n": 1})])
        assert running is not None and running.status is TaskStatus.running and running.finished_at is None
        stopped = await store.apply("t1", TaskUpdate(status=TaskStatus.stopped, completion_reason="stopped by user"))
        assert stopped is not None and stopped.finished_at is not None
        assert await store.apply("missing", TaskUpdate(stop_requested=True)) is None
        kinds = [(e.type, e.data.get("status")) for e in await store.events_after("t1", 0)]
        assert kinds == [("status", "queued"), ("note", None), ("status", "running"), ("status", "stopped")]
        first = (await store.events_after("t1", 0))[0].id
        assert [e.type for e in await store.events_after("t1", first, limit=1)] == ["note"]
        assert await store.claim("w", [TaskStatus.running, TaskStatus.queued], set(), 5, 30) == []

    asyncio.run(scenario())


def test_an_iteration_its_task_and_its_events_are_one_transaction(open_store):
    store = open_store()

    async def scenario():
        await store.add_task(new_task("t1"))
        await store.apply("t1", TaskUpdate(status=TaskStatus.running), [TaskStatus.queued])
        await store.add_group("t1", 1, GroupIdentity(pgid=99, leader_start=5, boot_id="b"))
        await store.add_event("t1", "iteration_started", {"iteration": 1, "attempt": 1})
        after = await store.record_iteration(iteration("t1", 1, checkpoint_commit="c1", files_modified=("a.py",)), TaskUpdate(),
                                             [("iteration_finished", {"iteration": 1})], RUNNING)  # fmt: skip
        assert after is not None and after.iteration == 1 and (after.prompt_tokens, after.completion_tokens) == (10, 2)
        assert await store.groups("t1") == []  # ended by then: forgotten with the iteration
        events_before = await store.events_after("t1", 0)
        with pytest.raises(IntegrityError):  # the same number twice: nothing of it is kept
            await store.record_iteration(iteration("t1", 1), TaskUpdate(status=TaskStatus.completed), [("x", {})], RUNNING)
        assert (await store.get("t1")).status is TaskStatus.running and await store.events_after("t1", 0) == events_before
        done = await store.record_iteration(iteration("t1", 2), TaskUpdate(status=TaskStatus.completed), [], RUNNING)
        assert done is not None and done.status is TaskStatus.completed and done.iteration == 2 and done.prompt_tokens == 20
        assert await store.record_iteration(iteration("t1", 3), TaskUpdate(), [], RUNNING) is None  # no longer running
        assert [it.number for it in await store.iterations("t1")] == [1, 2]
        assert (await store.iterations("t1"))[0].files_modified == ("a.py",)
        assert await store.checkpoints("t1") == {1: "c1", 2: None}
        assert await store.starts("t1", 1) == 1 and await store.starts("t1", 2) == 0
        stats = await store.stats()
        assert stats.total == 1 and stats.by_status == {"completed": 1} and stats.mean_iterations == 2.0
        assert stats.per_backend["command"].success_rate == 1.0
        by_task, per_iteration = store.metric_rows()
        assert by_task == [("completed", "command", 1)] and [row[:3] for row in per_iteration] == [("command", "success", 2)]

    asyncio.run(scenario())


def test_what_was_committed_is_there_after_the_store_is_opened_again(open_store):
    store = open_store()

    async def write():
        await store.add_task(new_task("t1"))
        await store.apply("t1", TaskUpdate(status=TaskStatus.running), [TaskStatus.queued])
        await store.record_iteration(iteration("t1", 1, checkpoint_commit="c1"), TaskUpdate(), [], RUNNING)
        await store.add_group("t1", 2, GroupIdentity(pgid=7, leader_start=1, boot_id="b"))

    asyncio.run(write())
    store.close()
    again = open_store()

    async def read():
        task = await again.get("t1")
        assert task is not None and task.status is TaskStatus.running and task.iteration == 1
        assert await again.checkpoints("t1") == {1: "c1"} and await again.groups("t1") == [GroupIdentity(7, 1, "b")]

    asyncio.run(read())


def test_the_migrations_make_what_the_models_describe(database_url, open_store):
    open_store().close()
    engine = create_engine(engine_url(database_url))
    try:
        assert migrations.current(engine) == migrations.head()
        with engine.connect() as db:
            assert compare_metadata(MigrationContext.configure(db), metadata) == []
    finally:
        engine.dispose()


def test_a_database_of_the_first_release_upgrades_in_place_with_every_row(tmp_path):
    path = tmp_path / "aistack.db"
    with sqlite3.connect(path) as db:
        db.executescript(RELEASE_1.read_text())
    engine = create_engine(f"sqlite:///{path}")
    assert migrations.current(engine) is None
    engine.dispose()

    store = Store(f"sqlite:///{path}")

    async def scenario():
        done = await store.get("done1")
        assert done is not None and done.status is TaskStatus.completed and done.iteration == 2
        assert done.context == {"files": ["a.py"]} and done.evidence == {"rule": "check_command"} and done.prompt_tokens == 20
        assert await store.checkpoints("done1") == {1: "c" * 40, 2: None}
        assert len(await store.events_after("done1", 0)) == 7 and await store.starts("done1", 2) == 1
        assert await store.groups("run3") == [GroupIdentity(4242, 17, "boot-1")]
        claimed = await store.claim("w", [TaskStatus.running, TaskStatus.queued], set(), 5, 30)
        assert [lease.task_id for lease in claimed] == ["run3", "queued2"]  # running first, then oldest first
        assert done.strategy is None and done.loop_strategy == Strategy()  # from before strategies: today's loop
        await store.add_task(new_task("new4", strategy={**Strategy().model_dump(), "keep_best": True}))  # and it takes new rows
        assert (await store.list_tasks(None, 10, 0))[1] == 4
        assert (await store.get("new4")).loop_strategy.keep_best is True

    try:
        asyncio.run(scenario())
    finally:
        store.close()
    engine = create_engine(f"sqlite:///{path}")
    try:
        assert migrations.current(engine) == migrations.head()
    finally:
        engine.dispose()


def test_a_database_from_before_process_groups_gains_the_table(tmp_path):
    path = tmp_path / "aistack.db"
    old = create_engine(f"sqlite:///{path}")
    metadata.create_all(old, tables=[table for table in metadata.sorted_tables if table.name in ("tasks", "iterations", "events")])
    with old.begin() as db:  # nor had its tasks a strategy or protected paths then
        for table, column in (("tasks", "strategy"), ("tasks", "protected_paths"), ("iterations", "protected_undone")):
            db.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
    assert "process_groups" not in inspect(old).get_table_names()
    old.dispose()

    async def scenario(store: Store) -> None:
        await store.add_task(NewTask("t1", "p", "command", "/w", 3, "request"))
        group = GroupIdentity(pgid=4242, leader_start=17, boot_id="boot")
        await store.add_group("t1", 1, group)
        assert await store.groups("t1") == [group]
        await store.remove_group("t1", group)
        assert await store.groups("t1") == []

    store = Store.sqlite(path)
    try:
        asyncio.run(scenario(store))
    finally:
        store.close()


def test_daily_stats_count_the_finished_tasks_per_utc_day_per_backend_and_class(open_store):
    store = open_store()
    days = {"a": (2026, 11, 27, 23, 59), "b": (2026, 11, 27, 8, 0), "c": (2026, 11, 28, 0, 1), "d": (2026, 11, 28, 9, 0)}

    async def scenario():
        for task_id, backend, complexity in (("a", "command", "simple"), ("b", "command", None), ("c", "aider", "simple"),
                                             ("d", "command", "simple"), ("q", "command", "simple")):  # fmt: skip
            await store.add_task(new_task(task_id, backend=backend, complexity=complexity))
        for task_id in ("a", "b", "c", "d"):
            await store.apply(task_id, TaskUpdate(status=TaskStatus.running))
        for task_id, iterations in (("a", 2), ("c", 1)):  # completed; b and d fail
            for n in range(1, iterations + 1):
                end = TaskUpdate(status=TaskStatus.completed) if n == iterations else TaskUpdate()
                await store.record_iteration(iteration(task_id, n), end, [], RUNNING)
        for task_id in ("b", "d"):
            await store.apply(task_id, TaskUpdate(status=TaskStatus.failed))
        with store.engine.begin() as db:  # when they finished, set: the grouping is by the UTC day of it
            for task_id, when in days.items():
                db.execute(update(tasks).where(tasks.c.id == task_id).values(finished_at=datetime(*when, tzinfo=UTC)))
        daily = await store.daily_stats()
        rows = [(r.day.isoformat(), r.group, r.total, r.completed, r.iterations_per_solved, r.tokens_per_solved) for r in daily.per_backend]
        # a: 2 iterations of 12 tokens; c: 1 iteration; the queued task q is not counted
        assert rows == [("2026-11-27", "command", 2, 1, 2.0, 24.0), ("2026-11-28", "aider", 1, 1, 1.0, 12.0),
                        ("2026-11-28", "command", 1, 0, None, None)]  # fmt: skip
        classes = [(r.day.isoformat(), r.group, r.total, r.success_rate) for r in daily.per_complexity]
        assert sorted(classes) == [("2026-11-27", "simple", 1, 1.0), ("2026-11-27", "unclassified", 1, 0.0),
                                   ("2026-11-28", "simple", 2, 0.5)]  # fmt: skip

    asyncio.run(scenario())


# --- leases: many workers on PostgreSQL, one process on SQLite ---------------------------------------


def running_task(store: Store, task_id: str):
    async def make():
        await store.add_task(new_task(task_id))

    return make()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_workers_claiming_at_once_never_take_the_same_task(open_store):
    first, second = open_store(), open_store()  # two processes' stores: two pools

    async def scenario():
        for n in range(12):
            await first.add_task(new_task(f"t{n:02d}"))
        ready = [TaskStatus.queued]
        # a worker id per process: one that is its own (a restart under the same id) takes its lease back
        stores = [(f"w{i}{side}", store) for i in range(4) for side, store in (("a", first), ("b", second))]
        rounds = await asyncio.gather(*[store.claim(worker, ready, set(), 3, 30) for worker, store in stores])
        taken = [lease.task_id for leases in rounds for lease in leases]
        assert sorted(taken) == [f"t{n:02d}" for n in range(12)]  # each exactly once
        assert await first.claim("w9", ready, set(), 5, 30) == []  # all held
        assert await first.leased("t00") and not await first.leased("nope")

    asyncio.run(scenario())


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_worker_that_lost_its_lease_records_nothing_more(open_store):
    store = open_store()

    async def scenario():
        await store.add_task(new_task("t1"))
        (old,) = await store.claim("paused", [TaskStatus.queued], set(), 1, seconds=0.2)
        with store.fenced(old):
            await store.apply("t1", TaskUpdate(status=TaskStatus.running), [TaskStatus.queued])
        assert await store.claim("other", [TaskStatus.running], set(), 1, 30) == []  # still held
        await asyncio.sleep(0.3)  # the paused worker misses its renewal
        (new,) = await store.claim("other", [TaskStatus.running], set(), 1, 30)
        assert new.epoch == old.epoch + 1
        assert await store.renew([old], 30) == ({"t1"}, set())
        events = await store.events_after("t1", 0)
        with store.fenced(old):
            for write in (
                store.add_event("t1", "iteration_started", {"iteration": 1, "attempt": 1}),
                store.record_iteration(iteration("t1", 1), TaskUpdate(), [], RUNNING),
                store.apply("t1", TaskUpdate(status=TaskStatus.failed), RUNNING),
                store.add_group("t1", 1, GroupIdentity(1, 2, "b")),
            ):
                with pytest.raises(LeaseLost):
                    await write
        assert await store.events_after("t1", 0) == events and await store.iterations("t1") == [] and await store.groups("t1") == []
        assert (await store.get("t1")).status is TaskStatus.running
        with store.fenced(new):  # the new holder writes, and another task is not fenced by this lease
            assert await store.record_iteration(iteration("t1", 1), TaskUpdate(), [], RUNNING) is not None
            await store.add_task(new_task("t2"))
            await store.add_event("t2", "note", {})
        assert await store.renew([new], 30) == (set(), set())
        await store.apply("t1", TaskUpdate(stop_requested=True))  # e.g. through an API replica
        assert await store.renew([new], 30) == (set(), {"t1"})
        await store.release_lease(new)
        assert not await store.leased("t1")
        (third,) = await store.claim("third", [TaskStatus.running], set(), 1, 30)  # given back: free at once
        assert third.epoch == new.epoch + 1

    asyncio.run(scenario())


def test_on_sqlite_the_leases_of_an_earlier_process_are_void(tmp_path):
    path = tmp_path / "aistack.db"
    store = Store.sqlite(path)

    async def crashed():
        await store.add_task(new_task("t1"))
        await store.claim("earlier-pid", [TaskStatus.queued], set(), 1, 3600)

    asyncio.run(crashed())
    store.close()
    again = Store.sqlite(path)

    async def restarted():
        (lease,) = await again.claim("this-pid", [TaskStatus.queued], set(), 1, 30)  # at once, not after an hour
        assert lease.epoch == 2 and not await again.leased("t1")  # a stop here is this process's own to end

    try:
        asyncio.run(restarted())
    finally:
        again.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_events_another_process_appends_are_announced_here(open_store):
    """LISTEN/NOTIFY: the API replica's store learns of the events a worker's store appends (it
    wakes the event streams), without polling."""
    heard: list[str] = []
    worker = open_store()
    open_store(on_event=heard.append)  # the replica's: it listens from a thread of its own

    async def scenario():
        await worker.add_task(new_task("t1"))
        await worker.add_group("t1", 1, GroupIdentity(1, 2, "b"))  # no event: nothing said
        await worker.apply("t1", TaskUpdate(status=TaskStatus.running))
        await worker.add_event("t1", "iteration_started", {"iteration": 1, "attempt": 1})

    asyncio.run(scenario())
    assert wait_until(lambda: heard.count("t1") == 3, 10), heard
