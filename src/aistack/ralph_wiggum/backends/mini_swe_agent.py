"""`mini-swe-agent` backend: the minimal bash-only agent (PyPI `mini-swe-agent`), run as a process
in the task's worktree, in the sandbox, against the local LLM.

Its own environment (`.venv/mini-swe-agent`, made by scripts/setup.sh) keeps litellm and the
rest of its large tree of pins (datasets, pandas, boto3…) away from the services' dependencies;
only its program is needed here. Everything it is told comes in one config file outside the
worktree (the prompt too: an argument would show it in `ps` and hit exec's length limit); what it
did comes back in its trajectory file, read for the transcript, the tokens and how it ended.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

from aistack import agentenv
from aistack.config import Settings
from aistack.contracts import BackendHealth, TokenCounts
from aistack.files import atomic_write
from aistack.paths import find_program
from aistack.ralph_wiggum.backends.base import IterationRequest, IterationResult
from aistack.ralph_wiggum.backends.llm import LocalLlm
from aistack.ralph_wiggum.shell import run_shell
from aistack.sandbox import Sandbox, installation

VERSION = "2.4.6"  # what scripts/setup.sh installs
INSTALL = f"scripts/setup.sh installs it (pip install mini-swe-agent=={VERSION} into .venv/mini-swe-agent), or set RALPH_MINI_SWE_AGENT_BIN"
BASE_CONFIG = "mini.yaml"  # its own default: prompts, and the bash tool called through the API's tool calls
# how its run ends (`info.exit_status`: an exception's class name) when the LLM was down, loading or busy
TRANSIENT = frozenset({"APIConnectionError", "InternalServerError", "ServiceUnavailableError", "Timeout", "RateLimitError"})
SHOWN_OUTPUT = 2_000  # characters of each command's output kept in the transcript


def find_mini(settings: Settings) -> Path | None:
    """RALPH_MINI_SWE_AGENT_BIN, else the stack's own (`.venv/mini-swe-agent`), else `mini` on PATH."""
    return find_program(settings.ralph_mini_swe_agent_bin, "mini-swe-agent", "mini")


class MiniSweAgentBackend:
    name = "mini-swe-agent"

    def __init__(self, settings: Settings, sandbox: Sandbox, llm: LocalLlm):
        self.settings, self.sandbox, self.llm = settings, sandbox, llm
        self.program = find_mini(settings)
        usable = self.program is not None and self.program.is_file() and os.access(self.program, os.X_OK)
        self._missing = None if usable else f"not installed: {self.program or 'no `mini` found'}; {INSTALL}"
        self.base_config = _builtin_config(self.program) if usable and self.program else BASE_CONFIG

    def start(self) -> None:
        self.llm.start()

    def health(self) -> BackendHealth:
        return self.llm.backend_health(self.name, self._missing)

    async def run(self, request: IterationRequest) -> IterationResult:
        if self._missing:
            return IterationResult("error", "", f"mini-swe-agent is {self._missing}")
        files = agentenv.TaskFiles.of(self.settings, request.task_id).prepare(request.prompt)
        config = files.folder / "mini-swe-agent.yaml"
        if "=" in str(config):  # mini would read the path as a `key=value` setting
            return IterationResult("error", "", f"mini-swe-agent cannot read a config file whose path holds '=': {config}")
        trajectory = files.home / "mini-swe-agent" / f"iteration-{request.iteration}.traj.json"
        trajectory.unlink(missing_ok=True)  # an earlier attempt's
        atomic_write(config, json.dumps(self._config(request), ensure_ascii=False))  # JSON is YAML
        command = shlex.join([str(self.program), "--yolo", "--exit-immediately", "--agent-class", "default",
                              "-c", self.base_config, "-c", str(config), "-o", str(trajectory)])  # fmt: skip
        jail = self.sandbox.jail(request.worktree, command=command, writable=[files.home], readable=[config])
        result = await run_shell(command, request.worktree, env=self._environ(files), timeout=request.timeout_seconds, jail=jail,
                                 on_group=request.on_group)  # fmt: skip
        run = _read(trajectory)
        info = run.get("info", {})
        status = str(info.get("exit_status", ""))
        output = _transcript(run) or result.output
        tokens = _tokens(run)
        if result.timed_out:
            return IterationResult("error", output, f"mini-swe-agent timed out after {request.timeout_seconds:.0f} s", tokens=tokens)
        if status in TRANSIENT:
            return IterationResult("error", output, f"LLM unreachable or busy: {status}", transient=True, tokens=tokens)
        if result.exit_code != 0 or status != "Submitted":
            why = f"mini-swe-agent ended with {status or 'no trajectory'} (exit status {result.exit_code})"
            return IterationResult("error", output or result.output, why, exit_code=result.exit_code, tokens=tokens)
        return IterationResult("success", output, exit_code=0, tokens=tokens)

    def _config(self, request: IterationRequest) -> dict[str, Any]:
        task = request.prompt
        if request.check_command:
            task += f"\n\nThe task is done when the command `{request.check_command}` exits 0."
        return {
            "run": {"task": task},
            "agent": {"step_limit": self.settings.ralph_mini_swe_agent_step_limit, "cost_limit": 0},
            "model": {
                "model_name": f"openai/{self.llm.model}",
                "cost_tracking": "ignore_errors",  # a local model has no price
                # a reply may take the whole iteration (litellm's default gives up after 10 minutes), and is
                # not retried in there: the runner retries a transient failure, with backoff
                "model_kwargs": {"api_base": self.llm.api_url, "drop_params": True, "timeout": request.timeout_seconds, "max_retries": 0},
            },
            # the commands it runs see no key (they inherit its environment, where litellm needs it)
            "environment": {"env": {"OPENAI_API_KEY": ""}},
        }

    def _environ(self, files: agentenv.TaskFiles) -> dict[str, str]:
        env = agentenv.environ(self.settings, files.home)
        llama_host = self.llm.url.split("//", 1)[1].rsplit(":", 1)[0].strip("[]")
        no_proxy = ",".join(filter(None, [env.get("NO_PROXY") or env.get("no_proxy"), llama_host]))
        env.update(
            MSWEA_CONFIGURED="true",  # no first-run questions
            MSWEA_SILENT_STARTUP="1",
            MSWEA_GLOBAL_CONFIG_DIR=str(files.home / "mini-swe-agent"),
            MSWEA_MODEL_RETRY_STOP_AFTER_ATTEMPT="1",  # the runner retries an unreachable LLM, with backoff
            LITELLM_LOCAL_MODEL_COST_MAP="True",  # litellm's bundled price list, not a download
            OPENAI_API_KEY=self.llm.api_key,  # llama-server requires the stack's key when one is set
            NO_PROXY=no_proxy,  # a proxy the user passes through is never used for llama-cpp
            no_proxy=no_proxy,
            PYTHONIOENCODING="utf-8",
            NO_COLOR="1",
        )
        return env

    async def abandon(self, task_id: str, iteration: int) -> bool:
        return True  # its process group is in the store, and the runner ends it

    async def close(self) -> None:
        await self.llm.close()


def _builtin_config(program: Path) -> str:
    """The path of its own BASE_CONFIG in its installation: given by name, mini would look for
    that name in the worktree first, where anyone's file of that name would win."""
    venv = installation(program)
    found = sorted(venv.glob(f"lib/python3*/site-packages/minisweagent/config/{BASE_CONFIG}")) if venv.is_dir() else []
    return str(found[-1]) if found else BASE_CONFIG


def _read(trajectory: Path) -> dict[str, Any]:
    try:
        run = json.loads(trajectory.read_text(errors="replace"))
    except (OSError, ValueError):
        return {}
    return run if isinstance(run, dict) else {}


def _messages(run: dict[str, Any]) -> list[dict[str, Any]]:
    messages = run.get("messages", [])
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def _tokens(run: dict[str, Any]) -> TokenCounts:
    """What the server counted for each of its model calls (kept in each reply's `extra.response`)."""
    prompt = completion = 0
    for message in _messages(run):
        extra = message.get("extra")
        response = extra.get("response") if isinstance(extra, dict) else None
        usage = response.get("usage") if isinstance(response, dict) else None
        if isinstance(usage, dict):
            prompt += int(usage.get("prompt_tokens") or 0)
            completion += int(usage.get("completion_tokens") or 0)
    return TokenCounts(prompt=prompt, completion=completion)


def _transcript(run: dict[str, Any]) -> str:
    """What the model said and the commands it ran, with their output; its exit status last."""
    lines: list[str] = []
    for message in _messages(run)[2:]:  # the system prompt and the task
        role, content = message.get("role"), message.get("content")
        text = content if isinstance(content, str) else json.dumps(content) if content else ""
        if role == "assistant":
            lines.append(text.strip())
            lines += [f"$ {action.get('command', '')}" for action in _actions(message)]
        elif role in ("tool", "user"):
            lines.append(text.strip()[-SHOWN_OUTPUT:])
        elif role == "exit":
            lines.append(f"[{(message.get('extra') or {}).get('exit_status', 'exit')}] {text.strip()}".strip())
    return "\n".join(line for line in lines if line)


def _actions(message: dict[str, Any]) -> list[dict[str, Any]]:
    extra = message.get("extra")
    actions = extra.get("actions") if isinstance(extra, dict) else None
    return [a for a in actions if isinstance(a, dict)] if isinstance(actions, list) else []
