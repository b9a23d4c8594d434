"""Wire models shared by the services and their clients: one definition per message.

Servers validate requests with these and clients parse answers with them, so a field renamed
here is renamed on both sides at once.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class TaskStatus(str, Enum):
    queued = "queued"
    running = "running"
    awaiting_approval = "awaiting_approval"
    completed = "completed"
    exhausted = "exhausted"
    failed = "failed"
    stopped = "stopped"
    rejected = "rejected"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({TaskStatus.completed, TaskStatus.exhausted, TaskStatus.failed, TaskStatus.stopped, TaskStatus.rejected})


class Complexity(str, Enum):
    simple = "simple"
    default = "default"
    complex = "complex"


class TokenCounts(BaseModel):
    prompt: int = 0
    completion: int = 0


# --- ralph-wiggum ------------------------------------------------------------------------------


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=200_000, description="What the agent should do; the same every iteration.")
    backend: str = Field(default="aider", description="Which agent runs the iterations.")
    max_iterations: int | None = Field(default=None, description="1..RALPH_MAX_ITERATIONS_CAP; omitted = adaptive/default.")
    require_approval: bool = Field(default=False, description="Wait for a person before every iteration.")
    workspace: str | None = Field(
        default=None, description="Git repository, relative to WORKSPACE_ROOT or absolute inside it; omitted = the root."
    )
    check_command: str | None = Field(default=None, max_length=10_000, description="Shell command; exit 0 = done.")
    completion_promise: str | None = Field(
        default=None, max_length=1_000, description="Done when the reply ends with <promise>TEXT</promise>."
    )
    context: dict[str, Any] = Field(default_factory=dict, description="Backend extras, e.g. files and read_only_files for aider.")


class TaskAccepted(BaseModel):
    task_id: str
    status: TaskStatus
    message: str


class Evidence(BaseModel):
    """Why a task counts as completed: which rule fired and what it saw."""

    rule: Literal["check_command", "completion_promise", "diff"]
    iteration: int
    detail: str
    check_exit_code: int | None = None
    check_output: str | None = None
    promise_line: str | None = None
    diff_stat: str | None = None
    files_modified: list[str] = Field(default_factory=list)


class TaskView(BaseModel):
    id: str
    prompt: str
    status: TaskStatus
    backend: str
    workspace: str
    worktree: str | None
    branch: str | None
    base_commit: str | None
    iteration: int
    max_iterations: int
    limit_source: str = Field(description="request, adaptive or default")
    complexity: Complexity | None
    complexity_reason: str | None
    require_approval: bool
    check_command: str | None
    completion_promise: str | None
    context: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    completion_reason: str | None
    evidence: Evidence | None
    error: str | None
    tokens: TokenCounts


class TaskPage(BaseModel):
    items: list[TaskView]
    total: int
    limit: int
    offset: int


class IterationView(BaseModel):
    number: int
    started_at: datetime
    finished_at: datetime | None
    duration_seconds: float | None
    status: Literal["success", "error"] | None
    exit_code: int | None
    output_excerpt: str
    error: str | None
    files_modified: list[str]
    diff_stat: str | None
    checkpoint_commit: str | None
    check_exit_code: int | None
    check_output: str | None
    tokens: TokenCounts
    transient_retries: int = 0


class EventView(BaseModel):
    """One thing that happened to a task. `iteration_started` carries `iteration`,
    `max_iterations` and `attempt`: 2 or more when the iteration runs again from its start
    because the orchestrator died during it (nothing of the earlier attempt is kept)."""

    id: int
    task_id: str
    type: str
    data: dict[str, Any]
    created_at: datetime


class ApprovalDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approved: bool


class BackendHealth(BaseModel):
    name: str
    available: bool = Field(description="Configured and installed.")
    reachable: bool | None = Field(default=None, description="Its service answers (None: it has no service).")
    url: str | None = None
    detail: str | None = None


class RalphHealth(BaseModel):
    status: Literal["healthy", "degraded"]
    version: str
    loop_enabled: bool
    active_tasks: int
    backends: list[BackendHealth]
    uptime_seconds: float


class RateRow(BaseModel):
    total: int
    completed: int
    success_rate: float | None


class Stats(BaseModel):
    by_status: dict[str, int]
    total: int
    mean_iterations: float | None
    per_backend: dict[str, RateRow]
    per_complexity: dict[str, RateRow]


MOST_ITERATIONS = 10_000  # the highest iteration limit any setting accepts


class IterationLimits(BaseModel):
    """The loop's limits that may change while the orchestrator runs: the one model of them
    (`Settings.iteration_limits()`, `/config/limits`, the dashboard's Iteration controls)."""

    model_config = ConfigDict(extra="forbid")

    ralph_max_iterations_simple: int = Field(ge=1, le=MOST_ITERATIONS)
    ralph_max_iterations_default: int = Field(ge=1, le=MOST_ITERATIONS)
    ralph_max_iterations_complex: int = Field(ge=1, le=MOST_ITERATIONS)
    ralph_adaptive_iterations: bool
    ralph_max_iterations_cap: int = Field(ge=1, le=MOST_ITERATIONS)


# --- aider-wrapper -----------------------------------------------------------------------------


class ExecuteRequest(BaseModel):
    prompt: str = Field(min_length=1, max_length=200_000)
    workspace: str = Field(min_length=1, description="Directory inside the allowed roots (a git work tree).")
    files: list[str] = Field(default_factory=list, description="Files aider may edit, relative to the workspace.")
    read_only_files: list[str] = Field(default_factory=list, description="Files aider may read only.")
    timeout_seconds: int | None = Field(default=None, ge=1, le=86_400)
    iteration: int | None = Field(default=None, ge=0)
    context: dict[str, Any] = Field(default_factory=dict)
    run_id: str | None = Field(
        default=None, max_length=200, description="Caller's id for this run, so POST /api/runs/{run_id}/cancel can end it."
    )


class ExecuteResult(BaseModel):
    # The first five fields are the contract the stack has always used: keep them exactly.
    status: Literal["success", "error"]
    output: str
    error: str | None
    files_modified: list[str]
    duration_seconds: float
    exit_code: int | None
    completed: bool = Field(description="The agent ran to its end (not timed out or cancelled).")
    transient: bool = Field(description="The failure was the LLM being unreachable/busy; retrying may succeed.")
    tokens: TokenCounts


class WrapperHealth(BaseModel):
    status: Literal["healthy", "degraded"]
    version: str
    aider_available: bool
    workspace: str
    llama_cpp_url: str
    llm_reachable: bool
    uptime_seconds: float
