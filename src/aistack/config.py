"""The stack's one configuration: every service reads the same `.env` through `Settings`.

Precedence (highest first): real environment variables, the `.env` file, the defaults below.
The file is `--env-file F` if given, else `$AISTACK_ENV_FILE`, else `~/.config/aistack/.env`;
a missing file just means "defaults".
"""

from __future__ import annotations

import os
import re
import shlex
import socket
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aistack import services
from aistack.contracts import MOST_ITERATIONS, IterationLimits

ENV_FILE_VARIABLE = "AISTACK_ENV_FILE"


def _xdg(var: str, fallback: str) -> Path:
    base = os.environ.get(var)
    return Path(base) if base else Path.home() / fallback


def default_env_file() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / "aistack" / ".env"


class ConfigError(Exception):
    """A setting has a value outside what is allowed. The message is one line for the user."""


class Model(str, Enum):
    """Models the stack can assemble offline from packages (see `aistack.llama_cpp.models`)."""

    qwen_1_5b = "qwen2.5-coder-1.5b"
    qwen_0_5b = "qwen2.5-coder-0.5b"
    smollm2_135m = "smollm2-135m"


class Settings(BaseSettings):
    """Every setting of the stack. Names match the `.env` variables (case-insensitive)."""

    model_config = SettingsConfigDict(extra="ignore", env_file_encoding="utf-8", validate_default=True)

    # --- shared -----------------------------------------------------------------------------
    aistack_data_dir: Path = Field(
        default_factory=lambda: _xdg("XDG_DATA_HOME", ".local/share") / "aistack",
        description="Database, task worktrees, pid files and logs.",
    )
    aistack_cache_dir: Path = Field(
        default_factory=lambda: _xdg("XDG_CACHE_HOME", ".cache") / "aistack",
        description="Assembled models and built llama-server binaries (shared by every data dir).",
    )
    workspace_root: Path = Field(
        default_factory=lambda: Path.home() / "aistack" / "workspaces",
        description="Every task workspace must lie inside this directory.",
    )
    aistack_bind_address: str = Field(
        default="127.0.0.1",
        description="Address the services listen on. Anything but loopback requires RALPH_WIGGUM_API_KEY.",
    )
    log_level: str = Field(default="info", pattern=r"^(debug|info|warning|error)$", description="debug, info, warning or error.")
    startup_dependency_check: bool = Field(default=True, description="Check a service's dependencies before it serves.")
    startup_timeout_seconds: int = Field(default=30, ge=1, le=3600, description="How long the pre-flight checks wait.")
    startup_fail_fast: bool = Field(default=True, description="Exit when a dependency stays unreachable (false: serve degraded).")

    # --- llama-cpp ----------------------------------------------------------------------------
    llama_cpp_host: str = Field(default="llama-cpp", min_length=1, description="Host clients use to reach llama-cpp.")
    llama_cpp_port: int = Field(default=8080, ge=1, le=65535, description="Port of llama-cpp.")
    llama_cpp_model: Model = Field(default=Model.qwen_1_5b, description="Bundled model to serve.")
    llama_cpp_model_file: Path | None = Field(default=None, description="A GGUF file to serve instead of the bundled model.")
    llama_cpp_model_alias: str = Field(default="local-coder", min_length=1, description="Model name the API serves.")
    llama_cpp_server_bin: Path | None = Field(default=None, description="llama-server binary (else PATH, else built).")
    llama_cpp_build: str = Field(
        default="auto",
        pattern=r"^(auto|portable)$",
        description="auto: build for this CPU's extensions (never AMX), portable (AVX2 at most) if that crashes; portable: AVX2 at most.",
    )
    llama_cpp_cmake_args: str = Field(
        default="", description="Extra cmake flags for the llama-server build, e.g. -DGGML_CUDA=ON (they change the cache key)."
    )
    llama_cpp_context_size: int = Field(default=8192, ge=512, le=131072, description="Context tokens per slot.")
    llama_cpp_threads: int = Field(default=0, ge=0, le=512, description="CPU threads; 0 = all cores.")
    llama_cpp_parallel: int = Field(default=2, ge=1, le=64, description="Parallel slots (continuous batching).")
    llama_cpp_cache_reuse: int = Field(default=256, ge=0, le=65536, description="Min chunk size for KV cache reuse; 0 = off.")
    llama_cpp_cache_ram: int = Field(
        default=2048, ge=-1, le=1_048_576, description="MiB of host memory for saved prompt caches; 0 = off, -1 = no limit."
    )
    llama_cpp_metrics: bool = Field(default=True, description="Serve Prometheus metrics at /metrics.")

    # --- aider-wrapper ------------------------------------------------------------------------
    aider_wrapper_host: str = Field(default="aider-wrapper", min_length=1, description="Host clients use to reach aider-wrapper.")
    aider_wrapper_port: int = Field(default=8099, ge=1, le=65535, description="Port of aider-wrapper.")
    aider_bin: Path | None = Field(default=None, description="aider executable (else the stack's own, else PATH).")
    aider_edit_format: str = Field(
        default="auto", pattern=r"^(auto|whole|diff|diff-fenced|udiff)$", description="auto picks per model (whole for small ones)."
    )
    aider_timeout_seconds: int = Field(default=600, ge=1, le=86400, description="Longest one aider run may take.")
    aider_max_parallel: int = Field(default=2, ge=1, le=64, description="Workspaces aider may run in at once.")

    # --- ralph-wiggum -------------------------------------------------------------------------
    ralph_wiggum_host: str = Field(default="ralph-wiggum", min_length=1, description="Host clients use to reach ralph-wiggum.")
    ralph_wiggum_port: int = Field(default=8098, ge=1, le=65535, description="Port of ralph-wiggum.")
    ralph_wiggum_api_key: SecretStr | None = Field(
        default=None, description="Required by every endpoint but /health when set; printable ASCII (it is sent in a header)."
    )
    ralph_loop_enabled: bool = Field(default=True, description="false: accept tasks but do not run them.")
    ralph_max_iterations_default: int = Field(default=20, ge=1, le=MOST_ITERATIONS, description="Limit for default-class tasks.")
    ralph_max_iterations_simple: int = Field(default=10, ge=1, le=MOST_ITERATIONS, description="Limit for simple tasks.")
    ralph_max_iterations_complex: int = Field(default=50, ge=1, le=MOST_ITERATIONS, description="Limit for complex tasks.")
    ralph_adaptive_iterations: bool = Field(default=True, description="Pick the limit from the prompt's complexity.")
    ralph_max_iterations_cap: int = Field(default=100, ge=1, le=MOST_ITERATIONS, description="No task may ask for more.")
    ralph_max_concurrent_tasks: int = Field(default=2, ge=1, le=64, description="Tasks running at once; the rest queue.")
    ralph_transient_retry_seconds: int = Field(default=120, ge=0, le=86400, description="How long to retry an unreachable backend.")
    ralph_stuck_iterations: int = Field(default=3, ge=0, le=1000, description="Same output, no change this many times = stuck; 0 = off.")
    ralph_command_backend: str | None = Field(default=None, description="Shell command the `command` backend runs.")
    ralph_iteration_timeout_seconds: int = Field(default=900, ge=1, le=86400, description="Longest one iteration may take.")
    ralph_check_timeout_seconds: int = Field(default=300, ge=1, le=86400, description="Longest a check command may take.")
    ralph_langchain_max_steps: int = Field(
        default=16, ge=1, le=1000, description="Most model calls the langchain agent makes in one iteration."
    )
    ralph_mini_swe_agent_bin: Path | None = Field(default=None, description="mini-swe-agent's `mini` (else the stack's own, else PATH).")
    ralph_mini_swe_agent_step_limit: int = Field(
        default=16, ge=1, le=1000, description="Most model calls mini-swe-agent makes in one iteration."
    )

    # --- agents (the command backend's agent, check commands, aider) ---------------------------
    ralph_sandbox: str = Field(
        default="auto", pattern=r"^(auto|bwrap|off)$", description="auto: run agents and checks under bubblewrap when it works here."
    )
    ralph_agent_env_passthrough: str = Field(
        default="",
        description="Comma-separated names of more variables agents and checks get; never the stack's own (settings, AISTACK_ENV_FILE).",
    )
    ralph_agent_cpu_seconds: int = Field(default=3600, ge=0, le=10**6, description="CPU seconds per agent process; 0 = no limit.")
    ralph_agent_memory_mb: int = Field(default=8192, ge=0, le=2**30, description="MiB of heap per agent process; 0 = no limit.")
    ralph_agent_max_processes: int = Field(
        default=4096,
        ge=0,
        le=2**22,
        description="Most processes and threads the service's user may have for an agent to start one more (root is exempt); 0 = no limit.",
    )
    ralph_agent_file_size_mb: int = Field(default=1024, ge=0, le=2**30, description="Largest file an agent may write, MiB; 0 = no limit.")

    # --- dashboard ----------------------------------------------------------------------------
    dashboard_host: str = Field(default="dashboard", min_length=1, description="Host clients use to reach the dashboard.")
    dashboard_port: int = Field(default=8090, ge=1, le=65535, description="Port of the dashboard.")
    dashboard_session_idle_minutes: int = Field(default=30, ge=1, le=10080, description="A login ends after this long without use.")
    dashboard_session_max_hours: int = Field(default=12, ge=1, le=720, description="A login ends this long after it began, used or not.")

    @field_validator("aistack_data_dir", "aistack_cache_dir", "workspace_root", mode="after")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @field_validator("llama_cpp_model_file", "llama_cpp_server_bin", "aider_bin", "ralph_mini_swe_agent_bin", mode="after")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser().absolute() if value else None

    @field_validator("llama_cpp_cmake_args", mode="after")
    @classmethod
    def _shell_words(cls, value: str) -> str:
        shlex.split(value)  # unbalanced quotes fail here, with the field named, not in the build
        return value

    @field_validator("ralph_command_backend", "ralph_wiggum_api_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("ralph_wiggum_api_key", mode="after")
    @classmethod
    def _header_value(cls, value: SecretStr | None) -> SecretStr | None:
        # A key travels in an HTTP header: printable ASCII, where a space at either end is cut
        # off. Refused here, not at the first request a service makes with it.
        key = value.get_secret_value() if value is not None else ""
        if not all(" " <= ch <= "~" for ch in key) or key != key.strip():
            raise ValueError("an API key is printable ASCII, without spaces at either end")
        return value

    @field_validator("ralph_agent_env_passthrough", mode="after")
    @classmethod
    def _variable_names(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",") if name.strip()]
        for name in names:
            if not _VARIABLE.fullmatch(name) or name.upper() in _OWN_VARIABLES:  # the stack's own never reach an agent
                raise ValueError(f"{name!r} may not be passed to agents")
        return ",".join(names)

    # --- derived ------------------------------------------------------------------------------
    def url(self, service: str) -> str:
        """Base URL clients use for a service, e.g. `url("llama-cpp")` → `http://127.0.0.1:8080`."""
        key = service.replace("-", "_")
        host = resolve_host(getattr(self, f"{key}_host"))
        port = getattr(self, f"{key}_port")
        return f"http://{_bracket(host)}:{port}"

    def port(self, service: str) -> int:
        return int(getattr(self, f"{service.replace('-', '_')}_port"))

    def health_url(self, service: str) -> str:
        return self.url(service) + services.get(service).health_path

    def health_timeout(self, service: str) -> float:
        """Seconds a starting service has to answer /health 200 (its own start time plus STARTUP_TIMEOUT_SECONDS)."""
        return services.get(service).start_timeout + self.startup_timeout_seconds

    @property
    def api_key(self) -> str | None:
        """RALPH_WIGGUM_API_KEY in clear, for the code that sends or checks it (never print it)."""
        return self.ralph_wiggum_api_key.get_secret_value() if self.ralph_wiggum_api_key else None

    def iteration_limits(self) -> IterationLimits:
        """The loop's limits that may change while the orchestrator runs, as the one model of them."""
        return IterationLimits.model_validate(self, from_attributes=True)

    @property
    def db_path(self) -> Path:
        return self.aistack_data_dir / "aistack.db"

    @property
    def worktrees_dir(self) -> Path:
        return self.aistack_data_dir / "worktrees"

    @property
    def logs_dir(self) -> Path:
        return self.aistack_data_dir / "logs"

    @property
    def agents_dir(self) -> Path:
        """Each task's files outside its worktree: the agent's home, the prompt."""
        return self.aistack_data_dir / "agents"

    @property
    def agent_env_passthrough(self) -> tuple[str, ...]:
        return tuple(filter(None, self.ralph_agent_env_passthrough.split(",")))


_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OWN_VARIABLES = frozenset({name.upper() for name in Settings.model_fields} | {ENV_FILE_VARIABLE})


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


_RESOLVED: set[str] = set()


def resolve_host(host: str) -> str:
    """The host to dial. The services are reached by their names on a container network; a name
    that does not resolve means no such network exists, so the service runs on this machine: use
    loopback. Any other host is kept. Only a name that resolved is remembered: a container that
    was down at our start may come up."""
    if host not in services.SERVICES or host in _RESOLVED:
        return host
    try:
        socket.getaddrinfo(host, None)
    except OSError:
        return "127.0.0.1"
    _RESOLVED.add(host)
    return host


def resolve_env_file(env_file: Path | str | None = None) -> Path:
    if env_file:
        return Path(env_file).expanduser()
    if os.environ.get(ENV_FILE_VARIABLE):
        return Path(os.environ[ENV_FILE_VARIABLE]).expanduser()
    return default_env_file()


def load_settings(env_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Read and validate the configuration; a bad value raises `ConfigError` with one line."""
    path = resolve_env_file(env_file)
    if env_file and not path.is_file():
        raise ConfigError(f"env file {path} does not exist")
    try:
        return Settings(_env_file=path if path.is_file() else None, **overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, path)) from None


def describe_validation_error(exc: ValidationError, source: Path | None = None) -> str:
    """One line: the first bad variable, its value, and what is allowed."""
    err = exc.errors()[0]
    name = str(err["loc"][0]) if err["loc"] else "?"
    value = "********" if name in SECRET_FIELDS else repr(err.get("input"))  # a secret is never shown, not even a wrong one
    where = f" (in {source})" if source and source.is_file() else ""
    return f"invalid setting {name.upper()}={value}: {allowed(name)}{where}"


def allowed(name: str) -> str:
    """Human description of what a setting accepts, derived from its declared type and bounds."""
    field = Settings.model_fields.get(name)
    if field is None:
        return "unknown setting"
    lo: int | None = None
    hi: int | None = None
    pattern: str | None = None
    for meta in field.metadata:
        lo = getattr(meta, "ge", None) if getattr(meta, "ge", None) is not None else lo
        hi = getattr(meta, "le", None) if getattr(meta, "le", None) is not None else hi
        pattern = getattr(meta, "pattern", None) or pattern
    annotation = field.annotation
    if annotation is bool:
        return "allowed: true or false"
    if annotation is int:
        return f"allowed: a whole number from {lo} to {hi}" if lo is not None else "allowed: a whole number"
    if annotation is Model:
        return "allowed: " + ", ".join(m.value for m in Model)
    if pattern:
        return "allowed: " + pattern.strip("^$()").replace("|", ", ")
    return f"allowed: {field.description or 'a value of the right type'}"


SECRET_FIELDS = frozenset({"ralph_wiggum_api_key"})


def effective_items(settings: Settings) -> list[tuple[str, str, str]]:
    """(VARIABLE, shown value, description) for every setting, secrets masked."""
    rows = []
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if name in SECRET_FIELDS:
            shown = "********" if value else ""
        elif isinstance(value, Enum):
            shown = str(value.value)
        elif isinstance(value, bool):
            shown = str(value).lower()
        else:
            shown = "" if value is None else str(value)
        rows.append((name.upper(), shown, field.description or ""))
    return rows


def env_template() -> str:
    """A commented `.env` with every setting at its default, for a local (non-container) run."""
    lines = [
        "# aistack configuration: one file for every service.",
        "# Real environment variables override these values. Lines starting with # keep the default.",
        "",
    ]
    for name, field in Settings.model_fields.items():
        value = field.get_default(call_default_factory=True)
        if isinstance(value, Enum):
            value = value.value
        elif isinstance(value, bool):
            value = str(value).lower()
        elif value is None:
            value = ""
        lines.append(f"# {field.description} ({allowed(name).removeprefix('allowed: ')})")
        lines.append(f"# {name.upper()}={value}")
    return "\n".join(lines) + "\n"
