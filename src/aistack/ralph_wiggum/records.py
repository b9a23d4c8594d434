"""The orchestrator's durable facts as plain typed records: what the store returns and takes.

Pure data (no database, no I/O), so the rules can build them and tests can write them by hand.
Field names are the database's column names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from aistack.contracts import (
    DecisionView,
    EventView,
    Evidence,
    IterationView,
    ProposalView,
    Strategy,
    TaskStatus,
    TaskView,
    TokenCounts,
)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class NewTask:
    """A submission that passed validation, as it is stored."""

    id: str
    prompt: str
    backend: str
    workspace: str
    max_iterations: int
    limit_source: str  # request, adaptive or default
    complexity: str | None = None
    complexity_reason: str | None = None
    require_approval: bool = False
    check_command: str | None = None
    completion_promise: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    base_commit: str | None = None  # known at submission for a task on a git remote
    strategy: dict[str, Any] | None = None  # a `Strategy`, its defaults resolved at submission
    protected_paths: tuple[str, ...] = ()  # globs the agent may not change


@dataclass(frozen=True, slots=True)
class TaskRecord:
    id: str
    prompt: str
    backend: str
    workspace: str
    status: TaskStatus
    max_iterations: int
    limit_source: str
    created_at: datetime
    updated_at: datetime
    worktree: str | None = None
    branch: str | None = None
    base_commit: str | None = None
    iteration: int = 0  # the last recorded iteration
    complexity: str | None = None
    complexity_reason: str | None = None
    require_approval: bool = False
    approved_through: int = 0  # a person has approved iterations up to this one
    stop_requested: bool = False
    check_command: str | None = None
    completion_promise: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    strategy: dict[str, Any] | None = None  # None: a task from before strategies, which ran with Strategy()'s defaults
    protected_paths: tuple[str, ...] = ()
    started_at: datetime | None = None
    finished_at: datetime | None = None
    completion_reason: str | None = None
    evidence: dict[str, Any] | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def repository(self) -> str | None:
        """The git remote the task works on, or None: its repository is on this host. The remote's
        URL is kept as its `workspace`, where a local repository's absolute path is."""
        return None if self.workspace.startswith("/") else self.workspace

    @property
    def loop_strategy(self) -> Strategy:
        return Strategy.model_validate(self.strategy or {})

    def view(self) -> TaskView:
        return TaskView(
            id=self.id, prompt=self.prompt, status=self.status, backend=self.backend, workspace=self.workspace,
            repository=self.repository,
            worktree=self.worktree, branch=self.branch, base_commit=self.base_commit, iteration=self.iteration,
            max_iterations=self.max_iterations, limit_source=self.limit_source, complexity=self.complexity,
            complexity_reason=self.complexity_reason, require_approval=self.require_approval,
            check_command=self.check_command, completion_promise=self.completion_promise, context=self.context,
            strategy=self.loop_strategy, protected_paths=list(self.protected_paths), created_at=self.created_at,
            started_at=self.started_at, finished_at=self.finished_at, updated_at=self.updated_at, completion_reason=self.completion_reason,
            evidence=Evidence.model_validate(self.evidence) if self.evidence else None, error=self.error,
            tokens=TokenCounts(prompt=self.prompt_tokens, completion=self.completion_tokens),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class IterationRecord:
    """One finished iteration: what the agent did, what git saw, what the check said."""

    task_id: str
    number: int
    started_at: datetime
    status: str  # success, no_progress or error: how the agent's run ended, not whether the task is done
    output: str = ""
    duration_seconds: float | None = None
    exit_code: int | None = None
    error: str | None = None
    files_modified: tuple[str, ...] = ()
    diff_stat: str | None = None
    checkpoint_commit: str | None = None
    check_exit_code: int | None = None
    check_output: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    transient_retries: int = 0
    protected_undone: tuple[str, ...] = ()  # protected files the agent changed, put back before the check
    finished_at: datetime | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == "success"

    def view(self) -> IterationView:
        return IterationView(
            number=self.number, started_at=self.started_at, finished_at=self.finished_at,
            duration_seconds=self.duration_seconds, status=self.status, exit_code=self.exit_code,
            output_excerpt=self.output, error=self.error, files_modified=list(self.files_modified),
            diff_stat=self.diff_stat, checkpoint_commit=self.checkpoint_commit, check_exit_code=self.check_exit_code,
            check_output=self.check_output, tokens=TokenCounts(prompt=self.prompt_tokens, completion=self.completion_tokens),
            transient_retries=self.transient_retries, protected_undone=list(self.protected_undone),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: int
    task_id: str
    type: str
    data: dict[str, Any]
    created_at: datetime

    def view(self) -> EventView:
        return EventView(id=self.id, task_id=self.task_id, type=self.type, data=self.data or {}, created_at=self.created_at)


@dataclass(frozen=True, slots=True)
class TaskUpdate:
    """The fields of a task to change; None leaves a field as it is."""

    status: TaskStatus | None = None
    completion_reason: str | None = None
    evidence: dict[str, Any] | None = None
    error: str | None = None
    worktree: str | None = None
    branch: str | None = None
    base_commit: str | None = None
    started_at: datetime | None = None
    approved_through: int | None = None
    stop_requested: bool | None = None

    def values(self) -> dict[str, Any]:
        """The columns to set, with statuses as their stored strings."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        if self.status is not None:
            out["status"] = self.status.value
        return out


Event = tuple[str, dict[str, Any]]  # (type, data), as the store appends it


@dataclass(frozen=True, slots=True)
class Lease:
    """A worker's claim on running a task. `epoch` is the fencing token: it grows with every claim,
    and a write made under an older one is refused (`store.LeaseLost`)."""

    task_id: str
    worker_id: str
    epoch: int


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    """What one finished task was, what it took and how it ended: what the learner learns from
    (`learning.py`). Written with the task's terminal status, in its transaction."""

    task_id: str
    status: str
    reason: str | None
    complexity: str  # rules.classify's class of the prompt, whatever chose the task's limit
    words: int
    items: int  # listed requirements in the prompt
    context_files: int  # files the request named for the agent (context files + read_only_files)
    workspace: str
    backend: str
    model: str | None
    strategy: dict[str, Any] | None
    iterations: int
    max_iterations: int
    limit_source: str
    evidence_rule: str | None  # check_command, completion_promise or diff: what completed it
    check_command: str | None
    check_passed: bool | None  # the last check's verdict; None: no check ran
    check_failure: str | None  # the last failed check's first failing line, to see the same failure across tasks
    promise: bool | None  # the reply ended with the promise; None: no promise asked for
    diff: bool  # some iteration changed files
    prompt_tokens: int
    completion_tokens: int
    seconds: float  # the iterations' time, summed
    longest_iteration_seconds: float | None
    idle_run: int  # the longest run of consecutive iterations that changed no file
    finished_at: datetime

    @property
    def solved(self) -> bool:
        return self.status == "completed"

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class ProposalRecord:
    """A change the learner proposes, with its evidence, and where a person's decisions left it."""

    id: int
    kind: str  # iteration_limit, iteration_timeout, stuck_threshold, strategy, backend or task
    subject: str  # what it is about (a class, a backend, a workspace): one open proposal per kind and subject
    summary: str
    changes: dict[str, str]  # .env keys and values an acceptance writes; {} for advice
    evidence: dict[str, Any]
    status: str  # open, accepted, rejected, rolled_back or superseded
    created_at: datetime
    updated_at: datetime
    previous: dict[str, str | None] | None = None  # the values an acceptance replaced (None: unset): what a rollback restores
    task: dict[str, Any] | None = None  # a drafted task (kind task): submitted when accepted

    def view(self, decisions: Sequence[DecisionRecord] = ()) -> ProposalView:
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return ProposalView.model_validate({**values, "decisions": [d.view() for d in decisions]})


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    proposal_id: int
    decision: str  # accepted, rejected or rolled_back
    who: str
    created_at: datetime
    detail: str | None = None

    def view(self) -> DecisionView:
        values = {name: getattr(self, name) for name in ("decision", "who", "detail", "created_at")}
        return DecisionView.model_validate(values)
