"""`command` backend: any CLI agent. Runs RALPH_COMMAND_BACKEND in the worktree each iteration."""

from __future__ import annotations

from aistack import agentenv
from aistack.config import Settings
from aistack.contracts import BackendHealth
from aistack.ralph_wiggum.backends.base import IterationRequest, IterationResult
from aistack.ralph_wiggum.shell import run_shell
from aistack.sandbox import Sandbox


class CommandBackend:
    """The prompt arrives on stdin and in the file $AISTACK_PROMPT_FILE, the iteration number in
    $AISTACK_ITERATION, a retry's sampling (strategy.diversity) in $AISTACK_TEMPERATURE and
    $AISTACK_SEED; stdout and stderr together are the reply; exit 0 is success. The command
    sees only the allow-listed environment (`agentenv`) and runs in the service's sandbox."""

    name = "command"

    def __init__(self, command: str, settings: Settings, sandbox: Sandbox):
        self.command, self.settings, self.sandbox = command, settings, sandbox

    async def run(self, request: IterationRequest) -> IterationResult:
        files = agentenv.TaskFiles.of(self.settings, request.task_id).prepare(request.prompt)
        sampling = request.sampling
        sampled = {"AISTACK_TEMPERATURE": str(sampling.temperature), "AISTACK_SEED": str(sampling.seed)} if sampling else {}
        env = agentenv.environ(
            self.settings, files.home,
            AISTACK_PROMPT_FILE=str(files.prompt), AISTACK_ITERATION=str(request.iteration), AISTACK_TASK_ID=request.task_id,
            **sampled,
        )  # fmt: skip
        jail = self.sandbox.jail(request.worktree, command=self.command, writable=[files.home], readable=[files.prompt])
        result = await run_shell(self.command, request.worktree, stdin=request.prompt, env=env, timeout=request.timeout_seconds, jail=jail,
                                 on_group=request.on_group)  # fmt: skip
        if result.timed_out:
            return IterationResult("error", result.output, f"command timed out after {request.timeout_seconds:.0f} s")
        if result.exit_code != 0:
            return IterationResult("error", result.output, f"command exited with {result.exit_code}", exit_code=result.exit_code)
        return IterationResult("success", result.output, exit_code=0)

    async def abandon(self, task_id: str, iteration: int) -> None:
        return None  # its process groups are in the store, and the runner ends them

    def start(self) -> None:
        return None  # nothing runs beside the iterations

    def health(self) -> BackendHealth:
        return BackendHealth(name=self.name, available=True, reachable=None, detail=self.command)

    async def close(self) -> None:
        return None
