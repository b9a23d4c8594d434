"""`command` backend: any CLI agent. Runs a shell command in the worktree each iteration.

The plain `command` backend runs RALPH_COMMAND_BACKEND; the named CLI agents (`agents.py`:
continue, opencode, qwen-code, goose, autogpt) are the same backend given an `Agent`: their
command, the files they read from their HOME, the LLM endpoint in their environment, and how
to read their token counts from what they print.
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aistack import agentenv
from aistack.config import Settings
from aistack.contracts import BackendHealth, TokenCounts
from aistack.ralph_wiggum.backends.base import IterationRequest, IterationResult
from aistack.ralph_wiggum.shell import run_shell
from aistack.sandbox import Sandbox


@dataclass(frozen=True)
class Agent:
    """A CLI agent as the command backend runs it."""

    name: str
    command: str  # a shell command, run in the worktree
    missing: str | None = None  # why it cannot run here ("not installed: …"); None: it can
    environ: Mapping[str, str] = field(default_factory=dict)  # more variables for it (the LLM endpoint)
    configure: Callable[[Path], None] | None = None  # writes its configuration into the task's HOME
    tokens: Callable[[str, Path], TokenCounts] | None = None  # its token counts, from its output or its HOME
    unreachable: re.Pattern[str] | None = None  # what it prints when the LLM cannot be reached


class CommandBackend:
    """The prompt arrives on stdin and in the file $AISTACK_PROMPT_FILE, the iteration number in
    $AISTACK_ITERATION, a retry's sampling (strategy.diversity) in $AISTACK_TEMPERATURE and
    $AISTACK_SEED; stdout and stderr together are the reply; exit 0 is success. The command
    sees only the allow-listed environment (`agentenv`) and runs in the service's sandbox."""

    def __init__(self, agent: Agent, settings: Settings, sandbox: Sandbox):
        self.agent, self.settings, self.sandbox = agent, settings, sandbox
        self.name = agent.name

    @property
    def command(self) -> str:
        return self.agent.command

    async def run(self, request: IterationRequest) -> IterationResult:
        files = agentenv.TaskFiles.of(self.settings, request.task_id).prepare(request.prompt)
        if self.agent.configure:
            self.agent.configure(files.home)
        sampling = request.sampling
        sampled = {"AISTACK_TEMPERATURE": str(sampling.temperature), "AISTACK_SEED": str(sampling.seed)} if sampling else {}
        env = agentenv.environ(
            self.settings, files.home, **self.agent.environ,
            AISTACK_PROMPT_FILE=str(files.prompt), AISTACK_ITERATION=str(request.iteration), AISTACK_TASK_ID=request.task_id,
            **sampled,
        )  # fmt: skip
        jail = self.sandbox.jail(request.worktree, command=self.command, writable=[files.home], readable=[files.prompt])
        result = await run_shell(self.command, request.worktree, stdin=request.prompt, env=env, timeout=request.timeout_seconds, jail=jail,
                                 on_group=request.on_group, on_output=request.on_output)  # fmt: skip
        tokens = self.agent.tokens(result.output, files.home) if self.agent.tokens else TokenCounts()
        if self.agent.unreachable and not tokens.prompt and self.agent.unreachable.search(result.output):
            # no model call came back (qwen-code even exits 0 then): retried, not counted
            return IterationResult("error", result.output, f"{self.name} could not reach the LLM", transient=True)
        if result.timed_out:
            return IterationResult("error", result.output, f"{self.name} timed out after {request.timeout_seconds:.0f} s", tokens=tokens)
        if result.exit_code != 0:
            return IterationResult("error", result.output, f"{self.name} exited with {result.exit_code}", exit_code=result.exit_code,
                                   tokens=tokens)  # fmt: skip
        return IterationResult("success", result.output, exit_code=0, tokens=tokens)

    async def abandon(self, task_id: str, iteration: int) -> bool:
        return True  # its process groups are in the store, and the runner ends them

    def start(self) -> None:
        return None  # nothing runs beside the iterations

    def health(self) -> BackendHealth:
        missing = self.agent.missing
        return BackendHealth(name=self.name, available=missing is None, reachable=None, detail=missing or self.command)

    async def close(self) -> None:
        return None


def program(command: str) -> str | None:
    """The program a shell command runs first (after any NAME=value assignments)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    return next((word for word in words if "=" not in word.split("/")[0]), None)


def not_on_path(command: str, how: str) -> str | None:
    """Why `command` cannot run here (its program is not on PATH), naming how to get it; None if it can."""
    name = program(command)
    if name and (shutil.which(name) or Path(name).is_file()):
        return None
    return f"not installed: {name or command!r} is not on PATH ({how})"
