"""Agent backends behind one interface (`base.Backend`).

Every backend the stack knows is listed, installed or not: `health()` says whether it can take
tasks (`BackendHealth.available`) and, when it cannot, why (`detail`, e.g. "not installed: …").
The task API accepts only available ones (`refusal`), and `/health` shows them all.
"""

from __future__ import annotations

from collections.abc import Mapping

from aistack.config import Settings
from aistack.ralph_wiggum.backends.agents import cli_agents
from aistack.ralph_wiggum.backends.aider import AiderBackend
from aistack.ralph_wiggum.backends.base import Backend, IterationRequest, IterationResult
from aistack.ralph_wiggum.backends.command import Agent, CommandBackend
from aistack.ralph_wiggum.backends.langchain_agent import LangchainBackend
from aistack.ralph_wiggum.backends.llm import LocalLlm
from aistack.ralph_wiggum.backends.mini_swe_agent import MiniSweAgentBackend
from aistack.sandbox import Sandbox

__all__ = ["Backend", "IterationRequest", "IterationResult", "configured_backends", "refusal"]

NO_COMMAND = "not configured: set RALPH_COMMAND_BACKEND to a shell command"


def configured_backends(settings: Settings, sandbox: Sandbox) -> dict[str, Backend]:
    """Every backend, by name; one line each."""
    command = settings.ralph_command_backend
    llm = LocalLlm(settings)  # one health poll for the agents that talk to llama-cpp themselves
    backends: list[Backend] = [
        AiderBackend(settings.url("aider-wrapper"), settings.api_key),
        CommandBackend(Agent("command", command or "", None if command else NO_COMMAND), settings, sandbox),
        LangchainBackend(settings, sandbox, llm),
        MiniSweAgentBackend(settings, sandbox, llm),
        *(CommandBackend(agent, settings, sandbox) for agent in cli_agents(settings)),
    ]
    return {backend.name: backend for backend in backends}


def refusal(backends: Mapping[str, Backend], name: str) -> str | None:
    """Why a task may not go to backend `name` (unknown, or unavailable and why), naming the
    available ones; None when it may. Only a refusal asks the other backends (every submit asks)."""
    asked = backends[name].health() if name in backends else None
    if asked is not None and asked.available:
        return None
    available = ", ".join(sorted(n for n, b in backends.items() if b.health().available)) or "none"
    if asked is None:
        return f"unknown backend {name!r}; available: {available}"
    return f"backend {name!r} is unavailable: {asked.detail or 'no reason given'}; available: {available}"
