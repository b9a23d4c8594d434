"""Durable state: tasks, iterations and events, in and out as typed records (`records.py`).

SQLAlchemy Core, one code path for SQLite (WAL, the default: a file in the data dir) and
PostgreSQL (psycopg 3, `AISTACK_DATABASE_URL`). Everything that belongs together (an iteration,
the task's new state and their events) is one transaction: a crash leaves all or none of it. The
process groups of a running iteration are recorded too, so that after a crash the next process
ends what is left of them. The schema is Alembic's (`migrations/`): opening a store upgrades it
to the newest revision, a database from before the migrations included.

The store is async-facing, so callers read as a story. With SQLite the short work runs on the
event loop itself, on one connection: a read by key takes ~0.05 ms and a write transaction ~1 ms
(WAL, no sync per commit; the checkpoint that syncs runs in a thread of its own), while handing
either to a worker thread cost ~0.3 ms more and, under 50 concurrent clients, made the API's p99
twice as long (docs/benchmarks.md). This process is then the database's only writer; another one
holding the write lock would make a write wait (busy_timeout). With PostgreSQL every call is a
network round trip: it runs in a thread of the store's own, on a connection from a pool as large.
The scans (statistics, metrics) run in worker threads on connections of their own, on both.
A write to a task locks its row first (FOR UPDATE; SQLite's writer lock does it there), so the
events of one task are numbered in the order they commit, which the event streams rely on.
Leases say which worker drives which task (`claim`, `renew`, `release_lease`); a write made under
one (`fenced`) is refused once another worker holds it. Their times are the workers' clocks, so
machines that share a database keep theirs in sync (NTP): the lease (15 s) dwarfs the skew.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

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
    make_url,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

from aistack.contracts import TERMINAL_STATUSES, DailyStats, DayRate, RateRow, Stats, TaskStatus
from aistack.procgroup import GroupIdentity
from aistack.ralph_wiggum import learning, migrations, space
from aistack.ralph_wiggum.records import (
    DecisionRecord,
    Event,
    EventRecord,
    IterationRecord,
    Lease,
    NewTask,
    OutcomeRecord,
    ProposalRecord,
    TaskRecord,
    TaskUpdate,
    utcnow,
)

T = TypeVar("T")
EVENTS_CHANNEL = "aistack_events"  # PostgreSQL's NOTIFY channel: the payload is the id of a task with new events
POOL_SIZE = 10  # PostgreSQL connections (and threads) per process: the loop's slots and the API's requests share them (+1 LISTENs)


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
    Column("protected_paths", JSON),
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
    Column("protected_undone", JSON),
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

# A worker's claim on running a task (one row per task that was ever claimed; the epoch only grows).
leases = Table(
    "leases", metadata,
    Column("task_id", ForeignKey("tasks.id"), primary_key=True),
    Column("worker_id", String(128), nullable=False),
    Column("epoch", Integer, nullable=False),  # the fencing token
    Column("expires_at", UTCDateTime, nullable=False),
)  # fmt: skip

# One row per finished task, written with its terminal status (`learning.outcome_of`).
outcomes = Table(
    "outcomes", metadata,
    Column("task_id", ForeignKey("tasks.id"), primary_key=True),
    Column("status", String(32), nullable=False),
    Column("reason", String(64)),
    Column("complexity", String(16), nullable=False, index=True),
    Column("words", Integer, nullable=False),
    Column("items", Integer, nullable=False),
    Column("context_files", Integer, nullable=False),
    Column("workspace", Text, nullable=False),
    Column("backend", String(64), nullable=False),
    Column("model", String(200)),
    Column("strategy", JSON),
    Column("iterations", Integer, nullable=False),
    Column("max_iterations", Integer, nullable=False),
    Column("limit_source", String(16), nullable=False),
    Column("evidence_rule", String(32)),
    Column("check_command", Text),
    Column("check_passed", Boolean),
    Column("check_failure", Text),
    Column("promise", Boolean),
    Column("diff", Boolean, nullable=False),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("seconds", Float, nullable=False),
    Column("longest_iteration_seconds", Float),
    Column("idle_run", Integer, nullable=False),
    Column("finished_at", UTCDateTime, nullable=False, index=True),
)  # fmt: skip

proposals = Table(
    "proposals", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("summary", Text, nullable=False),
    Column("changes", JSON, nullable=False),
    Column("previous", JSON),
    Column("task", JSON),
    Column("evidence", JSON, nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)  # fmt: skip

decisions = Table(
    "decisions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("proposal_id", ForeignKey("proposals.id"), nullable=False, index=True),
    Column("decision", String(16), nullable=False),
    Column("who", String(200), nullable=False),
    Column("detail", Text),
    Column("created_at", UTCDateTime, nullable=False),
)  # fmt: skip

log = logging.getLogger("aistack.ralph")
_TERMINAL = tuple(s.value for s in TERMINAL_STATUSES)
_TASK_BY_ID = select(tasks).where(tasks.c.id == bindparam("task_id"))  # built once: the hottest query
_TASK_TO_CHANGE = _TASK_BY_ID.with_for_update()  # SQLite leaves FOR UPDATE out: its one writer holds the lock
_EPOCH_OF_TASK = (
    select(leases.c.epoch).select_from(tasks.outerjoin(leases, leases.c.task_id == tasks.c.id))
    .where(tasks.c.id == bindparam("task_id")).with_for_update(of=tasks)
)  # fmt: skip
# The lease the current asyncio task (a worker's drive of one task) writes under: set by `Store.fenced`.
_FENCE: ContextVar[Lease | None] = ContextVar("aistack_fence", default=None)


class LeaseLost(Exception):
    """A write under a lease another worker has claimed since: nothing of it was recorded."""


class Store:
    """Every method is one short transaction: with SQLite on the store's connection, on the event
    loop; with PostgreSQL on a pooled connection, in one of the store's threads."""

    def __init__(self, url: str, on_event: Callable[[str], None] | None = None, model: str | None = None):
        sqlite = make_url(url).get_backend_name() == "sqlite"
        options: dict[str, Any]
        if sqlite:
            options = {"connect_args": {"check_same_thread": False}}
            if url in ("sqlite://", "sqlite:///:memory:"):  # one shared in-memory database, for tests
                options["poolclass"] = StaticPool
        else:  # pre-ping: a connection the server dropped (a restart) is replaced, not handed out
            options = {"pool_size": POOL_SIZE + 1, "max_overflow": 0, "pool_pre_ping": True, "pool_timeout": 10,
                       "connect_args": {"connect_timeout": 5}}  # fmt: skip
        self.engine = create_engine(url, **options)
        self.model = model  # the model the agents' LLM serves, as the tasks' outcomes name it
        if sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        migrations.upgrade(self.engine)
        self._db = self.engine.connect() if sqlite else None
        self.shared = not sqlite  # other processes write to it too: what they write is seen by reading again
        self._threads = None if sqlite else ThreadPoolExecutor(POOL_SIZE, thread_name_prefix="store")
        self._on_event = on_event or (lambda task_id: None)
        self._said = self._on_event  # what this process appended; on PostgreSQL its NOTIFY says it, to every process
        self._checkpointer = _WalCheckpointer(self.engine) if sqlite and options.get("poolclass") is not StaticPool else None
        self._listener = None if sqlite or on_event is None else _EventListener(self.engine, self._on_event)
        if self._listener is not None:
            self._said = lambda task_id: None

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
        given = {name: getattr(new, name) for name in new.__dataclass_fields__}
        task = TaskRecord(**given, status=TaskStatus.queued, created_at=now, updated_at=now)  # the columns' defaults

        def work(db: Connection) -> None:
            db.execute(insert(tasks), {**_fields(task), "status": task.status.value})
            db.execute(insert(events), {"task_id": new.id, "type": "status", "data": {"status": "queued"}, "created_at": now})

        await self._run(work, new.id, events=True)
        self._said(new.id)
        return task

    async def get(self, task_id: str) -> TaskRecord | None:
        return await self._run(lambda db: self._task(db, task_id))

    async def apply(
        self, task_id: str, change: TaskUpdate, allowed_from: Iterable[TaskStatus] | None = None, extra: Sequence[Event] = ()
    ) -> TaskRecord | None:
        """Change the task and append `extra` events in one transaction, only while its status is
        in `allowed_from` (compare-and-set; None: any). None when it did not apply."""
        now = utcnow()
        sources = None if allowed_from is None else frozenset(allowed_from)

        def work(db: Connection) -> TaskRecord | None:
            before = self._task(db, task_id, to_change=True)
            if before is None or (sources is not None and before.status not in sources):
                return None
            after = update(tasks).where(tasks.c.id == task_id).values(_stamped(change, now)).returning(tasks)
            task = _task_record(db.execute(after).one())
            _append_events(db, task, extra, now, status_changed=task.status is not before.status)
            self._record_outcome(db, before, task)
            return task

        task = await self._run(work, task_id, events=True)
        if task is not None:
            self._said(task_id)
        return task

    async def record_iteration(
        self, it: IterationRecord, change: TaskUpdate, extra: Sequence[Event], allowed_from: Iterable[TaskStatus]
    ) -> TaskRecord | None:
        """Store a finished iteration together with the task's new state and the events, only
        while the task's status is in `allowed_from` (compare-and-set), and forget its process
        groups (ended by then). None when it did not apply."""
        now = utcnow()
        sources = frozenset(allowed_from)

        def work(db: Connection) -> TaskRecord | None:
            before = self._task(db, it.task_id, to_change=True)
            if before is None or before.status not in sources:
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
            self._record_outcome(db, before, task)
            return task

        task = await self._run(work, it.task_id, events=True)
        if task is not None:
            self._said(it.task_id)
        return task

    async def list_tasks(self, status: TaskStatus | None, limit: int, offset: int) -> tuple[list[TaskRecord], int]:
        query, count = select(tasks), select(func.count()).select_from(tasks)
        if status is not None:
            query, count = query.where(tasks.c.status == status.value), count.where(tasks.c.status == status.value)

        def work(db: Connection) -> tuple[list[TaskRecord], int]:
            rows = db.execute(query.order_by(tasks.c.created_at.desc(), tasks.c.id.desc()).limit(limit).offset(offset))
            return [_task_record(r) for r in rows], db.scalar(count) or 0

        return await self._run(work)

    # --- iterations and events ---------------------------------------------------------------------

    async def iterations(self, task_id: str) -> list[IterationRecord]:
        query = select(iterations).where(iterations.c.task_id == task_id).order_by(iterations.c.number)
        return await self._run(lambda db: [_iteration_record(r) for r in db.execute(query)])

    async def checkpoints(self, task_id: str) -> dict[int, str | None]:
        """Each iteration's checkpoint commit, by number (None: it changed nothing)."""
        query = select(iterations.c.number, iterations.c.checkpoint_commit).where(iterations.c.task_id == task_id)
        return await self._run(lambda db: dict(db.execute(query.order_by(iterations.c.number)).all()))

    async def events_after(self, task_id: str, after_id: int, limit: int = 500) -> list[EventRecord]:
        query = select(events).where(events.c.task_id == task_id, events.c.id > after_id).order_by(events.c.id).limit(limit)
        return await self._run(lambda db: [EventRecord(**r._mapping) for r in db.execute(query)])

    async def add_event(self, task_id: str, kind: str, data: dict) -> None:
        def work(db: Connection) -> None:
            self._task(db, task_id, to_change=True)  # the task's events are numbered in commit order
            db.execute(insert(events), {"task_id": task_id, "type": kind, "data": data, "created_at": utcnow()})

        await self._run(work, task_id, events=True)
        self._said(task_id)

    async def starts(self, task_id: str, number: int) -> int:
        """How often iteration `number` of the task was started (its `iteration_started` events)."""
        query = select(func.count()).where(
            events.c.task_id == task_id, events.c.type == "iteration_started", events.c.data["iteration"].as_integer() == number
        )
        return await self._run(lambda db: db.scalar(query) or 0)

    # --- process groups ----------------------------------------------------------------------------

    async def add_group(self, task_id: str, iteration: int, group: GroupIdentity) -> None:
        row = {"task_id": task_id, "iteration": iteration, "pgid": group.pgid, "leader_start": group.leader_start,
               "boot_id": group.boot_id, "created_at": utcnow()}  # fmt: skip
        await self._run(lambda db: db.execute(insert(process_groups), row), task_id)

    async def groups(self, task_id: str) -> list[GroupIdentity]:
        query = select(process_groups.c.pgid, process_groups.c.leader_start, process_groups.c.boot_id)
        return await self._run(lambda db: [GroupIdentity(*row) for row in db.execute(query.where(process_groups.c.task_id == task_id))])

    async def remove_group(self, task_id: str, group: GroupIdentity) -> None:
        gone = delete(process_groups).where(process_groups.c.task_id == task_id, process_groups.c.pgid == group.pgid)
        await self._run(lambda db: db.execute(gone), task_id)

    # --- leases ------------------------------------------------------------------------------------

    async def claim(self, worker: str, statuses: Iterable[TaskStatus], exclude: set[str], limit: int, seconds: float) -> list[Lease]:
        """Lease up to `limit` tasks in `statuses` to `worker` for `seconds`: running ones first
        (interrupted, approved), then the others, each oldest first. A task is free when nobody
        ever leased it, its lease expired (its worker died or was cut off: this is the reaper),
        or it is `worker`'s own (a restart under the same RALPH_WORKER_ID). On PostgreSQL the
        tasks' rows are locked FOR UPDATE SKIP LOCKED, so workers claiming at once never wait on
        or take the same task; on SQLite, this process is the only worker, so every lease left
        in the database is an earlier process's and void."""
        now = utcnow()
        free = true() if self._db is not None else or_(leases.c.task_id.is_(None), leases.c.expires_at < now, leases.c.worker_id == worker)
        query = (
            select(tasks.c.id)
            .select_from(tasks.outerjoin(leases, leases.c.task_id == tasks.c.id))
            .where(tasks.c.status.in_([status.value for status in statuses]), free)
            .order_by((tasks.c.status != TaskStatus.running.value).asc(), tasks.c.created_at.asc())
            .limit(limit)
            .with_for_update(of=tasks, skip_locked=True)
        )
        if exclude:
            query = query.where(tasks.c.id.not_in(exclude))
        until = now + timedelta(seconds=seconds)

        def work(db: Connection) -> list[Lease]:
            claimed = []
            for task_id in db.scalars(query).all():
                # read again: the statement above saw the leases as they were when it began, and
                # another worker may have leased a task between then and our lock on its row
                epoch = db.scalar(select(leases.c.epoch).where(leases.c.task_id == task_id))
                if epoch is None:
                    db.execute(insert(leases), {"task_id": task_id, "worker_id": worker, "epoch": 1, "expires_at": until})
                else:  # only while still free
                    take = update(leases).where(leases.c.task_id == task_id, leases.c.epoch == epoch, free)
                    if db.execute(take.values(worker_id=worker, epoch=epoch + 1, expires_at=until)).rowcount != 1:
                        continue
                claimed.append(Lease(task_id, worker, (epoch or 0) + 1))
            return claimed

        return await self._run(work)

    async def renew(self, held: Sequence[Lease], seconds: float) -> tuple[set[str], set[str]]:
        """Extend the leases by `seconds` from now. (lost, stop): the tasks whose lease another
        worker holds now, and those a person asked to stop (through any process)."""
        until = utcnow() + timedelta(seconds=seconds)

        def work(db: Connection) -> tuple[set[str], set[str]]:
            lost = set()
            for lease in held:
                mine = (leases.c.task_id == lease.task_id, leases.c.worker_id == lease.worker_id, leases.c.epoch == lease.epoch)
                if db.execute(update(leases).where(*mine).values(expires_at=until)).rowcount != 1:
                    lost.add(lease.task_id)
            ids = [lease.task_id for lease in held]
            stop = set(db.scalars(select(tasks.c.id).where(tasks.c.id.in_(ids), tasks.c.stop_requested))) if ids else set()
            return lost, stop

        return await self._run(work)

    async def release_lease(self, lease: Lease) -> None:
        """Give the task back at once (it ended, waits for a person, or this worker stops); the epoch stays."""
        mine = (leases.c.task_id == lease.task_id, leases.c.epoch == lease.epoch)
        await self._run(lambda db: db.execute(update(leases).where(*mine).values(expires_at=datetime.fromtimestamp(0, UTC))))

    async def leased(self, task_id: str) -> bool:
        """Whether another process's worker holds a live lease on the task (so it, not the caller,
        ends a stop). Never on SQLite, where this process is the only worker."""
        if not self.shared:
            return False
        query = select(func.count()).where(leases.c.task_id == task_id, leases.c.expires_at > utcnow())
        return bool(await self._run(lambda db: db.scalar(query)))

    @staticmethod
    @contextmanager
    def fenced(lease: Lease) -> Iterator[None]:
        """Every write to the lease's task made within (in this asyncio task and what it awaits)
        is fenced: refused with `LeaseLost` once another worker claimed the task."""
        token = _FENCE.set(lease)
        try:
            yield
        finally:
            _FENCE.reset(token)

    # --- learning ----------------------------------------------------------------------------------

    def _record_outcome(self, db: Connection, before: TaskRecord, task: TaskRecord) -> None:
        """The task's outcome, in the transaction that ends it: a crash loses both or neither."""
        if before.status.terminal or not task.status.terminal:
            return
        columns = [column for column in iterations.c if column.name != "output"]
        rows = db.execute(select(*columns).where(iterations.c.task_id == task.id).order_by(iterations.c.number))
        history = [_iteration_record(row) for row in rows]  # without the outputs: an outcome needs none
        db.execute(insert(outcomes), _fields(learning.outcome_of(task, history, self.model)))

    async def outcomes(self) -> list[OutcomeRecord]:
        """Every finished task's outcome, oldest first: a scan, in a worker thread."""

        def scan() -> list[OutcomeRecord]:
            with self.engine.connect() as db:
                return [OutcomeRecord(**row._mapping) for row in db.execute(select(outcomes).order_by(outcomes.c.finished_at))]

        return await asyncio.to_thread(scan)

    async def save_proposals(self, found: Sequence[learning.Proposal]) -> list[ProposalRecord]:
        """Keep what the learner found: a proposal still open with the same kind, subject and
        changes takes the new evidence; one that differs is superseded by the new one; one that a
        person already accepted with the same changes is not made again. The proposals kept."""
        now = utcnow()

        def work(db: Connection) -> list[ProposalRecord]:
            kept = []
            for proposal in found:
                same = (proposals.c.kind == proposal.kind, proposals.c.subject == proposal.subject)
                standing = select(proposals).where(*same, proposals.c.status.in_(["open", "accepted"]))
                rows = [_proposal_record(r) for r in db.execute(standing)]
                if any(r.status == "accepted" and r.changes == proposal.changes and r.task == proposal.task for r in rows):
                    continue
                fields = {"summary": proposal.summary, "changes": proposal.changes, "task": proposal.task,
                          "evidence": proposal.evidence, "updated_at": now}  # fmt: skip
                if (open_ := next((r for r in rows if r.status == "open"), None)) is not None:
                    if open_.changes == proposal.changes and open_.task == proposal.task:
                        row = db.execute(update(proposals).where(proposals.c.id == open_.id).values(fields).returning(proposals)).one()
                        kept.append(_proposal_record(row))
                        continue
                    db.execute(update(proposals).where(proposals.c.id == open_.id).values(status="superseded", updated_at=now))
                new = {**fields, "kind": proposal.kind, "subject": proposal.subject, "status": "open", "created_at": now}
                kept.append(_proposal_record(db.execute(insert(proposals).values(new).returning(proposals)).one()))
            return kept

        return await self._run(work)

    async def proposals(self, status: str | None = None) -> list[ProposalRecord]:
        query = select(proposals).order_by(proposals.c.id.desc())
        if status is not None:
            query = query.where(proposals.c.status == status)
        return await self._run(lambda db: [_proposal_record(row) for row in db.execute(query)])

    async def proposal(self, proposal_id: int) -> ProposalRecord | None:
        query = select(proposals).where(proposals.c.id == proposal_id)
        return await self._run(lambda db: next((_proposal_record(row) for row in db.execute(query)), None))

    async def decide(
        self, proposal_id: int, decision: str, who: str, allowed_from: Iterable[str], status: str,
        previous: dict[str, str | None] | None = None, detail: str | None = None,
    ) -> ProposalRecord | None:  # fmt: skip
        """Record a person's decision and the proposal's new status, only while its status is in
        `allowed_from` (compare-and-set). None when it did not apply."""
        now = utcnow()
        values: dict[str, Any] = {"status": status, "updated_at": now}
        if previous is not None:
            values["previous"] = previous
        change = update(proposals).where(proposals.c.id == proposal_id, proposals.c.status.in_(list(allowed_from)))

        def work(db: Connection) -> ProposalRecord | None:
            row = db.execute(change.values(values).returning(proposals)).first()
            if row is None:
                return None
            db.execute(insert(decisions), {"proposal_id": proposal_id, "decision": decision, "who": who, "detail": detail,
                                           "created_at": now})  # fmt: skip
            return _proposal_record(row)

        return await self._run(work)

    async def decisions(self, proposal_id: int) -> list[DecisionRecord]:
        columns = (decisions.c.proposal_id, decisions.c.decision, decisions.c.who, decisions.c.created_at, decisions.c.detail)
        query = select(*columns).where(decisions.c.proposal_id == proposal_id).order_by(decisions.c.id)
        return await self._run(lambda db: [DecisionRecord(**row._mapping) for row in db.execute(query)])

    # --- statistics --------------------------------------------------------------------------------

    async def stats(self) -> Stats:
        """Totals over every task: a scan, so in a worker thread on a connection of its own."""
        return await asyncio.to_thread(self._stats)

    def _stats(self) -> Stats:
        with self.engine.connect() as db:
            by_status: dict[str, int] = {s: n for s, n in db.execute(select(tasks.c.status, func.count()).group_by(tasks.c.status))}
            mean = db.scalar(select(func.avg(tasks.c.iteration)).where(tasks.c.status.in_(_TERMINAL)))

            def rates(column) -> dict[str, RateRow]:
                return {str(key or "unclassified"): _rate(*row) for key, *row in db.execute(_rates_by(column))}

            return Stats(
                by_status=by_status,
                total=sum(by_status.values()),
                mean_iterations=float(mean) if mean is not None else None,
                per_backend=rates(tasks.c.backend),
                per_complexity=rates(tasks.c.complexity),
            )

    async def daily_stats(self) -> DailyStats:
        """`stats`'s rates per day the tasks finished on (UTC; the store keeps UTC), oldest first."""
        return await asyncio.to_thread(self._daily_stats)

    def _daily_stats(self) -> DailyStats:
        day = func.date(tasks.c.finished_at)  # SQLite: 'YYYY-MM-DD'; PostgreSQL: a date

        def rates(column) -> list[DayRate]:
            query = _rates_by(day, column).where(tasks.c.finished_at.is_not(None)).order_by(day, column)
            return [
                DayRate(day=when, group=str(key or "unclassified"), **_rate(*row).model_dump()) for when, key, *row in db.execute(query)
            ]

        with self.engine.connect() as db:
            return DailyStats(per_backend=rates(tasks.c.backend), per_complexity=rates(tasks.c.complexity))

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
        if self._listener:
            self._listener.stop()
        if self._db is not None:
            self._db.close()
        if self._threads is not None:
            self._threads.shutdown(wait=True)
        self.engine.dispose()

    async def _run(self, work: Callable[[Connection], T], task_id: str | None = None, events: bool = False) -> T:
        """`work` in one transaction: SQLite's on the loop, PostgreSQL's in a thread (see the
        module's docstring). A write to `task_id` under a lease (`fenced`) first checks that the
        lease's epoch is still the task's, holding the task's row until the commit. `events`: it
        appends the task's events, which PostgreSQL tells every listening process at the commit."""
        lease = _FENCE.get() if task_id is not None else None
        if lease is not None and lease.task_id == task_id:
            work = _fenced_work(work, lease)
        if events and task_id is not None and self._db is None:
            work = _notifying_work(work, task_id)
        if self._db is not None:
            with self._db.begin():
                return work(self._db)
        return await asyncio.get_running_loop().run_in_executor(self._threads, self._in_pool, work)

    def _in_pool(self, work: Callable[[Connection], T]) -> T:
        with self.engine.begin() as db:
            return work(db)

    @staticmethod
    def _task(db: Connection, task_id: str, to_change: bool = False) -> TaskRecord | None:
        row = db.execute(_TASK_TO_CHANGE if to_change else _TASK_BY_ID, {"task_id": task_id}).first()
        return _task_record(row) if row is not None else None


def unreachable(exc: BaseException) -> str | None:
    """Why the database could not be reached (down, restarting, cut off, every connection busy),
    in one line; None when `exc` is something else (a full disk is `space.reason`'s)."""
    if isinstance(exc, SATimeoutError):
        return "no database connection free in time"
    if not isinstance(exc, OperationalError) or space.reason(exc) is not None:
        return None
    return "database unreachable: " + (str(exc.orig or exc).strip().splitlines() or ["?"])[0]


def _notifying_work(work: Callable[[Connection], T], task_id: str) -> Callable[[Connection], T]:
    def notifying(db: Connection) -> T:
        done = work(db)
        db.execute(select(func.pg_notify(EVENTS_CHANNEL, task_id)))
        return done

    return notifying


def _fenced_work(work: Callable[[Connection], T], lease: Lease) -> Callable[[Connection], T]:
    def checked(db: Connection) -> T:
        epoch = db.execute(_EPOCH_OF_TASK, {"task_id": lease.task_id}).scalar()
        if epoch != lease.epoch:
            raise LeaseLost(f"task {lease.task_id}: lease epoch {lease.epoch} of {lease.worker_id} is now {epoch}")
        return work(db)

    return checked


def _fields(record: Any) -> dict[str, Any]:
    """A record's columns; its tuples (lists of files) as JSON lists."""
    values = {name: getattr(record, name) for name in record.__dataclass_fields__}
    return {name: list(value) if isinstance(value, tuple) else value for name, value in values.items()}


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
    values["protected_paths"] = tuple(values["protected_paths"] or ())  # NULL: a task from before protected paths
    return TaskRecord(**values)


def _proposal_record(row) -> ProposalRecord:
    return ProposalRecord(**row._mapping)


def _iteration_record(row) -> IterationRecord:
    values = dict(row._mapping)
    values.pop("id", None)
    values["files_modified"] = tuple(values["files_modified"] or ())
    values["protected_undone"] = tuple(values["protected_undone"] or ())
    values["output"] = values.get("output") or ""
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


class _EventListener:
    """LISTENs on PostgreSQL for the events other processes append and passes each task id to the
    store's `on_event` (which wakes the event streams), from a thread and a connection of its
    own. It reconnects after a lost connection; the streams also read the store every
    SSE_POLL_SECONDS, so what is said while it reconnects is seen all the same."""

    WAIT_SECONDS = 1.0

    def __init__(self, engine, on_event: Callable[[str], None]):
        self._engine, self._on_event = engine, on_event
        self._stopped, self._listening = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-listen", daemon=True)
        self._thread.start()
        self._listening.wait(5)  # what this process appends from now on is heard (the store just connected)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as db:
                    db.exec_driver_sql(f"LISTEN {EVENTS_CHANNEL}")
                    self._listening.set()
                    driver = db.connection.driver_connection
                    while not self._stopped.is_set():
                        for note in driver.notifies(timeout=self.WAIT_SECONDS):
                            self._on_event(note.payload)
            except Exception as exc:  # the database went away: listen again once it is back
                log.debug("event listener reconnects: %s", exc)
                self._stopped.wait(self.WAIT_SECONDS)

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


def _rates_by(*columns):
    """The finished tasks per group of `columns`: how many, how many completed, and the iterations
    and tokens (prompt + completion) summed over the completed ones (see `_rate`)."""

    def solved(value):
        return func.sum(case((tasks.c.status == TaskStatus.completed.value, value), else_=0))

    tokens = tasks.c.prompt_tokens + tasks.c.completion_tokens
    query = select(*columns, func.count(), solved(1), solved(tasks.c.iteration), solved(tokens))
    return query.where(tasks.c.status.in_(_TERMINAL)).group_by(*columns)


def _rate(total: int, completed: int | None, iterations: int | None, tokens: int | None) -> RateRow:
    """A group's outcomes: its success rate, and what a solved task cost on average."""
    completed = int(completed or 0)
    return RateRow(
        total=total, completed=completed, success_rate=completed / total if total else None,
        iterations_per_solved=int(iterations or 0) / completed if completed else None,
        tokens_per_solved=int(tokens or 0) / completed if completed else None,
    )  # fmt: skip
