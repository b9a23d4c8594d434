"""Which tasks run: FIFO, at most RALPH_MAX_CONCURRENT_TASKS at once, each driven by the runner
in its own asyncio task. A task awaiting approval holds no slot. On shutdown the driven tasks stay
`running` in the store and resume on the next start."""

from __future__ import annotations

import asyncio
import logging

from aistack.gitcli import GitError
from aistack.paths import PathNotAllowed
from aistack.ralph_wiggum import rules, space
from aistack.ralph_wiggum.rules import Action, Reason
from aistack.ralph_wiggum.runner import StopRequested, TaskFailed, TaskRunner
from aistack.ralph_wiggum.tasks import TaskService

log = logging.getLogger("aistack.ralph")
IDLE_POLL_SECONDS = 1.0  # a look for ready tasks even without a wake-up (another process's writes)
SPACE_RETRY_SECONDS = 5.0  # how long a task that met a full disk waits before it tries again


class Scheduler:
    """Drives the tasks of `tasks` with its own runner, and is the service's driver."""

    def __init__(self, tasks: TaskService):
        self.settings, self.store, self.tasks = tasks.settings, tasks.store, tasks
        self.runner = TaskRunner(tasks)
        tasks.driver = self
        self._active: dict[str, asyncio.Task] = {}
        self._stopping: set[str] = set()  # interrupted because a person stopped them
        self._finishing: set[asyncio.Task] = set()  # the stops of interrupted drives, being recorded
        self._wake = asyncio.Event()
        self._loop: asyncio.Task | None = None

    @property
    def active_count(self) -> int:
        return len(self._active)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop().create_task(self._schedule())

    def wake(self) -> None:
        self._wake.set()

    def interrupt(self, task_id: str) -> bool:
        """End a driven task's current iteration now (its process group included); its drive
        then records the stop. False if this scheduler does not drive the task."""
        drive = self._active.get(task_id)
        if drive is None:
            return False
        self._stopping.add(task_id)
        drive.cancel()
        return True

    async def shutdown(self) -> None:
        """Stop scheduling; interrupted tasks stay `running` and resume on the next start."""
        if self._loop:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
        drives = list(self._active.values())
        for drive in drives:
            drive.cancel()
        await asyncio.gather(*drives, return_exceptions=True)
        await asyncio.sleep(0)  # the drives' done-callbacks run
        await asyncio.gather(*self._finishing, return_exceptions=True)

    async def _schedule(self) -> None:
        while True:
            try:
                free = self.settings.ralph_max_concurrent_tasks - len(self._active)
                if self.settings.ralph_loop_enabled and free > 0:
                    ready = rules.transition(Action.start).sources
                    for task in await self.store.ready_tasks(ready, set(self._active), free):
                        self._launch(task.id)
            except Exception:  # keep scheduling whatever one pass hit (e.g. a locked database)
                log.exception("scheduler pass failed")
            try:  # asyncio.timeout, not wait_for: in 3.11 a wake-up racing a cancel made wait_for lose the cancel
                async with asyncio.timeout(IDLE_POLL_SECONDS):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    def _launch(self, task_id: str) -> None:
        drive = asyncio.get_running_loop().create_task(self._drive(task_id))
        self._active[task_id] = drive
        drive.add_done_callback(lambda done: self._ended(task_id, done))  # runs however the drive ended

    def _ended(self, task_id: str, drive: asyncio.Task) -> None:
        self._active.pop(task_id, None)
        if task_id in self._stopping:  # interrupted by a person (maybe before the drive even began): record it
            finish = asyncio.get_running_loop().create_task(self.tasks.finish(task_id, Action.stop, Reason.stopped))
            self._finishing.add(finish)
            finish.add_done_callback(self._finishing.discard)
        self._stopping.discard(task_id)
        self.wake()

    async def _drive(self, task_id: str) -> None:
        """Run the task; a cancel (a person's stop, or shutdown, when it stays `running` to resume
        later) ends here and is recorded by `_ended`. A full disk fails nothing: the task stays
        `running`, its slot waits a while, and it is taken up again from its last checkpoint."""
        try:
            await self._run(task_id)
        except Exception as exc:
            if (why := space.reason(exc)) is None:
                raise
            log.warning("task %s waits for disk space, retrying in %.0f s: %s", task_id, SPACE_RETRY_SECONDS, why)
            await asyncio.sleep(SPACE_RETRY_SECONDS)

    async def _run(self, task_id: str) -> None:
        try:
            await self.runner.run(task_id)
        except StopRequested:  # seen in the store: sent through another process
            await self.tasks.finish(task_id, Action.stop, Reason.stopped)
        except Exception as exc:
            if space.reason(exc) is not None:
                raise  # the machine's, not the task's: `_drive` lets it wait
            # the task's, its repository's (a lock left behind), or its workspace's (a .git pointed
            # out of the root meanwhile): said as it is
            if isinstance(exc, (TaskFailed, GitError, PathNotAllowed)):
                error = str(exc)
            else:
                log.exception("task %s crashed", task_id)
                error = f"internal error: {exc}"
            await self.tasks.finish(task_id, Action.fail, Reason.error, error)
