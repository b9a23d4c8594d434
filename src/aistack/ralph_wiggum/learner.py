"""Learning inside the orchestrator: the tasks' outcomes turned into proposals (on demand and every
RALPH_LEARN_INTERVAL_SECONDS), and a person's decisions on them carried out.

Accepting a proposal that changes settings writes them to the `.env` (`envfile.update`: validated,
atomic, the old file kept as `.env.bak`) and sets them on the running service's settings, which
the task service, the runner and the scheduler read at each use: no restart. The values it
replaced are kept with the proposal, and a rollback writes and applies them again the same way.
Accepting a drafted task submits it. Every decision is stored with who took it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path

from aistack import envfile
from aistack.config import Settings
from aistack.contracts import TaskCreate
from aistack.ralph_wiggum import learning
from aistack.ralph_wiggum.records import ProposalRecord
from aistack.ralph_wiggum.store import Store
from aistack.ralph_wiggum.tasks import TaskError, TaskInvalid, TaskNotFound, TaskService

log = logging.getLogger("aistack.ralph")


class Learner:
    def __init__(self, settings: Settings, store: Store, tasks: TaskService, env_file: Path):
        self.settings, self.store, self.tasks, self.env_file = settings, store, tasks, env_file
        self._deciding = asyncio.Lock()  # one decision at a time: each reads the .env it then writes
        self._job: asyncio.Task[None] | None = None

    async def learn(self) -> list[ProposalRecord]:
        """Learn from every outcome now; the proposals it made or refreshed. The learned limits
        of the tasks submitted from now on read these outcomes too."""
        outcomes = await self.store.outcomes()
        self.tasks.past = learning.past_tasks(outcomes)
        found = learning.learn(outcomes, learning.Current.of(self.settings), self.settings.ralph_learn_min_outcomes)
        return await self.store.save_proposals(found)

    async def get(self, proposal_id: int) -> ProposalRecord:
        proposal = await self.store.proposal(proposal_id)
        if proposal is None:
            raise TaskNotFound(f"no proposal {proposal_id}")
        return proposal

    async def accept(self, proposal_id: int, who: str, detail: str | None = None) -> ProposalRecord:
        async with self._deciding:
            proposal = await self._in(proposal_id, "open", "accepted")
            previous = None
            if proposal.task is not None:
                try:
                    draft = TaskCreate.model_validate(proposal.task)
                except ValueError as exc:
                    raise TaskInvalid(f"the drafted task is no valid task: {exc}") from None
                submitted = await self.tasks.accept(draft)
                detail = f"submitted as task {submitted.id}" + (f"; {detail}" if detail else "")
            elif proposal.changes:
                previous = await asyncio.to_thread(self._write, proposal.changes)
            return await self._decided(proposal_id, "accepted", who, "open", "accepted", previous, detail)

    async def reject(self, proposal_id: int, who: str, detail: str | None = None) -> ProposalRecord:
        async with self._deciding:
            await self._in(proposal_id, "open", "rejected")
            return await self._decided(proposal_id, "rejected", who, "open", "rejected", None, detail)

    async def rollback(self, proposal_id: int, who: str, detail: str | None = None) -> ProposalRecord:
        async with self._deciding:
            proposal = await self._in(proposal_id, "accepted", "rolled back")
            if not proposal.changes or proposal.previous is None:
                raise TaskError(f"proposal {proposal_id} changed no setting: there is nothing to roll back", "id")
            await asyncio.to_thread(self._write, proposal.previous)
            return await self._decided(proposal_id, "rolled_back", who, "accepted", "rolled_back", None, detail)

    async def _in(self, proposal_id: int, status: str, verb: str) -> ProposalRecord:
        proposal = await self.get(proposal_id)
        if proposal.status != status:
            raise TaskError(f"proposal {proposal_id} is {proposal.status}: only an {status} one can be {verb}", "id")
        return proposal

    async def _decided(self, proposal_id: int, decision: str, who: str, source: str, target: str, previous, detail) -> ProposalRecord:
        done = await self.store.decide(proposal_id, decision, who, [source], target, previous, detail)
        if done is None:  # decided through another process meanwhile
            raise TaskError(f"proposal {proposal_id} is no longer {source}", "id")
        log.info("proposal %d %s by %s: %s", proposal_id, decision.replace("_", " "), who, done.summary)
        return done

    def _write(self, values: Mapping[str, str | None]) -> dict[str, str | None]:
        """Write `values` to the .env (None: remove the line) and apply them to the running
        service; the values the file had before (None: unset)."""
        before = envfile.read(self.env_file)
        try:
            written = envfile.update(self.env_file, values)
        except envfile.EnvFileError as exc:
            raise TaskInvalid(str(exc), exc.field) from None
        for key in values:  # an unset one takes its default
            setattr(self.settings, key.lower(), getattr(written, key.lower()))
        return {key: before.get(key.upper()) for key in values}

    # --- on a schedule ---------------------------------------------------------------------------

    async def start(self, schedule: bool) -> None:
        """Read the outcomes the learned limits start from (not when they are off: a scan of every
        finished task at each start for nothing); with `schedule`, learn every
        RALPH_LEARN_INTERVAL_SECONDS (0: never)."""
        if self.settings.ralph_learned_limits_after > 0:
            self.tasks.past = learning.past_tasks(await self.store.outcomes())
        if schedule and self.settings.ralph_learn_interval_seconds > 0:
            self._job = asyncio.create_task(self._every(self.settings.ralph_learn_interval_seconds), name="learner")

    async def stop(self) -> None:
        if self._job is not None:
            self._job.cancel()
            with suppress(asyncio.CancelledError):
                await self._job

    async def _every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                made = await self.learn()
                log.info("learned from the outcomes: %d proposal(s) open or refreshed", len(made))
            except Exception:  # the next round tries again; the service must live on
                log.warning("learning from the outcomes failed", exc_info=True)
