"""Agent backends behind one interface (`base.Backend`)."""

from __future__ import annotations

from aistack.config import Settings
from aistack.ralph_wiggum.backends.aider import AiderBackend
from aistack.ralph_wiggum.backends.base import Backend, IterationRequest, IterationResult
from aistack.ralph_wiggum.backends.command import CommandBackend
from aistack.ralph_wiggum.backends.langchain_agent import LangchainBackend
from aistack.ralph_wiggum.backends.llm import LocalLlm
from aistack.ralph_wiggum.backends.mini_swe_agent import MiniSweAgentBackend
from aistack.sandbox import Sandbox

__all__ = ["Backend", "IterationRequest", "IterationResult", "configured_backends"]


def configured_backends(settings: Settings, sandbox: Sandbox) -> dict[str, Backend]:
    """The backends this configuration offers: aider, langchain and mini-swe-agent always (each
    says in its health whether it can run here), command when a command is set."""
    key = settings.api_key
    llm = LocalLlm(settings)  # one health poll for the agents that talk to llama-cpp themselves
    backends: dict[str, Backend] = {
        "aider": AiderBackend(settings.url("aider-wrapper"), key),
        "langchain": LangchainBackend(settings, sandbox, llm),
        "mini-swe-agent": MiniSweAgentBackend(settings, sandbox, llm),
    }
    if settings.ralph_command_backend:
        backends["command"] = CommandBackend(settings.ralph_command_backend, settings, sandbox)
    return backends
