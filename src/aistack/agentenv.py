"""What an agent's process gets of ours: an allow-listed environment and a home of its own.

Agents (the command backend's program, aider) and check commands run code nobody reviewed, in a
worktree whose content ends up on a branch and in `GET /tasks/{id}/diff`. Of the service's own
environment they get only PATH, the locale, the time zone and the terminal type, plus the
variables the user names in RALPH_AGENT_ENV_PASSTHROUGH (which never names a setting of the
stack): no API key, no token, no AISTACK_ENV_FILE pointing at the `.env`. HOME is a directory of
their own, so they neither read the user's dotfiles nor leave theirs there. (aider and the LLM
agents are also given the stack's key, which llama-server requires: `aider_wrapper.invocation.aider_env`,
`ralph_wiggum.backends.agents.Llm`.)
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from aistack.config import Settings
from aistack.files import atomic_write
from aistack.sandbox import Jail, Sandbox

KEPT = frozenset({"PATH", "LANG", "LANGUAGE", "TZ", "TERM"})  # and every LC_*


def environ(settings: Settings, home: Path, **variables: str) -> dict[str, str]:
    """The whole environment of an agent or check: the allow-list, HOME, then `variables`."""
    wanted = KEPT | set(settings.agent_env_passthrough)
    env = {name: value for name, value in os.environ.items() if name in wanted or name.startswith("LC_")}
    env.setdefault("PATH", os.defpath)
    env.update(HOME=str(home), **variables)
    return env


def for_check(
    settings: Settings, sandbox: Sandbox, task_id: str, iteration: int, worktree: Path, command: str
) -> tuple[dict[str, str], Jail]:
    """The environment and jail of a task's check, whoever runs it: the loop after an iteration,
    or an agent's own tool during one. It runs as the agent does, with the task's home."""
    home = TaskFiles.of(settings, task_id).prepare().home
    env = environ(settings, home, AISTACK_TASK_ID=task_id, AISTACK_ITERATION=str(iteration))
    return env, sandbox.jail(worktree, command=command, writable=[home])


@dataclass(frozen=True)
class TaskFiles:
    """A task's files outside its worktree, so never committed: the agent's home and the prompt
    of the current iteration (a file, not a variable: a long prompt exceeds what exec accepts)."""

    folder: Path

    @classmethod
    def of(cls, settings: Settings, task_id: str) -> TaskFiles:
        return cls(settings.agents_dir / task_id)

    @property
    def home(self) -> Path:
        return self.folder / "home"

    @property
    def prompt(self) -> Path:
        return self.folder / "prompt.txt"

    def prepare(self, prompt: str | None = None) -> TaskFiles:
        """The home made (on the task's first use), and the prompt written when given."""
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        if prompt is not None:
            atomic_write(self.prompt, prompt)
        return self

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
