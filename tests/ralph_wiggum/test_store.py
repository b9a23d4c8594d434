"""The store on a real SQLite file: a database made before a table or a column existed gains it at start."""

from __future__ import annotations

import asyncio

from sqlalchemy import create_engine, inspect

from aistack.contracts import Strategy
from aistack.procgroup import GroupIdentity
from aistack.ralph_wiggum.records import NewTask
from aistack.ralph_wiggum.store import Store, metadata, process_groups


def test_a_database_from_before_process_groups_gains_the_table(tmp_path):
    path = tmp_path / "aistack.db"
    old = create_engine(f"sqlite:///{path}")
    metadata.create_all(old, tables=[table for table in metadata.sorted_tables if table is not process_groups])
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


def test_a_database_from_before_strategies_gains_the_column_and_its_tasks_read_as_todays_loop(tmp_path):
    path = tmp_path / "aistack.db"
    old = create_engine(f"sqlite:///{path}")
    with old.begin() as db:  # the tasks table as the first release made it: no strategy column
        metadata.create_all(db)
        db.exec_driver_sql("ALTER TABLE tasks DROP COLUMN strategy")
        db.exec_driver_sql(
            "INSERT INTO tasks (id, prompt, backend, workspace, status, iteration, max_iterations, limit_source, require_approval,"
            " approved_through, stop_requested, context, created_at, updated_at, prompt_tokens, completion_tokens)"
            " VALUES ('old', 'p', 'command', '/w', 'completed', 1, 3, 'request', 0, 0, 0, '{}', '2026-01-01', '2026-01-01', 0, 0)"
        )
    assert "strategy" not in {c["name"] for c in inspect(old).get_columns("tasks")}
    old.dispose()

    async def scenario(store: Store) -> None:
        before = await store.get("old")
        assert before is not None and before.strategy is None and before.view().strategy == Strategy()
        await store.add_task(NewTask("new", "p", "command", "/w", 3, "request", strategy={**Strategy().model_dump(), "keep_best": True}))
        after = await store.get("new")
        assert after is not None and after.view().strategy.keep_best is True

    store = Store.sqlite(path)
    try:
        asyncio.run(scenario(store))
    finally:
        store.close()
