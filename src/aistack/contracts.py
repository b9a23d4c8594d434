"""Wire models shared by the services and their clients: one definition per message.

Servers validate requests with these and clients parse answers with them, so a field renamed
here is renamed on both sides at once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def first_error(errors: Sequence[Any]) -> tuple[str, str]:
    """(field, message) of the first of pydantic's `errors()`, as every service says it: the
    field's dotted path without FastAPI's body/query/path/header part, and our own validators'
    words without pydantic's "Value error, " in front."""
    first = errors[0]
    field = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")) or "body"
    return field, first.get("msg", "invalid value").removeprefix("Value error, ")


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


class ErrorBody(BaseModel):
    """Every error answer of the stack's services (the OpenAPI documents each status with it)."""

    detail: str = Field(description="One line for people: what was wrong and what is allowed.")
    field: str | None = Field(default=None, description="The request field it is about, when there is one.")


# --- what a request may carry -------------------------------------------------------------------
# Refused up front, with the field named, rather than accepted and failing later: text that is not
# Unicode (a lone surrogate, which JSON's \ud800 escape makes), which no file, process or database
# takes; a NUL in what reaches a command line, an environment or a path, which the OS cannot hold;
# and sizes beyond what any use needs (everything is stored and sent again on every read).

PROMPT_MAX_CHARS = 65_536  # 64 Ki characters: far beyond any model's context window here
CONTEXT_MAX_BYTES = 65_536  # the task's `context`, as UTF-8 JSON
PATH_MAX_CHARS = 4_096  # Linux's PATH_MAX
MAX_FILES = 1_000  # files named in one request


def _unicode(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be Unicode text (it holds a lone surrogate, e.g. \\ud800)") from None
    return value


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character (\\u0000)")
    return value


Text = Annotated[str, AfterValidator(_unicode)]
OsText = Annotated[str, AfterValidator(_unicode), AfterValidator(_no_nul)]  # reaches a process or a path
PathText = Annotated[str, Field(max_length=PATH_MAX_CHARS), AfterValidator(_unicode), AfterValidator(_no_nul)]
RefText = Annotated[str, Field(max_length=255), AfterValidator(_unicode), AfterValidator(_no_nul)]  # a git branch or tag


FileList = Annotated[list[PathText], Field(max_length=MAX_FILES)]  # relative to a workspace


def _repository_pattern(value: str) -> str:
    """A path or glob inside the repository, as git matches it (`tests/**`, `test_*.py`): given
    to git as a `:(glob)` pathspec, so no magic of its own, and nothing outside the repository."""
    parts = value.split("/")
    if not value.strip() or value.startswith(("/", ":")) or ".." in parts or "\\" in value:
        raise ValueError("must be a path or glob inside the repository (e.g. tests/** or test_app.py): not absolute, "
                         "no '..', no backslash, not starting with ':'")  # fmt: skip
    return value


ProtectedPath = Annotated[PathText, AfterValidator(_repository_pattern)]


def _json_context(value: dict[str, Any]) -> dict[str, Any]:
    """Backend extras: every string in them (keys too) is OS text, and they fit CONTEXT_MAX_BYTES
    as JSON (NaN and Infinity are no JSON: a client could not read the task back)."""
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str):
            _no_nul(_unicode(item))
    try:
        size = len(json.dumps(value, ensure_ascii=False, allow_nan=False).encode())
    except ValueError:
        raise ValueError("must be JSON: NaN and Infinity are not numbers there") from None
    if size > CONTEXT_MAX_BYTES:
        raise ValueError(f"is {size} bytes of JSON; at most {CONTEXT_MAX_BYTES} bytes are allowed")
    return value


Context = Annotated[dict[str, Any], AfterValidator(_json_context)]


# --- ralph-wiggum ------------------------------------------------------------------------------


class Strategy(BaseModel):
    """How the loop tries again after an iteration that did not finish the task (docs/architecture.md,
    "How the loop retries"). Every field's default is today's behaviour; the `.env` may change them
    (RALPH_STRATEGY_*), and a task may set each one."""

    model_config = ConfigDict(extra="forbid")

    keep_best: bool = Field(default=False, description="An iteration that makes the check worse is undone; the next starts from the best.")
    feedback: Literal["tail", "shaped"] = Field(
        default="tail", description="tail: the failed check's last 2000 characters; shaped: its first failure, in the project's own frames."
    )
    diversity: bool = Field(default=False, description="Each retry samples at a higher temperature, with a seed of its own.")
    context: Literal["carried", "fresh"] = Field(
        default="carried", description="carried: the next prompt quotes a reply that got nowhere; fresh: the prompt and the check only."
    )
    candidates: Literal[1, 2] = Field(default=1, description="Attempts per iteration, each in a worktree of its own; the best is kept.")
    restart: bool = Field(
        default=False, description="A retry after a failed check starts again from the task's base files: a new attempt, not a repair."
    )


class Sampling(BaseModel):
    """How the model samples one run's replies, where the loop chooses it (a retry with diversity)."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(ge=0.0, le=2.0)
    seed: int = Field(ge=0, le=2**31 - 1)


class StrategyChoice(BaseModel):
    """A task's choice of strategy: each field left out takes the `.env` default."""

    model_config = ConfigDict(extra="forbid")

    keep_best: bool | None = None
    feedback: Literal["tail", "shaped"] | None = None
    diversity: bool | None = None
    context: Literal["carried", "fresh"] | None = None
    candidates: Literal[1, 2] | None = None
    restart: bool | None = None

    def over(self, defaults: Strategy) -> Strategy:
        return defaults.model_copy(update=self.model_dump(exclude_none=True))


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: OsText = Field(min_length=1, max_length=PROMPT_MAX_CHARS, description="What the agent should do; the same every iteration.")
    backend: OsText = Field(
        default="aider", max_length=100, description="Which agent runs the iterations (one /health lists as available)."
    )
    max_iterations: int | None = Field(default=None, description="1..RALPH_MAX_ITERATIONS_CAP; omitted = adaptive/default.")
    require_approval: bool = Field(default=False, description="Wait for a person before every iteration.")
    workspace: PathText | None = Field(
        default=None, description="Git repository, relative to WORKSPACE_ROOT or absolute inside it; omitted = the root."
    )
    repository: PathText | None = Field(
        default=None,
        description="A git remote to work on instead of a workspace (https, ssh, git, or file:// inside WORKSPACE_ROOT or "
                    "RALPH_REMOTE_FILE_ROOTS); no credentials in it. The branch aistack/<task> is pushed there.",
    )  # fmt: skip
    ref: RefText | None = Field(default=None, description="Branch or tag of `repository` to start from; omitted = its HEAD.")
    check_command: OsText | None = Field(default=None, max_length=10_000, description="Shell command; exit 0 = done.")
    completion_promise: Text | None = Field(
        default=None, max_length=1_000, description="Done when the reply ends with <promise>TEXT</promise>."
    )
    context: Context = Field(default_factory=dict, description="Backend extras, e.g. files and read_only_files for aider.")
    strategy: StrategyChoice = Field(default_factory=StrategyChoice, description="How the loop retries; unset fields: the .env's.")
    protected_paths: list[ProtectedPath] = Field(
        default_factory=list, max_length=100,
        description="Paths or globs the agent must not change, e.g. the check's tests: an iteration's changes to them are "
                    "undone before the check runs, and the next prompt says so.",
    )  # fmt: skip


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
    workspace: str = Field(description="The repository's path on the orchestrator's host, or the URL of `repository`.")
    repository: str | None = Field(default=None, description="The git remote the task works on, if it names one.")
    worktree: str | None
    branch: str | None
    base_commit: str | None
    iteration: int
    max_iterations: int
    limit_source: str = Field(description="request, backend, learned (from similar past tasks), adaptive or default")
    complexity: Complexity | None
    complexity_reason: str | None
    require_approval: bool
    check_command: str | None
    completion_promise: str | None
    context: dict[str, Any]
    strategy: Strategy
    protected_paths: list[str] = Field(default_factory=list, description="What the agent may not change (undone each iteration).")
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
    status: Literal["success", "no_progress", "error"] | None = Field(
        description="How the agent's run ended. no_progress: it changed no file, or replied as before and the check got no further."
    )
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
    protected_undone: list[str] = Field(default_factory=list, description="Protected files it changed; their changes were undone.")


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


class HealthSummary(BaseModel):
    """/health to a caller without the API key (where one is set): what a readiness probe needs,
    none of the details (commands, paths, URLs) that the full answer carries."""

    status: Literal["healthy", "degraded"]


class Isolation(BaseModel):
    """How the service confines the agents and checks it starts (see `aistack.sandbox`)."""

    sandbox: Literal["bwrap", "none"]
    reason: str = Field(description="What the sandbox hides, or why there is none.")
    network_isolated: bool = Field(description="false: agents reach the network as the service does.")
    limits: dict[str, int] = Field(description="Per-process resource limits; 0 = none.")


class RalphHealth(BaseModel):
    status: Literal["healthy", "degraded"]
    version: str
    loop_enabled: bool
    active_tasks: int
    backends: list[BackendHealth]
    isolation: Isolation | None = Field(default=None, description="Always sent; optional for clients of older services.")
    uptime_seconds: float


class RateRow(BaseModel):
    total: int
    completed: int
    success_rate: float | None
    iterations_per_solved: float | None = Field(default=None, description="Mean iterations of the completed tasks.")
    tokens_per_solved: float | None = Field(default=None, description="Mean tokens (prompt + completion) of the completed tasks.")


class Stats(BaseModel):
    by_status: dict[str, int]
    total: int
    mean_iterations: float | None
    per_backend: dict[str, RateRow]
    per_complexity: dict[str, RateRow]


class DayRate(RateRow):
    day: date = Field(description="The day (UTC) the tasks finished on.")
    group: str = Field(description="The backend, or the prompt's class (`unclassified` when it had none).")


class DailyStats(BaseModel):
    """/stats/daily: the finished tasks' outcomes per day, per backend and per prompt class, oldest day first."""

    per_backend: list[DayRate]
    per_complexity: list[DayRate]


class ProposalDecision(BaseModel):
    """Who decides on a learned proposal, and why (both kept with the decision)."""

    model_config = ConfigDict(extra="forbid")

    who: Text = Field(default="api", min_length=1, max_length=200)
    detail: Text | None = Field(default=None, max_length=2000)


class DecisionView(BaseModel):
    decision: Literal["accepted", "rejected", "rolled_back"]
    who: str
    detail: str | None
    created_at: datetime


class ProposalView(BaseModel):
    """A change the learner proposes from the tasks' outcomes (docs/architecture.md, "Learning")."""

    id: int
    kind: Literal["iteration_limit", "iteration_timeout", "stuck_threshold", "strategy", "backend", "task"]
    subject: str = Field(description="What it is about: a class, a backend, a workspace's check.")
    summary: str
    changes: dict[str, str] = Field(description=".env keys and the values an acceptance writes and applies; {} for advice.")
    previous: dict[str, str | None] | None = Field(description="What an acceptance replaced (null: unset): a rollback restores it.")
    task: dict[str, Any] | None = Field(description="kind task: the drafted task, submitted when accepted.")
    evidence: dict[str, Any] = Field(description="Counts, percentiles and the tasks it rests on.")
    status: Literal["open", "accepted", "rejected", "rolled_back", "superseded"]
    created_at: datetime
    updated_at: datetime
    decisions: list[DecisionView] = Field(default_factory=list)


MOST_ITERATIONS = 10_000  # the highest iteration limit any setting accepts
MAX_INT = 2**62  # the highest number a request may give: inside what every database integer column holds


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
    # The prompt goes to aider in a file: it is the task's prompt with the last check's output
    # appended, so it may be longer than a task's, and may hold a NUL that the check printed.
    prompt: Text = Field(min_length=1, max_length=200_000)
    workspace: PathText = Field(min_length=1, description="Directory inside the allowed roots (a git work tree).")
    files: FileList = Field(default_factory=list, description="Files aider may edit, relative to the workspace.")
    read_only_files: FileList = Field(default_factory=list, description="Files aider may read only.")
    timeout_seconds: int | None = Field(default=None, ge=1, le=86_400)
    iteration: int | None = Field(default=None, ge=0, le=MAX_INT)
    context: Context = Field(default_factory=dict)
    run_id: OsText | None = Field(
        default=None, max_length=200, description="Caller's id for this run, so POST /api/runs/{run_id}/cancel can end it."
    )
    task_id: Text | None = Field(
        default=None,
        max_length=200,
        description="The task this run is an iteration of: its runs go to one LLM server (else the workspace's do).",
    )
    sampling: Sampling | None = Field(default=None, description="Temperature and seed for this run; omitted = the model's own settings.")


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


class LlmEndpoint(BaseModel):
    """One LLM server runs are routed to, as last polled (`aistack.llm_routing`)."""

    url: str
    healthy: bool
    detail: str | None = Field(description="Why it is not healthy; null when it is.")
    busy: int | None = Field(description="Requests it is working on or holding; null: it does not say (no /slots, no /metrics).")
    slots: int | None = Field(description="Requests it serves at once, where it says (llama-server's /slots).")
    routed: int = Field(description="Runs of this process on it now.")


NDJSON = "application/x-ndjson"


class ExecuteProgress(BaseModel):
    """One line of `POST /api/execute`'s answer as NDJSON (asked for with `Accept:
    application/x-ndjson`): a piece of aider's output with the time the wrapper read it, as it
    comes; the last line carries the result instead."""

    output: str | None = None
    at: datetime | None = None
    result: ExecuteResult | None = None


class WrapperHealth(BaseModel):
    status: Literal["healthy", "degraded"]
    version: str
    aider_available: bool
    workspace: str
    llama_cpp_url: str = Field(description="The first of the LLM servers (LLAMA_CPP_URLS, else llama-cpp's).")
    llm_reachable: bool = Field(description="At least one LLM server is healthy.")
    llm_endpoints: list[LlmEndpoint] = Field(default_factory=list, description="Every LLM server; empty from older services.")
    isolation: Isolation | None = Field(default=None, description="Always sent; optional for clients of older services.")
    uptime_seconds: float
