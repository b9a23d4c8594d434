"""One task's iterations: the Ralph Wiggum loop itself.

Prepare the task's tree, then again and again: give the agent the prompt, stage and checkpoint
what it changed, run the check, and ask the rules what it means, until they end the task or a
person must decide. Every decision comes from `rules`; this module only does the I/O.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from functools import partial

from aistack import agentenv
from aistack.contracts import TaskStatus
from aistack.gitremote import RemoteError
from aistack.procgroup import identify_group
from aistack.ralph_wiggum import rules, space
from aistack.ralph_wiggum.backends import Backend, IterationRequest, IterationResult
from aistack.ralph_wiggum.output import OutputStream
from aistack.ralph_wiggum.records import IterationRecord, TaskRecord, TaskUpdate, utcnow
from aistack.ralph_wiggum.rules import Action, Reason
from aistack.ralph_wiggum.store import Store
from aistack.ralph_wiggum.tasks import TaskService
from aistack.ralph_wiggum.workspace import Checkpoint, Tree

log = logging.getLogger("aistack.ralph")
OUTPUT_KEEP = 16_000  # characters of each reply kept in the database (its end)


class TaskFailed(Exception):
    """Ends a task as `failed` with this message."""


class StopRequested(Exception):
    """A person asked to stop the task (seen in the store, e.g. sent to another process)."""


class TaskRunner:
    def __init__(self, tasks: TaskService):
        self.tasks = tasks  # its configuration, store, workspace and backends are the runner's too
        self.settings, self.store, self.workspace, self.backends = tasks.settings, tasks.store, tasks.workspace, tasks.backends

    async def run(self, task_id: str) -> None:
        """Iterate until the task ends or waits for a person. Raises StopRequested or TaskFailed."""
        task = await self.tasks.get(task_id)
        if task.stop_requested:
            raise StopRequested
        if task.status not in rules.transition(Action.start).sources:  # ended or waiting meanwhile
            return
        backend = self.backends.get(task.backend)
        if backend is None:
            raise TaskFailed(f"backend {task.backend!r} is not configured here (available: {', '.join(self.backends)})")
        history = await self.store.iterations(task_id)
        attempt = await self._take_over(task, backend)
        taken = await self._take_up(task, history)
        if taken is None:
            return
        tree, task = taken
        while True:
            if task.stop_requested:  # asked for meanwhile, maybe through another process
                raise StopRequested
            number = task.iteration + 1
            if number > task.max_iterations:  # only reachable if a stored task was edited by hand
                await self.tasks.finish(task_id, Action.exhaust, Reason.max_iterations)
                return
            if rules.needs_approval(task.require_approval, number, task.approved_through):
                step = rules.transition(Action.ask_approval)
                summary = rules.approval_summary(number, history[-1] if history else None)
                await self.store.apply(task_id, TaskUpdate(status=step.target), step.sources, [("approval_needed", summary)])
                return  # the slot is free while a person decides; approval makes the task ready again
            it, outcome, task = await self._iterate(task, backend, tree, number, history, attempt)
            attempt = 1
            history.append(it)
            if outcome.decision.status.terminal:
                await self.tasks.release(task)
            if outcome.decision.status is not TaskStatus.running:
                return

    async def _take_over(self, task: TaskRecord, backend: Backend) -> int:
        """End what an earlier process, which died during the task's next iteration, left of it
        (its process groups here, its backend's run elsewhere), before the tree is put back and
        the iteration runs again. Which attempt at the iteration the coming one is."""
        if not await self.tasks.end_leftovers(task.id):
            raise TaskFailed("a process of the interrupted iteration survived SIGKILL; its changes cannot be kept apart")
        number = task.iteration + 1
        attempt = await self.store.starts(task.id, number) + 1
        if attempt > 1 and not await backend.abandon(task.id, number):  # as a group that survives SIGKILL above
            raise TaskFailed(
                f"the interrupted iteration's run by {task.backend} did not end when cancelled; its changes cannot be kept apart"
            )
        return attempt

    async def _take_up(self, task: TaskRecord, history: list[IterationRecord]) -> tuple[Tree, TaskRecord] | None:
        """The task's tree, made or put back at its last checkpoint, and the task marked running.
        None if the task changed meanwhile (stopped before it started)."""
        # where the loop had the tree: the last checkpoint, or the best one that keep_best went back to
        at = rules.position(history, None, task.loop_strategy.keep_best, task.loop_strategy.restart).commit
        tree = await self._prepare(task, at)
        step = rules.transition(Action.start)
        change = TaskUpdate(status=step.target, worktree=str(tree.path))  # a worker that took the task over has it elsewhere
        if tree.created:
            change = replace(change, branch=tree.branch, base_commit=tree.base_commit, started_at=utcnow())
        running = await self.store.apply(task.id, change, step.sources)
        if running is None:
            await self.tasks.release(replace(task, worktree=str(tree.path)))
            return None
        return tree, running

    async def _prepare(self, task: TaskRecord, last: str | None) -> Tree:
        """The workspace's `prepare`; a git remote that does not answer is a transient failure,
        retried as a backend's is."""
        t0, attempt = time.monotonic(), 0
        while True:
            try:
                return await self.workspace.prepare(task, last)
            except RemoteError as exc:
                if space.reason(exc) is not None:  # this machine's disk, not the remote: the scheduler waits for space
                    raise
                attempt += 1
                await self._back_off(task.id, attempt, t0, str(exc))

    async def _iterate(
        self, task: TaskRecord, backend: Backend, tree: Tree, number: int, history: list[IterationRecord], attempt: int
    ) -> tuple[IterationRecord, rules.Outcome, TaskRecord]:
        """One iteration, recorded; what it was, what it means, and the task after it. `attempt`
        > 1: an earlier process died during this iteration, and it runs again from the start."""
        started, t0 = utcnow(), time.monotonic()
        begun = {"iteration": number, "max_iterations": task.max_iterations, "attempt": attempt}
        await self.store.add_event(task.id, "iteration_started", begun)
        groups = _GroupRecorder(self.store, task.id, number)
        strategy = task.loop_strategy
        async with OutputStream(partial(self.store.add_event, task.id, "output"), number) as output:
            request = IterationRequest(
                task_id=task.id,
                iteration=number,
                prompt=rules.compose_prompt(task.prompt, task.check_command, history, strategy),
                worktree=tree.path,
                timeout_seconds=float(self.settings.iteration_timeout(task.backend)),
                context=task.context,
                on_group=groups.started,
                on_output=output.feed,
                sampling=rules.sampling(number, strategy.diversity),
                check_command=task.check_command,
            )
            if strategy.candidates == 1:
                done, chosen = await self._attempt(task, backend, tree, request, groups), None
            else:
                done, chosen = await self._best_of_two(task, backend, tree, request, groups)
        it = IterationRecord(
            task_id=task.id, number=number, started_at=started, duration_seconds=round(time.monotonic() - t0, 4),
            status=done.result.status, exit_code=done.result.exit_code, output=done.result.output[-OUTPUT_KEEP:],
            error=done.result.error, files_modified=done.saved.files, diff_stat=done.saved.diff_stat,
            checkpoint_commit=done.saved.commit, check_exit_code=done.check_exit, check_output=done.check_output,
            prompt_tokens=done.prompt_tokens, completion_tokens=done.completion_tokens, transient_retries=done.retries,
            protected_undone=done.protected_undone,
        )  # fmt: skip
        it = rules.with_progress(it, history[-1] if history else None, task.check_command)
        outcome = rules.outcome(it, task, history, self.settings.ralph_stuck_iterations)
        if outcome.restore is not None:
            # before the record, so whoever sees the task go on (or end) sees the tree (the branch)
            # at its best checkpoint; a resume after a crash in between puts it where the record says
            await self.workspace.restore(tree, outcome.restore)
        step = rules.transition(outcome.decision.action)
        events = (("candidates", {"iteration": number, **chosen}), *outcome.events) if chosen else outcome.events
        after = await self.store.record_iteration(it, outcome.update, events, step.sources)
        if after is None:  # the task was ended meanwhile (a stop sent to another process)
            await self.tasks.release(task)
            raise StopRequested
        return it, outcome, after

    async def _attempt(self, task: TaskRecord, backend: Backend, tree: Tree, request: IterationRequest, groups: _GroupRecorder) -> _Attempt:
        """The agent's run in `tree`, its checkpoint, and the check after it. What it changed of the
        protected paths is put back first: neither the check nor the checkpoint sees it."""
        result, retries = await self._run_with_retries(task.id, backend, request)
        undone = await self.workspace.protect(tree, task.protected_paths) if task.protected_paths else ()
        saved = await self.workspace.checkpoint(tree, f"aistack {task.id}: iteration {request.iteration}")
        if saved.push_error is not None:  # the commit stays on the local branch; the next checkpoint pushes again
            log.warning("task %s: pushing iteration %d's checkpoint failed: %s", task.id, request.iteration, saved.push_error)
            event = {"iteration": request.iteration, "commit": saved.commit, "error": saved.push_error}
            await self.store.add_event(task.id, "push_failed", event)
        check_exit, check_output = await self._check(task, tree, request.iteration, groups) if task.check_command else (None, None)
        return _Attempt(result, retries, saved, check_exit, check_output, result.tokens.prompt, result.tokens.completion, undone)

    async def _best_of_two(
        self, task: TaskRecord, backend: Backend, tree: Tree, request: IterationRequest, groups: _GroupRecorder
    ) -> tuple[_Attempt, dict]:
        """strategy.candidates 2: a second attempt at once, in a tree of its own, sampled otherwise;
        the one whose check got further is kept (the first of equals), in the task's tree. Both
        attempts' tokens count."""
        other = await self.workspace.add_candidate(tree)
        sampling = rules.candidate_sampling(request.iteration, request.sampling)
        # the live output is the first attempt's: two agents' lines interleaved would read as neither
        second = replace(request, worktree=other.path, candidate=2, sampling=sampling, on_output=None)
        try:
            async with asyncio.TaskGroup() as both:  # one that fails ends the other
                runs = [both.create_task(self._attempt(task, backend, at, req, groups)) for at, req in ((tree, request), (other, second))]
            first, alt = (run.result() for run in runs)
            kept, chosen = rules.pick_candidate([(first.check_exit, first.check_output), (alt.check_exit, alt.check_output)])
            if kept == 1 and (alt.saved.commit or first.saved.commit):  # the task's tree takes the second one's state
                await self.workspace.restore(tree, alt.saved.commit or f"{first.saved.commit}~1")
        finally:
            await self.workspace.remove_candidate(tree)
        done = alt if kept == 1 else first
        return replace(done, retries=first.retries + alt.retries, prompt_tokens=first.prompt_tokens + alt.prompt_tokens,
                       completion_tokens=first.completion_tokens + alt.completion_tokens), chosen  # fmt: skip

    async def _run_with_retries(self, task_id: str, backend: Backend, request: IterationRequest) -> tuple[IterationResult, int]:
        """Run the iteration; transient failures (service down, 503, timeout) are retried with
        backoff and do not count as iterations, until RALPH_TRANSIENT_RETRY_SECONDS is spent."""
        t0, attempt = time.monotonic(), 0
        while True:
            result = await backend.run(request)
            if not result.transient:
                return result, attempt
            attempt += 1
            await self._back_off(task_id, attempt, t0, result.error)

    async def _back_off(self, task_id: str, attempt: int, t0: float, error: str | None) -> None:
        """Wait before the next try of what failed transiently since `t0`, said in a
        `transient_retry` event; TaskFailed once RALPH_TRANSIENT_RETRY_SECONDS are spent."""
        budget = float(self.settings.ralph_transient_retry_seconds)
        delay = rules.retry_delay(attempt, time.monotonic() - t0, budget)
        if delay is None:
            raise TaskFailed(f"{error} — gave up after {budget:.0f} s of retries (RALPH_TRANSIENT_RETRY_SECONDS)")
        await self.store.add_event(task_id, "transient_retry", {"attempt": attempt, "error": error, "retry_in": delay})
        await asyncio.sleep(delay)

    async def _check(self, task: TaskRecord, tree: Tree, number: int, groups: _GroupRecorder) -> tuple[int | None, str]:
        """The check runs as the agent does: the allow-listed environment, the task's home, its jail."""
        command = task.check_command or ""
        env, jail = agentenv.for_check(self.settings, self.tasks.sandbox, task.id, number, tree.path, command)
        timeout = float(self.settings.ralph_check_timeout_seconds)
        result = await self.workspace.check(tree, command, env, timeout, jail, groups.started)
        return result.exit_code, rules.check_output(result.output, timeout if result.timed_out else None)


@dataclass(frozen=True)
class _Attempt:
    """What one attempt at an iteration came to: the agent's run, its checkpoint, the check after it."""

    result: IterationResult
    retries: int
    saved: Checkpoint
    check_exit: int | None
    check_output: str | None
    prompt_tokens: int
    completion_tokens: int
    protected_undone: tuple[str, ...] = ()


@dataclass(frozen=True)
class _GroupRecorder:
    """Records each process group one iteration starts here (agent, check) in the store, named
    so that a later process recognises it; `record_iteration` forgets them."""

    store: Store
    task_id: str
    iteration: int

    async def started(self, pgid: int) -> None:
        if (group := identify_group(pgid)) is not None:  # None: it is gone already (or no /proc here)
            await self.store.add_group(self.task_id, self.iteration, group)
