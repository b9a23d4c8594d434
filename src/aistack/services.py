"""The stack's services: the one table that start order, dependencies, ports, health checks,
`aistack serve` and the containers' settings are all derived from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Service:
    name: str
    entry_module: str  # whose `run(settings)` `aistack serve NAME` calls
    depends_on: tuple[str, ...]  # the services it calls, checked before it serves
    start_timeout: float  # seconds `up`/`deploy` wait for /health to turn 200
    user_facing: bool = False  # a container publishes its port on the host's 127.0.0.1
    uses_workspaces: bool = False  # a container mounts WORKSPACE_ROOT at the same path
    uses_cache: bool = False  # a container mounts AISTACK_CACHE_DIR (engine binary, models)
    health_path: str = "/health"

    @property
    def setting_prefix(self) -> str:
        """`LLAMA_CPP` for llama-cpp: its settings are `<prefix>_HOST` and `<prefix>_PORT`."""
        return self.name.upper().replace("-", "_")

    @property
    def command(self) -> list[str]:
        """Arguments after the interpreter: the foreground service command."""
        return ["-m", "aistack", "serve", self.name]

    def present_in(self, source_root: Path) -> bool:
        """Whether a source tree (the directory holding `aistack/`) contains this service."""
        module = source_root.joinpath(*self.entry_module.split("."))
        return module.with_suffix(".py").is_file() or (module / "__init__.py").is_file()


# In start order: every service comes after what it depends on. llama-cpp may load a model for a
# while, hence its long timeout.
SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        Service("llama-cpp", "aistack.llama_cpp.server", (), start_timeout=300, uses_cache=True),
        Service("aider-wrapper", "aistack.aider_wrapper.app", ("llama-cpp",), start_timeout=90, uses_workspaces=True),
        Service("ralph-wiggum", "aistack.ralph_wiggum.app", ("aider-wrapper",), start_timeout=90, user_facing=True,
                uses_workspaces=True),
        Service("dashboard", "aistack.dashboard.app", ("ralph-wiggum",), start_timeout=90, user_facing=True),
    )
}  # fmt: skip
NAMES = tuple(SERVICES)


def get(name: str) -> Service:
    try:
        return SERVICES[name]
    except KeyError:
        raise ValueError(f"unknown service {name!r}: allowed: {', '.join(SERVICES)}") from None


def installed_source_root() -> Path:
    """The directory holding the `aistack` package this command runs from."""
    import aistack

    return Path(aistack.__file__).resolve().parent.parent
