"""Agent backends behind one interface (`base.Backend`)."""

from __future__ import annotations

from aistack.config import Settings
from aistack.ralph_wiggum.backends.aider import AiderBackend
from aistack.ralph_wiggum.backends.base import Backend, IterationRequest, IterationResult
from aistack.ralph_wiggum.backends.command import CommandBackend
from aistack.sandbox import Sandbox

__all__ = ["Backend", "IterationRequest", "IterationResult", "configured_backends"]


def configured_backends(settings: Settings, sandbox: Sandbox) -> dict[str, Backend]:
    """The backends this configuration offers: aider always, command when a command is set."""
    key = settings.api_key
    backends: dict[str, Backend] = {"aider": AiderBackend(settings.url("aider-wrapper"), key)}
    if settings.ralph_command_backend:
        backends["command"] = CommandBackend(settings.ralph_command_backend, settings, sandbox)
    return backends
