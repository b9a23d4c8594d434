"""In-process stand-ins for the loop's I/O: a scripted agent and a workspace without git.

They implement the same small protocols as the real `CommandBackend`/`AiderBackend` and
`GitWorktrees`, so the runner, the scheduler and the task service run unchanged against an
in-memory SQLite store. The real-process tests (`test_api.py`) cover the real ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aistack.config import Settings
from aistack.contracts import BackendHealth, TokenCounts
from aistack.ralph_wiggum.backends import IterationRequest, IterationResult
from aistack.ralph_wiggum.records import TaskRecord
from aistack.ralph_wiggum.runner import TaskRunner
from aistack.ralph_wiggum.scheduler import Scheduler
from aistack.ralph_wiggum.shell import OnGroup, ProcResult
from aistack.ralph_wiggum.store import Store
from aistack.ralph_wiggum.tasks import TaskService
from aistack.ralph_wiggum.workspace import Checkpoint, Tree
from aistack.sandbox import Jail, Sandbox


@dataclass
class Step:
    """What the agent does in one call: its reply, the files it writes, and the check's verdict after it."""

    reply: str = "done"
    writes: tuple[str, ...] = ()
    check_exit: int | None = 1
    status: str = "success"
    transient: bool = False
    wait: float = 0.0  # seconds the agent takes (a stop can arrive meanwhile)
    until: asyncio.Event | None = None  # or: the agent replies only once the test sets this


class ScriptedAgent:
    """A backend that plays `steps` in order (the last one repeats) and writes into the fake workspace."""

    name = "scripted"

    def __init__(self, workspace: FakeWorkspace, steps: list[Step]):
        self.workspace, self.steps = workspace, steps
        self.requests: list[IterationRequest] = []
        self.cancelled = 0
        self.abandoned: list[tuple[str, int, int]] = []  # (task, iteration, trees prepared until then)
        self.abandon_ends_the_run = True

    def start(self) -> None:
        return None

    async def run(self, request: IterationRequest) -> IterationResult:
        step = self.steps[min(len(self.requests), len(self.steps) - 1)]
        self.requests.append(request)
        try:
            await asyncio.sleep(step.wait)
            if step.until is not None:
                await step.until.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if step.transient:
            return IterationResult("error", "", "llm unreachable", transient=True)
        self.workspace.write(request.worktree, step.writes, step.check_exit)
        return IterationResult(step.status, step.reply, None if step.status == "success" else "boom",  # type: ignore[arg-type]
                               exit_code=0, tokens=TokenCounts(prompt=10, completion=2))  # fmt: skip

    async def abandon(self, task_id: str, iteration: int) -> bool:
        self.abandoned.append((task_id, iteration, len(self.workspace.prepared)))
        return self.abandon_ends_the_run

    def health(self) -> BackendHealth:
        return BackendHealth(name=self.name, available=True)

    async def close(self) -> None:
        return None


@dataclass
class FakeTree:
    pending: set[str] = field(default_factory=set)
    commits: list[str] = field(default_factory=list)
    check_exit: int | None = 1


class FakeWorkspace:
    """Trees in memory: what the agent wrote is pending until a checkpoint names it."""

    def __init__(self) -> None:
        self.trees: dict[Path, FakeTree] = {}
        self.removed: list[str] = []
        self.prepared: list[tuple[str, str | None]] = []
        self.problems: dict[str, str] = {}
        self.restored: list[tuple[str, str]] = []  # (task, commit) keep_best went back to

    def write(self, path: Path, files: tuple[str, ...], check_exit: int | None) -> None:
        tree = self.trees[path]
        tree.pending.update(files)
        tree.check_exit = check_exit

    async def problem(self, path: Path) -> str | None:
        return self.problems.get(path.name)

    async def prepare(self, task: TaskRecord, last_checkpoint: str | None) -> Tree:
        self.prepared.append((task.id, last_checkpoint))
        path = Path("/trees") / task.id
        created = task.worktree is None
        self.trees.setdefault(path, FakeTree())
        self.trees[path].pending.clear()  # a resume drops what an interrupted iteration left
        return Tree(path, f"aistack/{task.id}", task.base_commit or "base", created=created)

    async def checkpoint(self, tree: Tree, message: str) -> Checkpoint:
        state = self.trees[tree.path]
        if not state.pending:
            return Checkpoint((), None, None)
        files = tuple(sorted(state.pending))
        state.pending.clear()
        state.commits.append(f"{tree.path.name}-{len(state.commits) + 1}")
        return Checkpoint(files, f"{len(files)} files changed", state.commits[-1])

    async def check(
        self, tree: Tree, command: str, env: dict[str, str], timeout: float, jail: Jail | None = None, on_group: OnGroup | None = None
    ) -> ProcResult:
        code = self.trees[tree.path].check_exit
        return ProcResult(code, f"check said {code}", timed_out=code is None)

    async def restore(self, tree: Tree, commit: str) -> None:
        self.restored.append((tree.path.name, commit))

    async def remove(self, task: TaskRecord) -> None:
        if Path("/trees") / task.id in self.trees:  # like git: only a tree that was made is removed
            self.removed.append(task.id)

    async def diff(self, task: TaskRecord, base: str, commit: str) -> str:
        return f"diff {base}..{commit}"


@dataclass
class Loop:
    """Everything the orchestrator wires together, in process."""

    store: Store
    workspace: FakeWorkspace
    agent: ScriptedAgent
    tasks: TaskService
    runner: TaskRunner
    scheduler: Scheduler


def make_loop(tmp_path: Path, store: Store, steps: list[Step], **settings) -> Loop:
    (tmp_path / "ws" / "repo").mkdir(parents=True, exist_ok=True)
    values = {"ralph_transient_retry_seconds": 0, "ralph_max_iterations_cap": 50, "ralph_sandbox": "off", **settings}
    config = Settings(_env_file=None, aistack_data_dir=tmp_path / "data", workspace_root=tmp_path / "ws", **values)
    workspace = FakeWorkspace()
    agent = ScriptedAgent(workspace, steps)
    tasks = TaskService(config, store, workspace, {"scripted": agent}, Sandbox(config, tmp_path / ".env"))
    scheduler = Scheduler(tasks)
    return Loop(store, workspace, agent, tasks, scheduler.runner, scheduler)


async def wait_until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll an async or plain condition until it holds (the scheduler runs in the same loop)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
