"""The store on a real SQLite file: a database made before a table existed gains it at start."""

from __future__ import annotations

import asyncio

from sqlalchemy import create_engine, inspect

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
