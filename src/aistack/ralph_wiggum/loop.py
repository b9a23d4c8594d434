"""The Ralph Wiggum loop: run an iteration, ask the rules what it means, store it, go again.

`LoopEngine` schedules tasks (FIFO, at most RALPH_MAX_CONCURRENT_TASKS at once) and drives each
one in its own asyncio task. All decisions come from `rules`; this module only does the I/O.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

from aistack.config import Settings
from aistack.contracts import TaskStatus
from aistack.ralph_wiggum import rules, worktrees
from aistack.ralph_wiggum.backends import Backend, IterationRequest, IterationResult
from aistack.ralph_wiggum.proc import run_shell
from aistack.ralph_wiggum.store import Iteration, Store, Task, utcnow

log = logging.getLogger("aistack.ralph")

OUTPUT_KEEP = 16_000  # characters of each reply kept in the database (its end)
IDLE_POLL_SECONDS = 1.0


class TaskFailed(Exception):
    """Ends a task as `failed` with this message."""


def limits_from(settings: Settings) -> rules.Limits:
    return rules.Limits(
        simple=settings.ralph_max_iterations_simple,
        default=settings.ralph_max_iterations_default,
        complex=settings.ralph_max_iterations_complex,
        adaptive=settings.ralph_adaptive_iterations,
        cap=settings.ralph_max_iterations_cap,
    )


def facts_of(it: Iteration) -> rules.IterationFacts:
    return rules.IterationFacts(
        number=it.number,
        succeeded=it.status == "success",
        output=it.output,
        files_modified=tuple(it.files_modified or ()),
        diff_stat=it.diff_stat,
        check_exit_code=it.check_exit_code,
        check_output=it.check_output,
    )


class LoopEngine:
    def __init__(self, settings: Settings, store: Store, backends: dict[str, Backend]):
        self.settings = settings
        self.store = store
        self.backends = backends
        self.limits = limits_from(settings)
        self._active: dict[str, asyncio.Task] = {}
        self._user_stops: set[str] = set()
        self._wake = asyncio.Event()
        self._scheduler: asyncio.Task | None = None

    # --- scheduling ----------------------------------------------------------------------------

    @property
    def active_count(self) -> int:
        return len(self._active)

    def start(self) -> None:
        self._scheduler = asyncio.get_running_loop().create_task(self._schedule())

    def wake(self) -> None:
        self._wake.set()

    async def shutdown(self) -> None:
        """Stop scheduling; interrupted tasks stay `running` and resume on the next start."""
        if self._scheduler:
            self._scheduler.cancel()
        drives = list(self._active.values())
        for drive in drives:
            drive.cancel()
        await asyncio.gather(*drives, return_exceptions=True)

    async def _schedule(self) -> None:
        while True:
            try:
                free = self.settings.ralph_max_concurrent_tasks - len(self._active)
                if self.settings.ralph_loop_enabled and free > 0:
                    ready = await asyncio.to_thread(self.store.ready_tasks, set(self._active), free)
                    for task in ready:
                        drive = asyncio.get_running_loop().create_task(self._drive(task.id))
                        self._active[task.id] = drive
                        drive.add_done_callback(lambda _d, tid=task.id: self._finished(tid))
            except Exception:  # keep scheduling whatever one pass hit (e.g. a locked database)
                log.exception("scheduler pass failed")
            try:
                await asyncio.wait_for(self._wake.wait(), IDLE_POLL_SECONDS)
            except TimeoutError:
                pass
            self._wake.clear()

    def _finished(self, task_id: str) -> None:
        self._active.pop(task_id, None)
        self._user_stops.discard(task_id)
        self.wake()

    def stop(self, task_id: str) -> bool:
        """End a running task's current iteration now (its process group included)."""
        drive = self._active.get(task_id)
        if drive is None:
            return False
        self._user_stops.add(task_id)
        drive.cancel()
        return True

    # --- one task ------------------------------------------------------------------------------

    async def _drive(self, task_id: str) -> None:
        try:
            await self._run_task(task_id)
        except asyncio.CancelledError:
            if task_id in self._user_stops:
                await asyncio.to_thread(self._end, task_id, TaskStatus.stopped, "stopped by user", None)
            # else: the service is shutting down; the task stays `running` and resumes later
        except TaskFailed as exc:
            await asyncio.to_thread(self._end, task_id, TaskStatus.failed, "error", str(exc))
        except Exception as exc:
            log.exception("task %s crashed", task_id)
            await asyncio.to_thread(self._end, task_id, TaskStatus.failed, "error", f"internal error: {exc}")

    def _end(self, task_id: str, status: TaskStatus, reason: str, error: str | None) -> None:
        task = self.store.transition(
            task_id,
            {"queued", "running", "awaiting_approval"},
            status=status.value,
            completion_reason=reason,
            error=error,
        )
        if task is not None:
            self._remove_worktree(task)

    def _remove_worktree(self, task: Task) -> None:
        if task.worktree:
            worktrees.remove(Path(task.workspace), Path(task.worktree))

    async def _run_task(self, task_id: str) -> None:
        task = await asyncio.to_thread(self.store.get, task_id)
        backend = self.backends.get(task.backend)
        if backend is None:
            raise TaskFailed(f"backend {task.backend!r} is not configured here (available: {', '.join(self.backends)})")
        done = await asyncio.to_thread(self.store.iterations, task_id)
        worktree = await asyncio.to_thread(self._prepare_worktree, task, done)
        history = [facts_of(it) for it in done]

        while True:
            task = await asyncio.to_thread(self.store.get, task_id)
            if task.stop_requested:
                self._user_stops.add(task_id)
                raise asyncio.CancelledError
            number = task.iteration + 1
            if number > task.max_iterations:  # only reachable if a stored task was edited by hand
                await asyncio.to_thread(self._end, task_id, TaskStatus.exhausted, "max_iterations", None)
                return
            if rules.needs_approval(task.require_approval, number, task.approved_through):
                await asyncio.to_thread(self._await_approval, task, number, history[-1] if history else None)
                return  # the slot is free while a person decides; approval makes the task ready again
            facts, decision = await self._iterate(task, backend, worktree, number, history)
            history.append(facts)
            if decision.status.terminal:
                await asyncio.to_thread(self._remove_worktree, task)
                return
            if decision.status is TaskStatus.awaiting_approval:
                return

    def _prepare_worktree(self, task: Task, done: list[Iteration]) -> Path:
        """Create the task's worktree on first run; on a resume, put it back at its last checkpoint."""
        workspace = Path(task.workspace)
        worktree = self.settings.worktrees_dir / task.id
        if task.worktree is None:
            base = worktrees.create(workspace, worktree, task.id)
            self.store.transition(
                task.id,
                {"queued", "running"},
                status=TaskStatus.running.value,
                worktree=str(worktree),
                branch=worktrees.branch_name(task.id),
                base_commit=base,
                started_at=utcnow(),
            )
            return worktree
        last_commit = next((it.checkpoint_commit for it in reversed(done) if it.checkpoint_commit), task.base_commit)
        if worktree.is_dir():
            worktrees.reset_to(worktree, last_commit)
        else:
            worktrees.create(workspace, worktree, task.id, at=last_commit)
        if task.status == TaskStatus.queued.value:
            self.store.transition(task.id, {"queued"}, status=TaskStatus.running.value)
        return worktree

    def _await_approval(self, task: Task, number: int, last: rules.IterationFacts | None) -> None:
        summary = {"iteration": number}
        if last is not None:
            summary.update(
                last_iteration=last.number,
                files_modified=list(last.files_modified),
                diff_stat=last.diff_stat,
                check_exit_code=last.check_exit_code,
                output_excerpt=rules.excerpt(last.output, 1000),
            )
        self.store.transition(
            task.id, {"running", "queued"}, [("approval_needed", summary)], status=TaskStatus.awaiting_approval.value
        )

    async def _iterate(
        self, task: Task, backend: Backend, worktree: Path, number: int, history: list[rules.IterationFacts]
    ) -> tuple[rules.IterationFacts, rules.Decision]:
        started, t0 = utcnow(), time.monotonic()
        await asyncio.to_thread(
            self.store.add_event, task.id, "iteration_started", {"iteration": number, "max_iterations": task.max_iterations}
        )
        request = IterationRequest(
            task_id=task.id,
            iteration=number,
            prompt=rules.compose_prompt(task.prompt, task.check_command, history[-1] if history else None),
            worktree=worktree,
            timeout_seconds=float(self.settings.ralph_iteration_timeout_seconds),
            context=task.context or {},
        )
        result, retries = await self._run_with_retries(task.id, backend, request)

        changes = await asyncio.to_thread(worktrees.stage_changes, worktree)
        commit = None
        if changes.files:
            commit = await asyncio.to_thread(worktrees.checkpoint, worktree, f"aistack {task.id}: iteration {number}")
        check_exit, check_output = None, None
        if task.check_command:
            check_exit, check_output = await self._check(task, worktree, number)

        output = result.output[-OUTPUT_KEEP:]
        facts = rules.IterationFacts(
            number=number,
            succeeded=result.status == "success",
            output=output,
            files_modified=changes.files,
            diff_stat=changes.diff_stat,
            check_exit_code=check_exit,
            check_output=check_output,
        )
        evidence = rules.evidence_for(facts, task.check_command, task.completion_promise)
        decision = rules.after_iteration(
            facts, evidence, [*history, facts], task.max_iterations, self.settings.ralph_stuck_iterations, task.require_approval
        )
        duration = time.monotonic() - t0
        row = dict(
            number=number,
            started_at=started,
            duration_seconds=round(duration, 4),
            status=result.status,
            exit_code=result.exit_code,
            output=output,
            error=result.error,
            files_modified=list(changes.files),
            diff_stat=changes.diff_stat,
            checkpoint_commit=commit,
            check_exit_code=check_exit,
            check_output=check_output,
            prompt_tokens=result.tokens.prompt,
            completion_tokens=result.tokens.completion,
            transient_retries=retries,
        )
        task_fields: dict = {}
        if decision.status.value != task.status:
            task_fields["status"] = decision.status.value
        if decision.status.terminal:
            task_fields["completion_reason"] = decision.reason
            if evidence is not None:
                task_fields["evidence"] = evidence.model_dump()
            if decision.status is TaskStatus.failed and decision.reason == "stuck":
                task_fields["error"] = (
                    f"stuck: {self.settings.ralph_stuck_iterations} iterations in a row changed no file and replied the same"
                )
        events = [
            (
                "iteration_finished",
                {
                    "iteration": number,
                    "status": result.status,
                    "error": result.error,
                    "files_modified": list(changes.files),
                    "diff_stat": changes.diff_stat,
                    "checkpoint_commit": commit,
                    "duration_seconds": round(duration, 3),
                    "tokens": result.tokens.model_dump(),
                },
            )
        ]
        if decision.status is TaskStatus.awaiting_approval:
            events.append(("approval_needed", {"iteration": number + 1, "last_iteration": number}))
        await asyncio.to_thread(self.store.record_iteration, task.id, row, task_fields, events)
        return facts, decision

    async def _run_with_retries(self, task_id: str, backend: Backend, request: IterationRequest) -> tuple[IterationResult, int]:
        """Run the iteration; transient failures (service down, 503, timeout) are retried with
        backoff and do not count as iterations, until RALPH_TRANSIENT_RETRY_SECONDS is spent."""
        budget = float(self.settings.ralph_transient_retry_seconds)
        t0, attempt = time.monotonic(), 0
        while True:
            result = await backend.run(request)
            if not result.transient:
                return result, attempt
            attempt += 1
            delay = rules.retry_delay(attempt, time.monotonic() - t0, budget)
            if delay is None:
                raise TaskFailed(f"{result.error} — gave up after {budget:.0f} s of retries (RALPH_TRANSIENT_RETRY_SECONDS)")
            await asyncio.to_thread(
                self.store.add_event, task_id, "transient_retry", {"attempt": attempt, "error": result.error, "retry_in": delay}
            )
            await asyncio.sleep(delay)

    async def _check(self, task: Task, worktree: Path, number: int) -> tuple[int | None, str]:
        env = {**os.environ, "AISTACK_TASK_ID": task.id, "AISTACK_ITERATION": str(number)}
        timeout = float(self.settings.ralph_check_timeout_seconds)
        result = await run_shell(task.check_command, worktree, env=env, timeout=timeout)
        output = rules.excerpt(result.output)
        if result.timed_out:
            output = f"{output}\n[check timed out after {timeout:.0f} s]".strip()
        # what the check wrote (caches, build output) must not count as the agent's next change
        await asyncio.to_thread(worktrees.restore, worktree)
        await asyncio.to_thread(
            self.store.add_event, task.id, "check", {"iteration": number, "exit_code": result.exit_code, "output": rules.excerpt(output, 1000)}
        )
        return result.exit_code, output
