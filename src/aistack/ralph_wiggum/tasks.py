"""What is done to a task from outside its loop, and how every task ends.

accept / stop / approve / reject / finish: each is one transition of the state machine
(`rules.transition`, applied by the store as a compare-and-set) plus the clean-up that goes with
it. `api.py` only parses a request, calls one of these and answers; errors come back as
`TaskError`s that carry their HTTP status and the field they are about.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from pydantic import TypeAdapter, ValidationError

from aistack import agentenv
from aistack.config import Settings
from aistack.contracts import FileList, TaskCreate, TaskStatus, first_error
from aistack.gitremote import RemoteRefused
from aistack.paths import PathNotAllowed, confine
from aistack.procgroup import end_orphaned_group
from aistack.ralph_wiggum import rules
from aistack.ralph_wiggum.backends import Backend, refusal
from aistack.ralph_wiggum.records import NewTask, TaskRecord, TaskUpdate
from aistack.ralph_wiggum.rules import Action, Reason
from aistack.ralph_wiggum.store import Store
from aistack.ralph_wiggum.workspace import Workspace
from aistack.sandbox import Sandbox

_FILE_LIST = TypeAdapter(FileList)

log = logging.getLogger("aistack.ralph")


class TaskError(Exception):
    """A request about a task that cannot be done; `status` is its HTTP status."""

    status = 409

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class TaskNotFound(TaskError):
    status = 404


class TaskInvalid(TaskError):
    status = 422


class Driver(Protocol):
    """What the task service asks of whatever drives tasks (the scheduler)."""

    def wake(self) -> None:
        """Look for ready tasks now."""
        ...

    def interrupt(self, task_id: str) -> bool:
        """End the task's running iteration now (its driver records the stop); False if none runs here."""
        ...


class _Idle:
    def wake(self) -> None:
        return None

    def interrupt(self, task_id: str) -> bool:
        return False


class TaskService:
    def __init__(self, settings: Settings, store: Store, workspace: Workspace, backends: Mapping[str, Backend], sandbox: Sandbox):
        self.settings = settings
        self.store = store
        self.workspace = workspace
        self.backends = backends
        self.sandbox = sandbox  # where agents and checks run
        self.driver: Driver = _Idle()  # the scheduler, once it exists
        self.past: Sequence[rules.PastTask] = ()  # the finished tasks the learned limits read (the learner keeps it)

    async def get(self, task_id: str) -> TaskRecord:
        task = await self.store.get(task_id)
        if task is None:
            raise TaskNotFound(f"no task with id {task_id!r}", "task_id")
        return task

    async def accept(self, body: TaskCreate) -> TaskRecord:
        """Validate a submission against the configuration and the file system, then queue it."""
        if problem := refusal(self.backends, body.backend):
            raise TaskInvalid(problem, "backend")
        limits = self.settings.iteration_limits()
        if problem := rules.limit_error(body.max_iterations, limits.ralph_max_iterations_cap):
            raise TaskInvalid(problem, "max_iterations")
        for key in ("files", "read_only_files"):  # what the aider backend sends the wrapper: held to its rules now
            try:
                _FILE_LIST.validate_python(body.context.get(key, []))
            except ValidationError as exc:
                _, problem = first_error(exc.errors())
                raise TaskInvalid(f"context.{key} must be a list of file paths: {problem}", f"context.{key}") from None
        strategy = body.strategy.over(self.settings.strategy())
        workspace, base_commit = await self._where(body)  # last: a remote is asked over the network
        backend_limit, learned = self.settings.backend_max_iterations(body.backend), None
        if body.max_iterations is None and backend_limit is None:  # only then can a learned limit apply: not read for nothing
            history = rules.History(self.past, self.settings.ralph_learned_limits_after, self.settings.ralph_learn_min_outcomes)
            learned = rules.learned_limit(body.prompt, body.backend, strategy, history)
        choice = rules.choose_limit(body.max_iterations, body.prompt, limits, backend_limit, learned)
        task = await self.store.add_task(NewTask(
            id=uuid.uuid4().hex[:12],
            prompt=body.prompt,
            backend=body.backend,
            workspace=workspace,
            base_commit=base_commit,
            max_iterations=choice.max_iterations,
            limit_source=choice.source,
            complexity=choice.complexity.value if choice.complexity else None,
            complexity_reason=choice.reason,
            require_approval=body.require_approval,
            check_command=(body.check_command or "").strip() or None,
            completion_promise=(body.completion_promise or "").strip() or None,
            context=body.context,
            strategy=strategy.model_dump(),
            protected_paths=tuple(dict.fromkeys(body.protected_paths)),  # each once, in the order given
        ))  # fmt: skip
        self.driver.wake()
        return task

    async def stop(self, task_id: str) -> TaskRecord:
        """Stop a task: a running iteration is ended at once (its whole process group)."""
        task = await self.get(task_id)
        if task.status.terminal:
            raise TaskError(f"task {task_id} already ended as {task.status.value}")
        await self.store.apply(task_id, TaskUpdate(stop_requested=True))  # seen by the worker that runs it, in any process
        if not self.driver.interrupt(task_id) and not await self.store.leased(task_id):  # nobody runs it: it ends now
            await self.finish(task_id, Action.stop, Reason.stopped)
        return task

    async def decide(self, task_id: str, approved: bool) -> TaskRecord:
        """A person's answer to `awaiting_approval`: the next iteration runs, or the task is rejected."""
        task = await self.get(task_id)
        if task.status is not TaskStatus.awaiting_approval:
            raise TaskError(f"task {task_id} is {task.status.value}, not awaiting approval")
        if approved:
            step = rules.transition(Action.approve)
            changed = await self.store.apply(task_id, TaskUpdate(status=step.target, approved_through=task.iteration + 1), step.sources)
            self.driver.wake()
        else:
            changed = await self.finish(task_id, Action.reject, Reason.rejected)
        if changed is None:
            raise TaskError(f"task {task_id} changed status meanwhile; try again")
        return changed

    async def finish(self, task_id: str, action: Action, reason: Reason, error: str | None = None) -> TaskRecord | None:
        """End a task (stop, reject, fail, exhaust) unless it ended already; then remove its tree."""
        step = rules.transition(action)
        task = await self.store.apply(task_id, TaskUpdate(status=step.target, completion_reason=reason.value, error=error), step.sources)
        if task is not None:
            await self.release(task)
        return task

    async def release(self, task: TaskRecord) -> None:
        """What an ended task gives back: its tree and its agent's files (the branch and its
        checkpoints stay), and anything an interrupted iteration left running."""
        await self.end_leftovers(task.id)
        await self.workspace.remove(task)
        await asyncio.to_thread(agentenv.TaskFiles.of(self.settings, task.id).remove)

    async def end_leftovers(self, task_id: str) -> bool:
        """End what still runs of the process groups recorded for the task's unfinished
        iteration: after a stop, nothing; after a crash that took the warden along, what the
        agent or check had started. False if some of it still runs after SIGKILL."""
        ended = True
        for group in await self.store.groups(task_id):
            try:
                found = await end_orphaned_group(group)
            except TimeoutError:
                log.warning("task %s: process group %d still runs after SIGKILL", task_id, group.pgid)
                ended = False
                continue
            if found:
                log.info("task %s: killed process group %d (%d processes), left by an interrupted iteration", task_id, group.pgid, found)
            await self.store.remove_group(task_id, group)
        return ended

    async def diff(self, task_id: str, iteration: int | None) -> tuple[str | None, str | None, str]:
        """(base, commit, unified diff) of one iteration's checkpoint, or of the whole task so far."""
        task = await self.get(task_id)
        commits = await self.store.checkpoints(task_id)
        if iteration is not None:
            if iteration not in commits:
                raise TaskNotFound(f"task {task_id} has no iteration {iteration}", "iteration")
            commit = commits[iteration]
            earlier = [c for n, c in commits.items() if n < iteration and c]
            base = earlier[-1] if earlier else task.base_commit
        else:
            done = [c for c in commits.values() if c]
            commit, base = (done[-1] if done else None), task.base_commit
        text = await self.workspace.diff(task, base, commit) if commit and base else ""
        return base, commit, text

    async def _where(self, body: TaskCreate) -> tuple[str, str | None]:
        """Where the task works: a repository on this host (its path), or a git remote (its URL,
        and the commit its ref names now)."""
        if body.repository is None:
            if body.ref is not None:
                raise TaskInvalid("ref names a branch or tag of repository; give repository too", "ref")
            return str(await self._workspace_path(body.workspace)), None
        if body.workspace is not None:
            raise TaskInvalid("give workspace (a repository on this host) or repository (a git remote), not both", "repository")
        try:
            return body.repository, await self.workspace.resolve(body.repository, body.ref)
        except RemoteRefused as exc:
            raise TaskInvalid(str(exc), exc.field) from None

    async def _workspace_path(self, requested: str | None) -> Path:
        try:
            path = confine(requested or ".", [self.settings.workspace_root])
        except PathNotAllowed as exc:
            raise TaskInvalid(f"workspace must lie inside WORKSPACE_ROOT: {exc}", "workspace") from None
        if problem := await self.workspace.problem(path):
            raise TaskInvalid(problem, "workspace")
        return path
