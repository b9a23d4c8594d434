"""Durable state: tasks, iterations and events (SQLAlchemy; SQLite in WAL mode by default).

Only portable SQLAlchemy constructs are used, so PostgreSQL can replace SQLite when several
orchestrators share one queue. Every state change that belongs together (an iteration, the task's
new status and their events) is written in one transaction: a crash leaves all or none of it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    case,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from aistack.contracts import (
    EventView,
    Evidence,
    IterationView,
    RateRow,
    Stats,
    TaskStatus,
    TaskView,
    TERMINAL_STATUSES,
    TokenCounts,
)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return value.astimezone(UTC).replace(tzinfo=None) if value is not None else None

    def process_result_value(self, value, dialect):
        return value.replace(tzinfo=UTC) if value is not None else None


class Base(DeclarativeBase):
    pass


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    prompt: Mapped[str] = mapped_column(Text)
    backend: Mapped[str] = mapped_column(String(64))
    workspace: Mapped[str] = mapped_column(Text)
    worktree: Mapped[str | None] = mapped_column(Text)
    branch: Mapped[str | None] = mapped_column(String(128))
    base_commit: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32), index=True)
    iteration: Mapped[int] = mapped_column(Integer, default=0)
    max_iterations: Mapped[int] = mapped_column(Integer)
    limit_source: Mapped[str] = mapped_column(String(16))
    complexity: Mapped[str | None] = mapped_column(String(16))
    complexity_reason: Mapped[str | None] = mapped_column(Text)
    require_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    approved_through: Mapped[int] = mapped_column(Integer, default=0)
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    check_command: Mapped[str | None] = mapped_column(Text)
    completion_promise: Mapped[str | None] = mapped_column(Text)
    context: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completion_reason: Mapped[str | None] = mapped_column(String(64))
    evidence: Mapped[dict | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)


class Iteration(Base):
    __tablename__ = "iterations"
    __table_args__ = (UniqueConstraint("task_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration_seconds: Mapped[float | None]
    status: Mapped[str | None] = mapped_column(String(16))
    exit_code: Mapped[int | None]
    output: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text)
    files_modified: Mapped[list] = mapped_column(JSON, default=list)
    diff_stat: Mapped[str | None] = mapped_column(Text)
    checkpoint_commit: Mapped[str | None] = mapped_column(String(64))
    check_exit_code: Mapped[int | None]
    check_output: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    transient_retries: Mapped[int] = mapped_column(Integer, default=0)


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id"), index=True)
    type: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Store:
    """Thread-safe access to the database; every method is one short transaction."""

    def __init__(self, url: str, on_event: Callable[[str], None] | None = None):
        self.engine = create_engine(url, connect_args={"check_same_thread": False} if url.startswith("sqlite") else {})
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._on_event = on_event or (lambda task_id: None)
        self._lock = threading.Lock()  # one writer at a time inside this process; SQLite allows one anyway

    @classmethod
    def sqlite(cls, path: Path, on_event: Callable[[str], None] | None = None) -> Store:
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{path}", on_event)

    def session(self) -> Session:
        """A read-only session for queries that do not fit a method here (metrics)."""
        return self._sessions()

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with self._lock, self._sessions.begin() as session:
            yield session

    # --- tasks ---------------------------------------------------------------------------------

    def add_task(self, **fields: Any) -> Task:
        now = utcnow()
        task = Task(created_at=now, updated_at=now, status=TaskStatus.queued.value, **fields)
        with self._write() as s:
            s.add(task)
            s.flush()  # the event references the task row
            s.add(Event(task_id=task.id, type="status", data={"status": "queued"}, created_at=now))
        self._on_event(task.id)
        return task

    def get(self, task_id: str) -> Task | None:
        with self._sessions() as s:
            return s.get(Task, task_id)

    def transition(
        self,
        task_id: str,
        allowed_from: set[str] | None = None,
        events: list[tuple[str, dict]] | tuple = (),
        **fields: Any,
    ) -> Task | None:
        """Apply `fields` and append `events` in one transaction — only if the task's status is in
        `allowed_from` (compare-and-set; None: any status). Returns None when it did not apply."""
        now = utcnow()
        with self._write() as s:
            task = s.get(Task, task_id)
            if task is None or (allowed_from is not None and task.status not in allowed_from):
                return None
            _apply(s, task, fields, events, now)
        self._on_event(task_id)
        return task

    def record_iteration(self, task_id: str, row: dict[str, Any], task_fields: dict[str, Any], events: list[tuple[str, dict]]) -> Task:
        """Store a finished iteration together with the task's new state and the events."""
        now = utcnow()
        with self._write() as s:
            task = s.get(Task, task_id)
            s.add(Iteration(task_id=task_id, finished_at=now, **row))
            task.iteration = row["number"]
            task.prompt_tokens += row.get("prompt_tokens", 0)
            task.completion_tokens += row.get("completion_tokens", 0)
            _apply(s, task, task_fields, events, now)
        self._on_event(task_id)
        return task

    def list_tasks(self, status: str | None, limit: int, offset: int) -> tuple[list[Task], int]:
        with self._sessions() as s:
            query = select(Task)
            count = select(func.count()).select_from(Task)
            if status:
                query, count = query.where(Task.status == status), count.where(Task.status == status)
            rows = s.scalars(query.order_by(Task.created_at.desc(), Task.id.desc()).limit(limit).offset(offset)).all()
            return list(rows), s.scalar(count) or 0

    def ready_tasks(self, exclude: set[str], limit: int) -> list[Task]:
        """Tasks a worker may pick up: interrupted/approved running ones first, then queued, FIFO."""
        with self._sessions() as s:
            query = select(Task).where(Task.status.in_(["running", "queued"]))
            if exclude:
                query = query.where(Task.id.not_in(exclude))
            rows = s.scalars(query.order_by((Task.status == "queued").asc(), Task.created_at.asc()).limit(limit)).all()
            return list(rows)

    def count_by_status(self) -> dict[str, int]:
        with self._sessions() as s:
            return {status: n for status, n in s.execute(select(Task.status, func.count()).group_by(Task.status))}

    # --- iterations and events ---------------------------------------------------------------------

    def iterations(self, task_id: str) -> list[Iteration]:
        with self._sessions() as s:
            return list(s.scalars(select(Iteration).where(Iteration.task_id == task_id).order_by(Iteration.number)))

    def events_after(self, task_id: str, after_id: int, limit: int = 500) -> list[Event]:
        with self._sessions() as s:
            query = select(Event).where(Event.task_id == task_id, Event.id > after_id).order_by(Event.id).limit(limit)
            return list(s.scalars(query))

    def add_event(self, task_id: str, kind: str, data: dict) -> None:
        with self._write() as s:
            s.add(Event(task_id=task_id, type=kind, data=data, created_at=utcnow()))
        self._on_event(task_id)

    # --- statistics --------------------------------------------------------------------------------

    def stats(self) -> Stats:
        terminal = list(_TERMINAL)
        with self._sessions() as s:
            by_status = {status: n for status, n in s.execute(select(Task.status, func.count()).group_by(Task.status))}
            mean = s.scalar(select(func.avg(Task.iteration)).where(Task.status.in_(terminal)))

            def rates(column) -> dict[str, RateRow]:
                done = func.sum(case((Task.status == "completed", 1), else_=0))
                rows = s.execute(select(column, func.count(), done).where(Task.status.in_(terminal)).group_by(column))
                return {
                    str(key or "unclassified"): RateRow(total=n, completed=int(ok or 0), success_rate=(int(ok or 0) / n) if n else None)
                    for key, n, ok in rows
                }

            return Stats(
                by_status=by_status,
                total=sum(by_status.values()),
                mean_iterations=float(mean) if mean is not None else None,
                per_backend=rates(Task.backend),
                per_complexity=rates(Task.complexity),
            )


_TERMINAL = frozenset(t.value for t in TERMINAL_STATUSES)


def _apply(s: Session, task: Task, fields: dict[str, Any], events, now: datetime) -> None:
    """Set fields, stamp the times, and record the events — a status change last, as its own event."""
    for key, value in fields.items():
        setattr(task, key, value)
    task.updated_at = now
    if task.status in _TERMINAL and task.finished_at is None:
        task.finished_at = now
    for kind, data in events:
        s.add(Event(task_id=task.id, type=kind, data=data, created_at=now))
    if "status" in fields:
        s.add(Event(task_id=task.id, type="status", data=_status_event(task), created_at=now))


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _status_event(task: Task) -> dict:
    return {
        "status": task.status,
        "iteration": task.iteration,
        "completion_reason": task.completion_reason,
        "error": task.error,
    }


# --- views ---------------------------------------------------------------------------------------


def task_view(task: Task) -> TaskView:
    return TaskView(
        id=task.id,
        prompt=task.prompt,
        status=TaskStatus(task.status),
        backend=task.backend,
        workspace=task.workspace,
        worktree=task.worktree,
        branch=task.branch,
        base_commit=task.base_commit,
        iteration=task.iteration,
        max_iterations=task.max_iterations,
        limit_source=task.limit_source,
        complexity=task.complexity,
        complexity_reason=task.complexity_reason,
        require_approval=task.require_approval,
        check_command=task.check_command,
        completion_promise=task.completion_promise,
        context=task.context or {},
        created_at=task.created_at,
        started_at=task.started_at,
        finished_at=task.finished_at,
        updated_at=task.updated_at,
        completion_reason=task.completion_reason,
        evidence=Evidence.model_validate(task.evidence) if task.evidence else None,
        error=task.error,
        tokens=TokenCounts(prompt=task.prompt_tokens, completion=task.completion_tokens),
    )


def iteration_view(it: Iteration) -> IterationView:
    return IterationView(
        number=it.number,
        started_at=it.started_at,
        finished_at=it.finished_at,
        duration_seconds=it.duration_seconds,
        status=it.status,
        exit_code=it.exit_code,
        output_excerpt=it.output,
        error=it.error,
        files_modified=it.files_modified or [],
        diff_stat=it.diff_stat,
        checkpoint_commit=it.checkpoint_commit,
        check_exit_code=it.check_exit_code,
        check_output=it.check_output,
        tokens=TokenCounts(prompt=it.prompt_tokens, completion=it.completion_tokens),
        transient_retries=it.transient_retries,
    )


def event_view(ev: Event) -> EventView:
    return EventView(id=ev.id, task_id=ev.task_id, type=ev.type, data=ev.data or {}, created_at=ev.created_at)
