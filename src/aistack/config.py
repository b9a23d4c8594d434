"""The stack's one configuration: every service reads the same `.env` through `Settings`.

Precedence (highest first): real environment variables, the `.env` file, the defaults below.
The file is `--env-file F` if given, else `$AISTACK_ENV_FILE`, else `~/.config/aistack/.env`;
a missing file just means "defaults".
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import socket
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aistack import services
from aistack.contracts import MOST_ITERATIONS, IterationLimits, Strategy

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
    aistack_database_url: SecretStr | None = Field(
        default=None,
        description="The task store: empty for the SQLite file in the data dir, or postgresql://user:password@host:5432/db.",
    )

    # --- llama-cpp ----------------------------------------------------------------------------
    llama_cpp_host: str = Field(default="llama-cpp", min_length=1, description="Host name or IP address clients use to reach llama-cpp.")
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
    llama_cpp_urls: str = Field(
        default="",
        description="Comma-separated http(s)://host:port base URLs of OpenAI-compatible LLM servers (llama-server, vLLM, Ollama)"
        " to route tasks across, without credentials; empty: the one at LLAMA_CPP_HOST:LLAMA_CPP_PORT.",
    )

    # --- aider-wrapper ------------------------------------------------------------------------
    aider_wrapper_host: str = Field(
        default="aider-wrapper", min_length=1, description="Host name or IP address clients use to reach aider-wrapper."
    )
    aider_wrapper_port: int = Field(default=8099, ge=1, le=65535, description="Port of aider-wrapper.")
    aider_bin: Path | None = Field(default=None, description="aider executable (else the stack's own, else PATH).")
    aider_edit_format: str = Field(
        default="auto", pattern=r"^(auto|whole|diff|diff-fenced|udiff)$", description="auto picks per model (whole for small ones)."
    )
    aider_timeout_seconds: int = Field(default=600, ge=1, le=86400, description="Longest one aider run may take.")
    aider_max_parallel: int = Field(default=2, ge=1, le=64, description="Workspaces aider may run in at once.")

    # --- ralph-wiggum -------------------------------------------------------------------------
    ralph_wiggum_host: str = Field(
        default="ralph-wiggum", min_length=1, description="Host name or IP address clients use to reach ralph-wiggum."
    )
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
    ralph_strategy_keep_best: bool = Field(default=False, description="Undo an iteration that makes the check worse (strategy.keep_best).")
    ralph_strategy_feedback: str = Field(
        default="tail", pattern=r"^(tail|shaped)$", description="A failed check in the next prompt: its output's end, or its first failure."
    )
    ralph_strategy_diversity: bool = Field(default=False, description="Retries sample at rising temperatures, each with its own seed.")
    ralph_strategy_context: str = Field(
        default="carried", pattern=r"^(carried|fresh)$", description="carried: a prompt quotes a reply that got nowhere; fresh: not."
    )
    ralph_strategy_candidates: int = Field(default=1, ge=1, le=2, description="Attempts per iteration, in worktrees of their own.")
    ralph_strategy_restart: bool = Field(default=False, description="A retry after a failed check starts from the task's base files.")
    ralph_learn_interval_seconds: int = Field(
        default=0, ge=0, le=604800, description="How often ralph-wiggum turns the tasks' outcomes into proposals; 0 = only on demand."
    )
    ralph_learn_min_outcomes: int = Field(
        default=10,
        ge=4,
        le=100000,
        description="Finished tasks a learned proposal needs, and failed ones that ran on past a lowered limit, at the least.",
    )
    ralph_learned_limits_after: int = Field(
        default=50, ge=0, le=1_000_000, description="Finished tasks after which a limit comes from similar past ones; 0 = classes only."
    )
    ralph_iteration_timeout_seconds: int = Field(default=900, ge=1, le=86400, description="Longest one iteration may take.")
    ralph_check_timeout_seconds: int = Field(default=300, ge=1, le=86400, description="Longest a check command may take.")
    ralph_git_credentials_file: Path | None = Field(
        default=None, description="Credentials for task repositories on git remotes: a git-credential-store file "
                                  "(https://user:token@host per line; else git's own configuration); hidden from agents.",
    )  # fmt: skip
    ralph_remote_file_roots: str = Field(
        default="", description="Comma-separated directories that file:// task repositories may lie in, besides WORKSPACE_ROOT."
    )
    ralph_worker_id: str = Field(
        default="", max_length=128, description="This worker's name in the task leases; empty: hostname-pid (one per process)."
    )
    ralph_lease_seconds: int = Field(
        default=15, ge=3, le=3600, description="A task whose worker has not renewed its lease this long is taken over by another."
    )

    # --- per backend (ralph_wiggum.backends) ------------------------------------------------------
    ralph_backend_max_iterations: str = Field(
        default="",
        description="Iteration limit per backend for tasks that name none, instead of the adaptive choice: "
        "backend=N,… with N from 1 to 10000, e.g. opencode=5,qwen-code=8.",
    )
    ralph_backend_timeout_seconds: str = Field(
        default="",
        description="Longest iteration per backend, instead of RALPH_ITERATION_TIMEOUT_SECONDS: "
        "backend=seconds,… from 1 to 86400, e.g. aider=600,continue=1800.",
    )
    ralph_backend_goose_command: str = Field(
        default='GOOSE_PROVIDER=openai GOOSE_MODEL="$AISTACK_LLM_MODEL" OPENAI_HOST="$AISTACK_LLM_URL" '
        'goose run --no-session -i "$AISTACK_PROMPT_FILE"',
        description="How the goose backend runs goose (available once goose is on PATH).",
    )
    ralph_backend_autogpt_command: str = Field(
        default='autogpt run --continuous --continuous-limit 20 --skip-news --skip-reprompt --ai-task "$(cat "$AISTACK_PROMPT_FILE")"',
        description="How the autogpt backend runs AutoGPT's CLI (available once autogpt is on PATH).",
    )
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
    dashboard_host: str = Field(
        default="dashboard", min_length=1, description="Host name or IP address clients use to reach the dashboard."
    )
    dashboard_port: int = Field(default=8090, ge=1, le=65535, description="Port of the dashboard.")
    dashboard_session_idle_minutes: int = Field(default=30, ge=1, le=10080, description="A login ends after this long without use.")
    dashboard_session_max_hours: int = Field(default=12, ge=1, le=720, description="A login ends this long after it began, used or not.")

    @field_validator("aistack_data_dir", "aistack_cache_dir", "workspace_root", mode="after")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @field_validator(
        "llama_cpp_model_file", "llama_cpp_server_bin", "aider_bin", "ralph_git_credentials_file", "ralph_mini_swe_agent_bin", mode="after"
    )
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser().absolute() if value else None

    @field_validator("llama_cpp_host", "aider_wrapper_host", "ralph_wiggum_host", "dashboard_host", mode="after")
    @classmethod
    def _host(cls, value: str) -> str:
        # refused here, not as a traceback of the first client that builds a URL from it
        bracketed = value.startswith("[") and value.endswith("]")  # only an IPv6 address is written so
        if not (_ip_version(value[1:-1]) == 6 if bracketed else _HOST_NAME.fullmatch(value) or _ip_version(value)):
            raise ValueError("not a host name or IP address")
        return value

    @field_validator("llama_cpp_cmake_args", mode="after")
    @classmethod
    def _shell_words(cls, value: str) -> str:
        shlex.split(value)  # unbalanced quotes fail here, with the field named, not in the build
        return value

    @field_validator("ralph_command_backend", "ralph_wiggum_api_key", "ralph_git_credentials_file", "aistack_database_url", mode="before")
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

    @field_validator("llama_cpp_urls", mode="after")
    @classmethod
    def _base_urls(cls, value: str) -> str:
        urls = [_base_url(part) for part in value.split(",") if part.strip()]
        return ",".join(dict.fromkeys(urls))  # each server once, in the order given

    @field_validator("aistack_database_url", mode="after")
    @classmethod
    def _database(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            database_url(value.get_secret_value())  # a URL no store takes fails here, at start
        return value

    @field_validator("ralph_backend_max_iterations", "ralph_backend_timeout_seconds", mode="after")
    @classmethod
    def _per_backend(cls, value: str, info: ValidationInfo) -> str:
        highest = MOST_ITERATIONS if info.field_name == "ralph_backend_max_iterations" else 86400
        return ",".join(f"{name}={number}" for name, number in per_backend(value, highest).items())

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

    @property
    def llm_urls(self) -> tuple[str, ...]:
        """Base URLs (no `/v1`) of the LLM servers runs are routed across: LLAMA_CPP_URLS, else llama-cpp's."""
        return tuple(self.llama_cpp_urls.split(",")) if self.llama_cpp_urls else (self.url("llama-cpp"),)

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

    def strategy(self) -> Strategy:
        """The loop's strategy for a task that chooses none (RALPH_STRATEGY_*)."""
        prefix = "ralph_strategy_"
        return Strategy.model_validate({name: getattr(self, prefix + name) for name in Strategy.model_fields})

    def iteration_limits(self) -> IterationLimits:
        """The loop's limits that may change while the orchestrator runs, as the one model of them."""
        return IterationLimits.model_validate(self, from_attributes=True)

    def backend_max_iterations(self, backend: str) -> int | None:
        """RALPH_BACKEND_MAX_ITERATIONS for this backend, if it names one."""
        return per_backend(self.ralph_backend_max_iterations).get(backend)

    def iteration_timeout(self, backend: str) -> int:
        """Longest one iteration of this backend may take (RALPH_BACKEND_TIMEOUT_SECONDS, else the default)."""
        return per_backend(self.ralph_backend_timeout_seconds).get(backend, self.ralph_iteration_timeout_seconds)

    @property
    def db_path(self) -> Path:
        return self.aistack_data_dir / "aistack.db"

    @property
    def database_url(self) -> str:
        """The store's SQLAlchemy URL, password in clear (for the engine only; never print it)."""
        if self.aistack_database_url is None:
            return f"sqlite:///{self.db_path}"
        return database_url(self.aistack_database_url.get_secret_value())

    @property
    def database_shown(self) -> str:
        """The store's URL as it may be shown: the password masked."""
        from sqlalchemy import make_url

        return make_url(self.database_url).render_as_string(hide_password=True)

    @property
    def worker_id(self) -> str:
        return self.ralph_worker_id or f"{socket.gethostname()}-{os.getpid()}"

    @property
    def worktrees_dir(self) -> Path:
        return self.aistack_data_dir / "worktrees"

    @property
    def repositories_dir(self) -> Path:
        """A bare mirror of each git remote that tasks name."""
        return self.aistack_data_dir / "repositories"

    @property
    def remote_file_roots(self) -> tuple[Path, ...]:
        """Where `file://` task repositories may lie."""
        extra = (Path(root.strip()).expanduser().absolute() for root in self.ralph_remote_file_roots.split(",") if root.strip())
        return (self.workspace_root, *extra)

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
_HOST_NAME = re.compile(r"(?:[A-Za-z0-9_-]{1,63}\.)*[A-Za-z0-9_-]{1,63}\.?")
_BACKEND_NUMBER = re.compile(r"([a-z][a-z0-9_-]*)=([0-9]+)")


def per_backend(value: str, highest: int = 10**9) -> dict[str, int]:
    """`name=N,name=N` (a per-backend setting) as a mapping; ValueError names the bad item."""
    numbers: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        match = _BACKEND_NUMBER.fullmatch(item)
        if match is None or not 1 <= int(match.group(2)) <= highest:
            raise ValueError(f"{item!r} is not backend=N with N from 1 to {highest}")
        numbers[match.group(1)] = int(match.group(2))
    return numbers


_OWN_VARIABLES = frozenset({name.upper() for name in Settings.model_fields} | {ENV_FILE_VARIABLE})


def _base_url(text: str) -> str:
    """One LLM server's base URL, normalised: no trailing `/` or `/v1` (the stack adds `/v1`)."""
    url = text.strip().rstrip("/").removesuffix("/v1")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port that is not a number from 0 to 65535)
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not a URL") from None
    # Credentials in a URL would end up in logs and in /health: the key goes in RALPH_WIGGUM_API_KEY.
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(f"{text.strip()!r} is not an http(s)://host:port URL")
    return url


_DRIVERS = {
    "sqlite": "sqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
}


def database_url(url: str) -> str:
    """A database URL as SQLAlchemy takes it: a plain libpq URL (postgresql://user:pw@host/db, as
    operators and managed databases write it) goes through psycopg 3. The errors never quote the
    URL: it may hold a password."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ValueError("not a database URL; allowed: sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DATABASE") from None
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(f"the database {parsed.drivername!r} is not supported; allowed: sqlite, postgresql")
    if driver == "sqlite" and not parsed.database:
        raise ValueError("a SQLite URL names a file: sqlite:///PATH")
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def _ip_version(text: str) -> int:
    """4 or 6 for an IP address, 0 for anything else."""
    try:
        return ipaddress.ip_address(text).version
    except ValueError:
        return 0


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
    value = _CREDENTIALS.sub("//********@", value)  # nor a password in a URL
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


SECRET_FIELDS = frozenset({"ralph_wiggum_api_key", "aistack_database_url"})
_CREDENTIALS = re.compile(r"//[^/@\s]*@")


def effective_items(settings: Settings) -> list[tuple[str, str, str]]:
    """(VARIABLE, shown value, description) for every setting, secrets masked."""
    rows = []
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if name == "aistack_database_url":
            shown = settings.database_shown if value else ""
        elif name in SECRET_FIELDS:
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
