"""The one small interface every agent backend implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from aistack.contracts import BackendHealth, Sampling, TokenCounts
from aistack.ralph_wiggum.output import OnOutput
from aistack.ralph_wiggum.shell import OnGroup


@dataclass(frozen=True)
class IterationRequest:
    task_id: str
    iteration: int
    prompt: str  # the task's prompt, then what the last attempts left to do (`rules.compose_prompt`)
    worktree: Path
    timeout_seconds: float
    context: dict[str, Any] = field(default_factory=dict)
    on_group: OnGroup | None = None  # told of each process group the backend starts on this machine
    on_output: OnOutput | None = None  # told each piece of the agent's output as it is read (output.py)
    sampling: Sampling | None = None  # temperature and seed for this run (a retry with diversity); None: the model's own
    candidate: int = 1  # which of the iteration's parallel attempts (strategy.candidates) this is
    check_command: str | None = None  # the task's check, for an agent that runs it itself


@dataclass(frozen=True)
class IterationResult:
    status: Literal["success", "error"]
    output: str
    error: str | None = None
    exit_code: int | None = None
    transient: bool = False  # the backend's service was unreachable/busy: the attempt does not count
    tokens: TokenCounts = field(default_factory=TokenCounts)


class Backend(Protocol):
    """Runs one iteration in a worktree. Cancelling `run` must end everything it started."""

    name: str

    def start(self) -> None:
        """Begin what runs beside the iterations (a health poll); called once, inside the event loop."""
        ...

    async def run(self, request: IterationRequest) -> IterationResult: ...

    async def abandon(self, task_id: str, iteration: int) -> bool:
        """End what a run of this iteration by an earlier process of the orchestrator, which died
        during it, may still be doing elsewhere; called before the iteration runs again. False if
        it may still run: its changes could not be kept apart from the next run's."""
        ...

    def health(self) -> BackendHealth:
        """Last known health; must answer at once (no I/O)."""
        ...

    async def close(self) -> None:
        """Stop what `start` began and release connections."""
        ...
