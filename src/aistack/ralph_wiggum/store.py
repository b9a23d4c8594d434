"""Durable state: tasks, iterations and events, in and out as typed records (`records.py`).

SQLAlchemy Core over SQLite (WAL) by default; only portable constructs are used, so PostgreSQL can
replace it. Everything that belongs together (an iteration, the task's new state and their
events) is one transaction: a crash leaves all or none of it. The process groups of a running
iteration are recorded too, so that after a crash the next process ends what is left of them.
`create_all` adds a table that an existing database lacks, and `_add_columns` a nullable column
(the one kind of column added since the first release, e.g. `tasks.strategy`).

The store is async-facing, so callers read as a story and a networked database can slot in
later. With SQLite the short work runs on the event loop itself, on one connection: a read by key
takes ~0.05 ms and a write transaction ~1 ms (WAL, no sync per commit; the checkpoint that syncs
runs in a thread of its own), while handing either to a worker thread cost ~0.3 ms more and,
under 50 concurrent clients, made the API's p99 twice as long (docs/benchmarks.md). The scans
(statistics, metrics) run in worker threads on connections of their own. This process is the
database's only writer; another one holding the write lock would make a write wait (busy_timeout).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

from aistack.contracts import TERMINAL_STATUSES, RateRow, Stats, TaskStatus
from aistack.procgroup import GroupIdentity
from aistack.ralph_wiggum.records import Event, EventRecord, IterationRecord, NewTask, TaskRecord, TaskUpdate, utcnow


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return value.astimezone(UTC).replace(tzinfo=None) if value is not None else None

    def process_result_value(self, value, dialect):
        return value.replace(tzinfo=UTC) if value is not None else None


metadata = MetaData()

tasks = Table(
    "tasks", metadata,
    Column("id", String(32), primary_key=True),
    Column("prompt", Text, nullable=False),
    Column("backend", String(64), nullable=False),
    Column("workspace", Text, nullable=False),
    Column("worktree", Text),
    Column("branch", String(128)),
    Column("base_commit", String(64)),
    Column("status", String(32), nullable=False, index=True),
    Column("iteration", Integer, nullable=False, default=0),
    Column("max_iterations", Integer, nullable=False),
    Column("limit_source", String(16), nullable=False),
    Column("complexity", String(16)),
    Column("complexity_reason", Text),
    Column("require_approval", Boolean, nullable=False, default=False),
    Column("approved_through", Integer, nullable=False, default=0),
    Column("stop_requested", Boolean, nullable=False, default=False),
    Column("check_command", Text),
    Column("completion_promise", Text),
    Column("context", JSON, nullable=False, default=dict),
    Column("strategy", JSON),
    Column("created_at", UTCDateTime, nullable=False, index=True),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("completion_reason", String(64)),
    Column("evidence", JSON),
    Column("error", Text),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
)  # fmt: skip

iterations = Table(
    "iterations", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", ForeignKey("tasks.id"), nullable=False, index=True),
    Column("number", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("duration_seconds", Float),
    Column("status", String(16)),
    Column("exit_code", Integer),
    Column("output", Text, nullable=False, default=""),
    Column("error", Text),
    Column("files_modified", JSON, nullable=False, default=list),
    Column("diff_stat", Text),
    Column("checkpoint_commit", String(64)),
    Column("check_exit_code", Integer),
    Column("check_output", Text),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("transient_retries", Integer, nullable=False, default=0),
    UniqueConstraint("task_id", "number"),
)  # fmt: skip

events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", ForeignKey("tasks.id"), nullable=False, index=True),
    Column("type", String(32), nullable=False),
    Column("data", JSON, nullable=False, default=dict),
    Column("created_at", UTCDateTime, nullable=False),
)  # fmt: skip

# The process groups of the iteration under way (agent, check): from a group's start until the
# iteration is recorded, or until a later process has ended what a crash left of them.
process_groups = Table(
    "process_groups", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", ForeignKey("tasks.id"), nullable=False, index=True),
    Column("iteration", Integer, nullable=False),
    Column("pgid", Integer, nullable=False),
    Column("leader_start", BigInteger, nullable=False),  # clock ticks after boot: with the boot id, names the group
    Column("boot_id", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)  # fmt: skip

log = logging.getLogger("aistack.ralph")
_TERMINAL = tuple(s.value for s in TERMINAL_STATUSES)
_TASK_BY_ID = select(tasks).where(tasks.c.id == bindparam("task_id"))  # built once: the hottest query


class Store:
    """Every method is one short transaction on the store's connection, run on the event loop."""

    def __init__(self, url: str, on_event: Callable[[str], None] | None = None):
        sqlite = url.startswith("sqlite")
        options: dict[str, Any] = {"connect_args": {"check_same_thread": False}} if sqlite else {}
        if url in ("sqlite://", "sqlite:///:memory:"):  # one shared in-memory database, for tests
            options["poolclass"] = StaticPool
        self.engine = create_engine(url, **options)
        if sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)
        _add_columns(self.engine)
        self._db = self.engine.connect()
        self._on_event = on_event or (lambda task_id: None)
        self._checkpointer = _WalCheckpointer(self.engine) if sqlite and options.get("poolclass") is not StaticPool else None

    @classmethod
    def sqlite(cls, path: Path, on_event: Callable[[str], None] | None = None) -> Store:
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{path}", on_event)

    @classmethod
    def memory(cls, on_event: Callable[[str], None] | None = None) -> Store:
        return cls("sqlite://", on_event)

    # --- tasks ---------------------------------------------------------------------------------

    async def add_task(self, new: NewTask) -> TaskRecord:
        now = utcnow()
        task = TaskRecord(**_fields(new), status=TaskStatus.queued, created_at=now, updated_at=now)  # the columns' defaults
        with self._tx() as db:
            db.execute(insert(tasks), {**_fields(task), "status": task.status.value})
            db.execute(insert(events), {"task_id": new.id, "type": "status", "data": {"status": "queued"}, "created_at": now})
        self._on_event(new.id)
        return task

    async def get(self, task_id: str) -> TaskRecord | None:
        with self._tx() as db:
            return self._task(db, task_id)

    async def apply(
        self, task_id: str, change: TaskUpdate, allowed_from: Iterable[TaskStatus] | None = None, extra: Sequence[Event] = ()
    ) -> TaskRecord | None:
        """Change the task and append `extra` events in one transaction, only while its status is
        in `allowed_from` (compare-and-set; None: any). None when it did not apply."""
        now = utcnow()
        with self._tx() as db:
            before = self._task(db, task_id)
            if before is None or (allowed_from is not None and before.status not in allowed_from):
                return None
            after = update(tasks).where(tasks.c.id == task_id).values(_stamped(change, now)).returning(tasks)
            task = _task_record(db.execute(after).one())
            _append_events(db, task, extra, now, status_changed=task.status is not before.status)
        self._on_event(task_id)
        return task

    async def record_iteration(
        self, it: IterationRecord, change: TaskUpdate, extra: Sequence[Event], allowed_from: Iterable[TaskStatus]
    ) -> TaskRecord | None:
        """Store a finished iteration together with the task's new state and the events, only
        while the task's status is in `allowed_from` (compare-and-set), and forget its process
        groups (ended by then). None when it did not apply."""
        now = utcnow()
        with self._tx() as db:
            before = self._task(db, it.task_id)
            if before is None or before.status not in allowed_from:
                return None
            db.execute(insert(iterations), {**_fields(it), "finished_at": now})
            db.execute(delete(process_groups).where(process_groups.c.task_id == it.task_id))
            counters = {
                "iteration": it.number,
                "prompt_tokens": tasks.c.prompt_tokens + it.prompt_tokens,
                "completion_tokens": tasks.c.completion_tokens + it.completion_tokens,
            }
            after = update(tasks).where(tasks.c.id == it.task_id).values({**_stamped(change, now), **counters}).returning(tasks)
            task = _task_record(db.execute(after).one())
            _append_events(db, task, extra, now, status_changed=task.status is not before.status)
        self._on_event(it.task_id)
        return task

    async def list_tasks(self, status: TaskStatus | None, limit: int, offset: int) -> tuple[list[TaskRecord], int]:
        query, count = select(tasks), select(func.count()).select_from(tasks)
        if status is not None:
            query, count = query.where(tasks.c.status == status.value), count.where(tasks.c.status == status.value)
        with self._tx() as db:
            rows = db.execute(query.order_by(tasks.c.created_at.desc(), tasks.c.id.desc()).limit(limit).offset(offset))
            return [_task_record(r) for r in rows], db.scalar(count) or 0

    async def ready_tasks(self, statuses: Iterable[TaskStatus], exclude: set[str], limit: int) -> list[TaskRecord]:
        """Tasks in `statuses` a worker may pick up: running ones first (interrupted, approved),
        then the others, each oldest first."""
        query = select(tasks).where(tasks.c.status.in_([status.value for status in statuses]))
        if exclude:
            query = query.where(tasks.c.id.not_in(exclude))
        query = query.order_by((tasks.c.status != TaskStatus.running.value).asc(), tasks.c.created_at.asc()).limit(limit)
        with self._tx() as db:
            return [_task_record(r) for r in db.execute(query)]

    # --- iterations and events ---------------------------------------------------------------------

    async def iterations(self, task_id: str) -> list[IterationRecord]:
        query = select(iterations).where(iterations.c.task_id == task_id).order_by(iterations.c.number)
        with self._tx() as db:
            return [_iteration_record(r) for r in db.execute(query)]

    async def checkpoints(self, task_id: str) -> dict[int, str | None]:
        """Each iteration's checkpoint commit, by number (None: it changed nothing)."""
        query = select(iterations.c.number, iterations.c.checkpoint_commit).where(iterations.c.task_id == task_id)
        with self._tx() as db:
            return dict(db.execute(query.order_by(iterations.c.number)).tuples().all())

    async def events_after(self, task_id: str, after_id: int, limit: int = 500) -> list[EventRecord]:
        query = select(events).where(events.c.task_id == task_id, events.c.id > after_id).order_by(events.c.id).limit(limit)
        with self._tx() as db:
            return [EventRecord(**r._mapping) for r in db.execute(query)]

    async def add_event(self, task_id: str, kind: str, data: dict) -> None:
        with self._tx() as db:
            db.execute(insert(events), {"task_id": task_id, "type": kind, "data": data, "created_at": utcnow()})
        self._on_event(task_id)

    async def starts(self, task_id: str, number: int) -> int:
        """How often iteration `number` of the task was started (its `iteration_started` events)."""
        query = select(func.count()).where(
            events.c.task_id == task_id, events.c.type == "iteration_started", events.c.data["iteration"].as_integer() == number
        )
        with self._tx() as db:
            return db.scalar(query) or 0

    # --- process groups ----------------------------------------------------------------------------

    async def add_group(self, task_id: str, iteration: int, group: GroupIdentity) -> None:
        row = {"task_id": task_id, "iteration": iteration, "pgid": group.pgid, "leader_start": group.leader_start,
               "boot_id": group.boot_id, "created_at": utcnow()}  # fmt: skip
        with self._tx() as db:
            db.execute(insert(process_groups), row)

    async def groups(self, task_id: str) -> list[GroupIdentity]:
        query = select(process_groups.c.pgid, process_groups.c.leader_start, process_groups.c.boot_id)
        with self._tx() as db:
            return [GroupIdentity(*row) for row in db.execute(query.where(process_groups.c.task_id == task_id))]

    async def remove_group(self, task_id: str, group: GroupIdentity) -> None:
        with self._tx() as db:
            db.execute(delete(process_groups).where(process_groups.c.task_id == task_id, process_groups.c.pgid == group.pgid))

    # --- statistics --------------------------------------------------------------------------------

    async def stats(self) -> Stats:
        """Totals over every task: a scan, so in a worker thread on a connection of its own."""
        return await asyncio.to_thread(self._stats)

    def _stats(self) -> Stats:
        with self.engine.connect() as db:
            by_status: dict[str, int] = {s: n for s, n in db.execute(select(tasks.c.status, func.count()).group_by(tasks.c.status))}
            mean = db.scalar(select(func.avg(tasks.c.iteration)).where(tasks.c.status.in_(_TERMINAL)))

            def rates(column) -> dict[str, RateRow]:
                done = func.sum(case((tasks.c.status == TaskStatus.completed.value, 1), else_=0))
                rows = db.execute(select(column, func.count(), done).where(tasks.c.status.in_(_TERMINAL)).group_by(column))
                return {
                    str(key or "unclassified"): RateRow(total=n, completed=int(ok or 0), success_rate=int(ok or 0) / n if n else None)
                    for key, n, ok in rows
                }

            return Stats(
                by_status=by_status,
                total=sum(by_status.values()),
                mean_iterations=float(mean) if mean is not None else None,
                per_backend=rates(tasks.c.backend),
                per_complexity=rates(tasks.c.complexity),
            )

    def metric_rows(self) -> tuple[list[tuple[str, str, int]], list[tuple[str, str | None, int, float, int, int]]]:
        """For the Prometheus collector (prometheus-client calls it synchronously, from the sync
        /metrics route's worker thread; a scan of every iteration, on a connection of its own):
        tasks by status and backend; iterations, seconds and tokens by backend and status."""
        per_iteration = (
            select(tasks.c.backend, iterations.c.status, func.count(),
                   func.coalesce(func.sum(iterations.c.duration_seconds), 0.0),
                   func.coalesce(func.sum(iterations.c.prompt_tokens), 0),
                   func.coalesce(func.sum(iterations.c.completion_tokens), 0))
            .join(tasks, tasks.c.id == iterations.c.task_id)
            .group_by(tasks.c.backend, iterations.c.status)
        )  # fmt: skip
        with self.engine.connect() as db:
            by_task = db.execute(select(tasks.c.status, tasks.c.backend, func.count()).group_by(tasks.c.status, tasks.c.backend))
            return [tuple(r) for r in by_task], [tuple(r) for r in db.execute(per_iteration)]

    # --- plumbing ----------------------------------------------------------------------------------

    def close(self) -> None:
        if self._checkpointer:
            self._checkpointer.stop()
        self._db.close()
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self._db.begin():
            yield self._db

    @staticmethod
    def _task(db: Connection, task_id: str) -> TaskRecord | None:
        row = db.execute(_TASK_BY_ID, {"task_id": task_id}).first()
        return _task_record(row) if row is not None else None


def _add_columns(engine) -> None:
    """Add to a database made by an earlier version the columns its tables lack. Only nullable
    columns are ever added to a table, so a row written before reads as NULL there."""
    tables = inspect(engine)
    with engine.begin() as db:
        for table in metadata.sorted_tables:
            present = {column["name"] for column in tables.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present:
                    assert column.nullable, f"{table.name}.{column.name}: a column added later must be nullable"
                    db.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {column.type.compile(engine.dialect)}")


def _fields(record: Any) -> dict[str, Any]:
    values = {name: getattr(record, name) for name in record.__dataclass_fields__}
    if isinstance(values.get("files_modified"), tuple):
        values["files_modified"] = list(values["files_modified"])
    return values


def _stamped(change: TaskUpdate, now: datetime) -> dict[str, Any]:
    """The update's columns, plus the times every change sets: updated, and finished on the way out."""
    values: dict[str, Any] = {**change.values(), "updated_at": now}
    if change.status is not None and change.status.terminal:
        values["finished_at"] = func.coalesce(tasks.c.finished_at, now)
    return values


def _append_events(db: Connection, task: TaskRecord, extra: Sequence[Event], now: datetime, status_changed: bool) -> None:
    """The given events, then a `status` event when the status changed (its last word)."""
    rows = [{"task_id": task.id, "type": kind, "data": data, "created_at": now} for kind, data in extra]
    if status_changed:
        status = {"status": task.status.value, "iteration": task.iteration, "completion_reason": task.completion_reason,
                  "error": task.error}  # fmt: skip
        rows.append({"task_id": task.id, "type": "status", "data": status, "created_at": now})
    if rows:
        db.execute(insert(events), rows)


def _task_record(row) -> TaskRecord:
    values = dict(row._mapping)
    values["status"] = TaskStatus(values["status"])
    values["context"] = values["context"] or {}
    return TaskRecord(**values)


def _iteration_record(row) -> IterationRecord:
    values = dict(row._mapping)
    del values["id"]
    values["files_modified"] = tuple(values["files_modified"] or ())
    values["output"] = values["output"] or ""
    return IterationRecord(**values)


class _WalCheckpointer:
    """Copies the write-ahead log into the database file from a thread of its own, every second.
    SQLite would otherwise do it inside a commit every 1000 pages, with an fsync, on the event
    loop: 100+ ms stalls of every request under a write load (measured: POST p99 383 ms)."""

    INTERVAL_SECONDS = 1.0

    def __init__(self, engine):
        self._engine = engine
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-wal-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self.INTERVAL_SECONDS):
            try:
                with self._engine.connect() as db:
                    db.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")  # waits on no reader or writer
                    db.commit()
            except Exception:  # a missed checkpoint is made up by the next; the thread must live on
                log.warning("WAL checkpoint failed", exc_info=True)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # in WAL mode: no sync per commit, only at a checkpoint
    cursor.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run in _WalCheckpointer's thread
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
