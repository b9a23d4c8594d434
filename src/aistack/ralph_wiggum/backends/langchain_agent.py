"""`langchain` backend: a native agent in this process (langchain's tool-calling agent on
langgraph) over the local LLM, with tools confined to the task's worktree (`worktree_tools`)."""

from __future__ import annotations

import asyncio
import importlib.util

from aistack import agentenv
from aistack.config import Settings
from aistack.contracts import BackendHealth, TokenCounts
from aistack.ralph_wiggum.backends.base import IterationRequest, IterationResult
from aistack.ralph_wiggum.backends.llm import LocalLlm
from aistack.ralph_wiggum.backends.worktree_tools import WorktreeTools
from aistack.ralph_wiggum.shell import ProcResult, run_shell
from aistack.sandbox import Sandbox

LIBRARIES = ("langchain", "langchain_openai", "langgraph")


class LangchainBackend:
    """Its check tool runs the task's check exactly as the loop does (`agentenv.for_check`), and
    tells the runner of its process group. Cancelling `run` ends the agent and a running check."""

    name = "langchain"

    def __init__(self, settings: Settings, sandbox: Sandbox, llm: LocalLlm):
        self.settings, self.sandbox, self.llm = settings, sandbox, llm
        missing = [name for name in LIBRARIES if importlib.util.find_spec(name) is None]
        self._missing = f"not installed: {', '.join(missing)} (pip install -e . installs them)" if missing else None

    def start(self) -> None:
        self.llm.start()

    def health(self) -> BackendHealth:
        return self.llm.backend_health(self.name, self._missing)

    async def run(self, request: IterationRequest) -> IterationResult:
        if self._missing:
            return IterationResult("error", "", f"the langchain backend is {self._missing}")
        from aistack.ralph_wiggum.backends import langchain_graph as graph  # a second to import: only when used

        command = request.check_command
        tools = WorktreeTools(request.worktree, (lambda: self._check(request, command)) if command else None)
        model = graph.chat_model(self.llm.api_url, self.llm.model, self.llm.api_key, self.llm.client, request.timeout_seconds)
        max_steps = self.settings.ralph_langchain_max_steps
        transcript = graph.Transcript()
        try:
            async with asyncio.timeout(request.timeout_seconds):
                prompt = await graph.opening(request.prompt, tools, request.context.get("files", []))
                await graph.drive(transcript, model, tools, prompt, command, max_steps)
        except TimeoutError:
            transcript.error = f"the langchain agent timed out after {request.timeout_seconds:.0f} s"
        prompt_tokens, completion_tokens = graph.tokens(transcript.messages)
        counted = TokenCounts(prompt=prompt_tokens, completion=completion_tokens)
        output = graph.text(transcript.messages)
        if transcript.error:
            return IterationResult("error", output, transcript.error, transient=transcript.transient, tokens=counted)
        return IterationResult("success", output, tokens=counted)

    async def _check(self, request: IterationRequest, command: str) -> ProcResult:
        env, jail = agentenv.for_check(self.settings, self.sandbox, request.task_id, request.iteration, request.worktree, command)
        timeout = float(self.settings.ralph_check_timeout_seconds)
        return await run_shell(command, request.worktree, env=env, timeout=timeout, jail=jail, on_group=request.on_group)

    async def abandon(self, task_id: str, iteration: int) -> bool:
        return True  # it ran in the process that died; its checks' groups are in the store, and the runner ends them

    async def close(self) -> None:
        await self.llm.close()
