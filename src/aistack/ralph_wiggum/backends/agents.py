"""The CLI agents users already have, as command backends pointed at the stack's own LLM.

continue (`cn`), opencode and qwen-code are npm packages that `scripts/setup.sh` installs, at
the versions pinned in NPM_PACKAGES, into the stack's own prefix (`<cache dir>/npm`, never
globally). Each runs headless in the task's worktree, through the sandbox like any command
agent, with its configuration written into the task's HOME: llama-server's OpenAI-compatible
endpoint (`/v1`, the stack's key when one is set), no login, no telemetry, no update checks, a
short system prompt and only the file and shell tools (the agents' own prompts and tool lists
run to 2-17 thousand tokens, which a small local model on a CPU reads for minutes per request).

goose and autogpt ship nothing that installs here: they are presets of the command backend
(RALPH_BACKEND_GOOSE_COMMAND, RALPH_BACKEND_AUTOGPT_COMMAND), unavailable until their program
is on PATH.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aistack.config import Settings
from aistack.contracts import TokenCounts
from aistack.files import atomic_write
from aistack.ralph_wiggum.backends.command import Agent, not_on_path

NODE_MAJOR = 20  # the oldest Node.js the pinned packages declare in `engines`
NPM_PACKAGES = {"continue": "@continuedev/cli@1.5.47", "opencode": "opencode-ai@1.18.33", "qwen-code": "@qwen-code/qwen-code@0.15.10"}
# What continue ("Connection error."), opencode ("Cannot connect to API") and qwen-code ("[API
# Error: Connection error. (cause: fetch failed)]", with exit status 0) print when llama-server is down.
LLM_UNREACHABLE = re.compile(r"Connection error|Cannot connect to API|ECONNREFUSED|fetch failed")
SYSTEM_PROMPT = (
    "You are a coding agent in a git repository, the current directory. Do the task yourself with your tools: "
    "create or edit the files it needs. Do not ask questions. When it is done, reply with one short line."
)


def npm_prefix(settings: Settings) -> Path:
    return settings.aistack_cache_dir / "npm"


@dataclass(frozen=True)
class Llm:
    """llama-server as an OpenAI-compatible endpoint, as the agents are told of it."""

    base_url: str  # …/v1
    model: str
    key: str  # the stack's key when one is set (llama-server requires it then), else a placeholder

    @classmethod
    def of(cls, settings: Settings) -> Llm:
        return cls(settings.url("llama-cpp") + "/v1", settings.llama_cpp_model_alias, settings.api_key or "none")

    def environ(self) -> dict[str, str]:
        return {"OPENAI_BASE_URL": self.base_url, "OPENAI_API_KEY": self.key, "OPENAI_MODEL": self.model,
                "AISTACK_LLM_URL": self.base_url.removesuffix("/v1"), "AISTACK_LLM_MODEL": self.model}  # fmt: skip


def cli_agents(settings: Settings) -> list[Agent]:
    """Every CLI agent this stack knows, each available or saying why not."""
    llm = Llm.of(settings)
    return [_continue(settings, llm), _opencode(settings, llm), _qwen_code(settings, llm), *_presets(settings, llm)]


def _npm_bin(settings: Settings, name: str, program: str, needs_node: bool = True) -> tuple[Path, str | None]:
    """The agent's program in the stack's prefix, and why it cannot run (None: it can)."""
    path = npm_prefix(settings) / "node_modules" / ".bin" / program
    if not path.is_file():
        return path, f"not installed: scripts/setup.sh installs it (npm install --prefix {npm_prefix(settings)} {NPM_PACKAGES[name]})"
    major = node_major()
    if needs_node and (major is None or major < NODE_MAJOR):
        return path, f"needs Node.js >= {NODE_MAJOR} on PATH (found: {major or 'none'})"
    return path, None


@functools.cache
def node_major() -> int | None:
    try:
        done = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
        return int(done.stdout.strip().lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def _continue(settings: Settings, llm: Llm) -> Agent:
    path, missing = _npm_bin(settings, "continue", "cn")
    config = {
        "name": "aistack", "version": "1.0.0", "schema": "v1",
        "models": [{"name": llm.model, "provider": "openai", "model": llm.model, "apiBase": llm.base_url, "apiKey": llm.key,
                    "roles": ["chat", "edit", "apply"], "capabilities": ["tool_use"]}],
    }  # fmt: skip

    def configure(home: Path) -> None:
        _write(home / ".continue" / "config.yaml", json.dumps(config))  # JSON is YAML
        shutil.rmtree(home / ".continue" / "sessions", ignore_errors=True)  # so the one there after a run is its own

    unused = " ".join(f"--exclude {tool}" for tool in ("Fetch", "Checklist", "CheckBackgroundJob", "AskQuestion", "Exit", "Skills"))
    command = (f'{shlex.quote(str(path))} --config "$HOME/.continue/config.yaml" -p --auto {unused} '
               f'--rule {shlex.quote(SYSTEM_PROMPT)} "$(cat "$AISTACK_PROMPT_FILE")" </dev/null')  # fmt: skip
    environ = {"CONTINUE_CLI_ENABLE_TELEMETRY": "0", "CONTINUE_METRICS_ENABLED": "0"}
    return Agent("continue", command, missing, environ, configure, continue_tokens, LLM_UNREACHABLE)


def _opencode(settings: Settings, llm: Llm) -> Agent:
    path, missing = _npm_bin(settings, "opencode", "opencode", needs_node=False)  # a native binary
    model = {"name": llm.model, "tool_call": True, "limit": {"context": settings.llama_cpp_context_size, "output": 2048}}
    off = dict.fromkeys(("task", "todowrite", "todoread", "webfetch", "websearch", "skill", "glob", "grep", "list", "patch"), False)
    config = {
        "$schema": "https://opencode.ai/config.json",
        "provider": {"aistack": {"npm": "@ai-sdk/openai-compatible", "name": "llama-server",
                                 "options": {"baseURL": llm.base_url, "apiKey": "{env:OPENAI_API_KEY}"}, "models": {llm.model: model}}},
        "model": f"aistack/{llm.model}", "small_model": f"aistack/{llm.model}",
        "autoupdate": False, "share": "disabled",
        "agent": {"aistack": {"mode": "primary", "prompt": SYSTEM_PROMPT, "tools": off}},
    }  # fmt: skip

    def configure(home: Path) -> None:
        _write(home / ".config" / "opencode" / "opencode.json", json.dumps(config))

    command = f'{shlex.quote(str(path))} run --agent aistack --format json "$(cat "$AISTACK_PROMPT_FILE")" </dev/null'
    flags = ("AUTOUPDATE", "MODELS_FETCH", "SHARE", "LSP_DOWNLOAD", "DEFAULT_PLUGINS", "CLAUDE_CODE", "EXTERNAL_SKILLS", "PROJECT_CONFIG")
    environ = {f"OPENCODE_DISABLE_{flag}": "1" for flag in flags}
    return Agent("opencode", command, missing, environ | llm.environ(), configure, opencode_tokens, LLM_UNREACHABLE)


def _qwen_code(settings: Settings, llm: Llm) -> Agent:
    path, missing = _npm_bin(settings, "qwen-code", "qwen")
    config = {
        "privacy": {"usageStatisticsEnabled": False}, "telemetry": {"enabled": False},
        "general": {"disableAutoUpdate": True, "disableUpdateNag": True}, "security": {"auth": {"selectedType": "openai"}},
    }  # fmt: skip

    def configure(home: Path) -> None:
        _write(home / ".qwen" / "settings.json", json.dumps(config))

    tools = "write_file read_file edit run_shell_command"
    command = (f"{shlex.quote(str(path))} --approval-mode yolo --auth-type openai --bare --output-format json "
               f"--system-prompt {shlex.quote(SYSTEM_PROMPT)} --core-tools {tools} <\"$AISTACK_PROMPT_FILE\"")  # fmt: skip
    return Agent("qwen-code", command, missing, llm.environ(), configure, qwen_tokens, LLM_UNREACHABLE)


def _presets(settings: Settings, llm: Llm) -> list[Agent]:
    """goose and autogpt: commands the user may change, available once their program is on PATH."""
    goose = settings.ralph_backend_goose_command
    autogpt = settings.ralph_backend_autogpt_command
    return [
        Agent("goose", goose, not_on_path(goose, "goose ships as a release binary: https://github.com/block/goose/releases"),
              llm.environ()),
        Agent("autogpt", autogpt, not_on_path(autogpt, "AutoGPT's classic CLI, from https://github.com/Significant-Gravitas/AutoGPT"),
              llm.environ()),
    ]  # fmt: skip


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, text)
    path.chmod(0o600)  # it may hold the stack's key


# --- token counts, where the agent reports them ---------------------------------------------------


def _json_objects(output: str) -> Iterator[dict[str, Any]]:
    """Every JSON object the agent printed, one per line or as one document (a list of them)."""
    for text in (output, *output.splitlines()):
        try:
            value = json.loads(text)
        except ValueError:
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                yield item
        if text is output:
            return


def continue_tokens(output: str, home: Path) -> TokenCounts:
    """`cn -p` prints none; the session it saves in its HOME (one per run) has the run's usage."""
    prompt = completion = 0
    for session in (home / ".continue" / "sessions").glob("*-*.json"):
        try:
            usage = json.loads(session.read_text()).get("usage") or {}
        except (OSError, ValueError, AttributeError):
            continue
        prompt, completion = prompt + int(usage.get("promptTokens") or 0), completion + int(usage.get("completionTokens") or 0)
    return TokenCounts(prompt=prompt, completion=completion)


def opencode_tokens(output: str, home: Path | None = None) -> TokenCounts:
    """`opencode run --format json`: one `step_finish` event per model call, with its tokens."""
    steps = [event["part"].get("tokens") or {} for event in _json_objects(output) if event.get("type") == "step_finish"]
    return TokenCounts(prompt=sum(int(t.get("input") or 0) for t in steps), completion=sum(int(t.get("output") or 0) for t in steps))


def qwen_tokens(output: str, home: Path | None = None) -> TokenCounts:
    """`qwen --output-format json`: the `result` message carries the session's usage."""
    usage = next((m.get("usage") or {} for m in _json_objects(output) if m.get("type") == "result"), {})
    return TokenCounts(prompt=int(usage.get("input_tokens") or 0), completion=int(usage.get("output_tokens") or 0))
