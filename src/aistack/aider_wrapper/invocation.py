"""aider's command line, environment and model files, all derived from Settings.

aider is told everything explicitly (model settings and metadata files, history files, no
commits, no update check, no analytics, no shell commands, no URL fetching), so it neither warns
nor guesses, touches the network only to reach llama-server, and writes nothing into the
workspace but the model's edits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from aistack import agentenv
from aistack.config import Settings
from aistack.contracts import Sampling
from aistack.files import atomic_write
from aistack.paths import find_program

# Small local models manage aider's `whole` format (return whole files) and fail its `diff`
# format (search/replace blocks), so `auto` means `whole`.
AUTO_EDIT_FORMAT = "whole"
# Below this context a repo map costs more of the window than it helps a small model; aider
# still adds files the model mentions by name. (A repo map would also leave a tags cache in the
# workspace, which the runner removes again.)
REPO_MAP_MIN_CONTEXT = 16384
REPO_MAP_TOKENS = 1024
MAX_OUTPUT_TOKENS = 4096
# What aider sends llama-server when the stack has no API key (litellm insists on one).
DUMMY_API_KEY = "local-no-key"


def edit_format(settings: Settings) -> str:
    return AUTO_EDIT_FORMAT if settings.aider_edit_format == "auto" else settings.aider_edit_format


def model_name(settings: Settings) -> str:
    return f"openai/{settings.llama_cpp_model_alias}"


def output_tokens(settings: Settings) -> int:
    """The most tokens one reply may have: a quarter of the context, at most MAX_OUTPUT_TOKENS."""
    return min(MAX_OUTPUT_TOKENS, settings.llama_cpp_context_size // 4)


def map_tokens(settings: Settings) -> int:
    return REPO_MAP_TOKENS if settings.llama_cpp_context_size >= REPO_MAP_MIN_CONTEXT else 0


def api_base(llm_url: str) -> str:
    """The OpenAI API of an LLM server at base URL `llm_url` (one of `Settings.llm_urls`)."""
    return llm_url + "/v1"


@dataclass(frozen=True)
class AiderFiles:
    """Files the wrapper writes once for every run: aider's view of the model, and an empty .env
    so aider does not read a `.env` from the workspace."""

    home: Path  # HOME for aider (its ~/.aider caches and settings land here)
    model_settings: Path
    model_metadata: Path
    env_file: Path
    runs: Path  # one directory per run: message, histories, analytics log


def write_model_files(settings: Settings) -> AiderFiles:
    """(Re)write the model settings YAML and metadata JSON under `<data dir>/aider`."""
    base = settings.aistack_data_dir / "aider"
    files = AiderFiles(
        home=base / "home",
        model_settings=base / "model-settings.yml",
        model_metadata=base / "model-metadata.json",
        env_file=base / "empty.env",
        runs=base / "runs",
    )
    for folder in (files.home, files.runs):
        folder.mkdir(parents=True, exist_ok=True)
    name, out = model_name(settings), output_tokens(settings)
    metadata = {
        name: {
            "max_tokens": out,
            "max_input_tokens": settings.llama_cpp_context_size - out,
            "max_output_tokens": out,
            "input_cost_per_token": 0.0,
            "output_cost_per_token": 0.0,
            "litellm_provider": "openai",
            "mode": "chat",
        }
    }
    atomic_write(files.model_settings, _model_settings(settings, None))
    atomic_write(files.model_metadata, json.dumps(metadata, indent=2) + "\n")
    atomic_write(files.env_file, "# intentionally empty: aider must not read a .env from the workspace\n")
    return files


def write_run_model_settings(settings: Settings, run: RunFiles, sampling: Sampling) -> Path:
    """The model settings of one run that samples at its own temperature and seed (a retry with
    diversity), in the run's folder; every other run reads the shared file."""
    path = run.folder / "model-settings.yml"
    atomic_write(path, _model_settings(settings, sampling))
    return path


def _model_settings(settings: Settings, sampling: Sampling | None) -> str:
    """aider's model settings file. With `sampling`, aider sends that temperature (a number in
    `use_temperature`; `true` means 0) and the seed (in `extra_params`, passed on to llama-server)."""
    name, out = model_name(settings), output_tokens(settings)
    extra: dict[str, int] = {"max_tokens": out}
    if sampling is not None:
        extra["seed"] = sampling.seed
    # JSON is YAML: aider reads this list of model settings with yaml.safe_load.
    model_settings = [
        {
            "name": name,
            "edit_format": edit_format(settings),
            "weak_model_name": name,  # no second model: summaries and commit messages use the same
            "editor_model_name": name,
            "editor_edit_format": "editor-whole",
            "use_repo_map": map_tokens(settings) > 0,
            "lazy": False,
            "examples_as_sys_msg": False,
            "cache_control": False,
            "caches_by_default": False,
            "use_system_prompt": True,
            "use_temperature": sampling.temperature if sampling is not None else True,
            "extra_params": extra,
        }
    ]
    return json.dumps(model_settings, indent=2) + "\n"


def find_aider(settings: Settings) -> Path | None:
    """AIDER_BIN, else the stack's own (`.venv/aider`), else `aider` on PATH."""
    return find_program(settings.aider_bin, "aider", "aider")


def auto_test_command(test_command: str) -> str:
    """The test command as aider runs it (`/bin/sh -c`, in aider's environment), without the
    COLUMNS that keeps aider's own lines whole: under it pytest draws its rules 10,000 characters
    wide, and each failing run's output, which aider shows the model, would fill its context."""
    return f"unset COLUMNS; {test_command}"


def aider_env(settings: Settings, files: AiderFiles) -> dict[str, str]:
    """The environment aider runs in: the agents' allow-list (`agentenv`), its own HOME, and what
    it needs to run plainly. No AIDER_* setting of ours reaches it (aider reads AIDER_<OPTION>
    variables as options). Its one key is the stack's (a dummy one without it), in OPENAI_API_KEY
    and not in argv: llama-server requires it when one is set."""
    env = agentenv.environ(settings, files.home)
    llm_hosts = [urlsplit(url).hostname or "" for url in settings.llm_urls]
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY") or env.get("no_proxy"), *dict.fromkeys(llm_hosts)]))
    env.update(
        TERM="dumb",  # plain output, no prompt_toolkit
        NO_COLOR="1",
        COLUMNS="10000",  # no wrapped lines: error lines are read one per line (not the test command's: auto_test_command)
        PYTHONUNBUFFERED="1",  # output arrives as it is printed, so fatal errors are seen at once
        PYTHONIOENCODING="utf-8",
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # litellm's bundled price list, not a download
        # llama-server requires the stack's key when one is set; in the environment, not in argv
        # where `ps` would show it
        OPENAI_API_KEY=settings.api_key or DUMMY_API_KEY,
        NO_PROXY=no_proxy,  # a proxy the user passes through is never used for the LLM servers
        no_proxy=no_proxy,
    )
    return env


@dataclass(frozen=True)
class RunFiles:
    """Per-run files, outside the workspace."""

    folder: Path

    @property
    def message(self) -> Path:
        return self.folder / "message.txt"

    @property
    def analytics(self) -> Path:
        return self.folder / "analytics.jsonl"


def aider_command(
    settings: Settings,
    aider: Path,
    files: AiderFiles,
    run: RunFiles,
    edit: list[str],
    read_only: list[str],
    timeout_seconds: int,
    llm_url: str,
    test_command: str | None = None,
    model_settings: Path | None = None,
) -> list[str]:
    """The full command line, for the LLM server at `llm_url`. The prompt goes in a file
    (`--message-file`), never in argv. With a `test_command`, aider runs it after its edits and,
    while it fails, shows the model its output and asks again (`--auto-test`, at most aider's 3
    reflections); it runs in aider's sandbox. `model_settings`: the run's own file
    (`write_run_model_settings`) instead of the shared one."""
    folder = run.folder
    cmd = [
        str(aider),
        "--model", model_name(settings),
        "--openai-api-base", api_base(llm_url),
        "--model-settings-file", str(model_settings or files.model_settings),
        "--model-metadata-file", str(files.model_metadata),
        "--edit-format", edit_format(settings),
        "--map-tokens", str(map_tokens(settings)),
        "--env-file", str(files.env_file),
        # non-interactive; the orchestrator makes the commits
        "--yes-always", "--no-auto-commits", "--no-dirty-commits",
        # leave .gitignore alone, write history outside the workspace
        "--no-gitignore",
        "--input-history-file", str(folder / "input.history"),
        "--chat-history-file", str(folder / "chat.history.md"),
        "--llm-history-file", str(folder / "llm.history"),
        # no network but the LLM; the analytics log stays local and carries the token usage
        "--no-check-update", "--no-show-release-notes", "--analytics-disable",
        "--analytics-log", str(run.analytics),
        "--no-detect-urls",
        # with --yes-always aider would run shell commands the model suggests
        "--no-suggest-shell-commands",
        # plain, complete replies (non-streamed replies carry the server's exact token usage)
        "--no-pretty", "--no-stream", "--no-fancy-input", "--no-show-model-warnings",
        "--encoding", "utf-8",
        "--timeout", str(timeout_seconds),
        "--message-file", str(run.message),
    ]  # fmt: skip
    if test_command:
        cmd += ["--auto-test", "--test-cmd", auto_test_command(test_command)]
    for path in read_only:
        cmd += ["--read", path]
    return cmd + edit
