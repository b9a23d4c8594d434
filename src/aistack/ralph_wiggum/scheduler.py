"""Which tasks run: FIFO, at most RALPH_MAX_CONCURRENT_TASKS at once, each driven by the runner
in its own asyncio task. A task awaiting approval holds no slot. On shutdown the driven tasks stay
`running` in the store and resume on the next start, here or on another worker.

Each driven task is leased to this worker (`Store.claim`): a heartbeat renews the leases every
second and reads the stops sent through any process; a task whose lease another worker took over
(this one was paused or cut off longer than RALPH_LEASE_SECONDS) is dropped without a word, and
every write of its drive is fenced by the lease's epoch, so nothing more of it is recorded. A
database that cannot be reached fails no task: its drive waits and the task is claimed again."""

from __future__ import annotations

import asyncio
import logging

from aistack.gitcli import GitError
from aistack.paths import PathNotAllowed
from aistack.ralph_wiggum import rules, space
from aistack.ralph_wiggum.records import Lease
from aistack.ralph_wiggum.rules import Action, Reason
from aistack.ralph_wiggum.runner import StopRequested, TaskFailed, TaskRunner
from aistack.ralph_wiggum.store import LeaseLost, Store, unreachable
from aistack.ralph_wiggum.tasks import TaskService

log = logging.getLogger("aistack.ralph")
IDLE_POLL_SECONDS = 1.0  # a look for ready tasks even without a wake-up (another process's writes)
SPACE_RETRY_SECONDS = 5.0  # how long a task that met a full disk (or no database) waits before it tries again
HEARTBEAT_SECONDS = 1.0  # leases renewed, and stops sent elsewhere seen, this often: a stop ends an iteration within 3 s


class Scheduler:
    """Drives the tasks of `tasks` with its own runner, and is the service's driver."""

    def __init__(self, tasks: TaskService, worker_id: str = "local"):
        self.settings, self.store, self.tasks = tasks.settings, tasks.store, tasks
        self.worker_id = worker_id
        self.runner = TaskRunner(tasks)
        tasks.driver = self
        self._active: dict[str, asyncio.Task] = {}
        self._leases: dict[str, Lease] = {}
        self._stopping: set[str] = set()  # interrupted because a person stopped them
        self._lost: set[str] = set()  # interrupted because another worker holds their lease now
        self._finishing: set[asyncio.Task] = set()  # the stops of interrupted drives, being recorded
        self._wake = asyncio.Event()
        self._loops: list[asyncio.Task] = []

    @property
    def active_count(self) -> int:
        return len(self._active)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(self._schedule()), loop.create_task(self._heartbeat())]

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
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
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
                    seconds = self.settings.ralph_lease_seconds
                    for lease in await self.store.claim(self.worker_id, ready, set(self._active), free, seconds):
                        self._launch(lease)
            except Exception as exc:  # keep scheduling whatever one pass hit (e.g. a locked or unreachable database)
                if why := unreachable(exc):
                    log.warning("no tasks claimed: %s", why)
                else:
                    log.exception("scheduler pass failed")
            try:  # asyncio.timeout, not wait_for: in 3.11 a wake-up racing a cancel made wait_for lose the cancel
                async with asyncio.timeout(IDLE_POLL_SECONDS):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    async def _heartbeat(self) -> None:
        """Renew this worker's leases; drop the drives whose lease is gone; stop those a person stopped."""
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            held = list(self._leases.values())
            if not held:
                continue
            try:
                lost, stop = await self.store.renew(held, self.settings.ralph_lease_seconds)
            except Exception as exc:  # the drives go on; their writes will tell if the lease is gone
                log.warning("leases not renewed: %s", unreachable(exc) or exc)
                continue
            for task_id in lost:
                if (drive := self._active.get(task_id)) is not None and self._leases.get(task_id) in held:
                    log.warning("task %s: lease taken over by another worker; dropping it here", task_id)
                    self._lost.add(task_id)
                    drive.cancel()
            for task_id in stop - lost:
                if task_id not in self._stopping:
                    self.interrupt(task_id)

    def _launch(self, lease: Lease) -> None:
        task_id = lease.task_id
        drive = asyncio.get_running_loop().create_task(self._drive(lease))
        self._active[task_id], self._leases[task_id] = drive, lease
        drive.add_done_callback(lambda done: self._ended(task_id, done))  # runs however the drive ended

    def _ended(self, task_id: str, drive: asyncio.Task) -> None:
        self._active.pop(task_id, None)
        lease = self._leases.pop(task_id, None)
        if task_id in self._lost:  # another worker's now: nothing more of it here
            self._lost.discard(task_id)
            self._stopping.discard(task_id)
            self.wake()
            return
        if lease is not None:  # whoever is free may take it up at once (after a stop, a wait, a shutdown)
            self._spawn(self._release(lease))
        if task_id in self._stopping:  # interrupted by a person (maybe before the drive even began): record it
            self._spawn(self.tasks.finish(task_id, Action.stop, Reason.stopped))
        self._stopping.discard(task_id)
        self.wake()

    def _spawn(self, work) -> None:
        """Work an ended drive leaves (recording a stop, giving its lease back), awaited by shutdown."""
        finish = asyncio.get_running_loop().create_task(work)
        self._finishing.add(finish)
        finish.add_done_callback(self._finishing.discard)

    async def _release(self, lease: Lease) -> None:
        try:
            await self.store.release_lease(lease)
        except Exception as exc:  # it expires by itself
            log.warning("task %s: lease not given back: %s", lease.task_id, unreachable(exc) or exc)

    async def _drive(self, lease: Lease) -> None:
        """Run the task, every write fenced by its lease; a cancel (a person's stop, a lost lease,
        or shutdown, when it stays `running` to resume later) ends here and is handled by
        `_ended`. A full disk or an unreachable database fails nothing: the task stays `running`,
        its slot waits a while, and it is taken up again from its last checkpoint."""
        task_id = lease.task_id
        try:
            with Store.fenced(lease):
                await self._run(task_id)
        except LeaseLost as exc:
            log.warning("%s; dropping the task here", exc)
        except Exception as exc:
            if (why := space.reason(exc)) is not None:
                log.warning("task %s waits for disk space, retrying in %.0f s: %s", task_id, SPACE_RETRY_SECONDS, why)
            elif (why := unreachable(exc)) is not None:
                log.warning("task %s waits for the database, retrying in %.0f s: %s", task_id, SPACE_RETRY_SECONDS, why)
            else:
                raise
            await asyncio.sleep(SPACE_RETRY_SECONDS)

    async def _run(self, task_id: str) -> None:
        try:
            await self.runner.run(task_id)
        except StopRequested:  # seen in the store: sent through another process
            await self.tasks.finish(task_id, Action.stop, Reason.stopped)
        except Exception as exc:
            if isinstance(exc, LeaseLost) or space.reason(exc) is not None or unreachable(exc) is not None:
                raise  # not the task's (another worker's now, the machine's, the database's): `_drive` sees to it
            # the task's, its repository's (a lock left behind), or its workspace's (a .git pointed
            # out of the root meanwhile): said as it is
            if isinstance(exc, (TaskFailed, GitError, PathNotAllowed)):
                error = str(exc)
            else:
                log.exception("task %s crashed", task_id)
                error = f"internal error: {exc}"
            await self.tasks.finish(task_id, Action.fail, Reason.error, error)
