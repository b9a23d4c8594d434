"""The stack's services: what each is called, what it needs, how it starts and how it shows health."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aistack.preflight import DEPENDENCIES


@dataclass(frozen=True)
class Service:
    name: str
    entry_module: str  # the module whose `run(settings)` `aistack serve NAME` calls
    start_timeout: float  # seconds `up`/`deploy` wait for /health to turn 200
    health_path: str = "/health"

    @property
    def command(self) -> list[str]:
        """Arguments after the interpreter: the foreground service command."""
        return ["-m", "aistack", "serve", self.name]

    def present_in(self, source_root: Path) -> bool:
        """Whether a source tree (the directory holding `aistack/`) contains this service."""
        module = source_root.joinpath(*self.entry_module.split("."))
        return module.with_suffix(".py").is_file() or (module / "__init__.py").is_file()


# In start order (dependencies first). llama-cpp may load a model for a while: a generous timeout.
SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        Service("llama-cpp", "aistack.llama_cpp.server", start_timeout=300),
        Service("aider-wrapper", "aistack.aider_wrapper.app", start_timeout=90),
        Service("ralph-wiggum", "aistack.ralph_wiggum.app", start_timeout=90),
        Service("dashboard", "aistack.dashboard.app", start_timeout=90),
    )
}
assert list(SERVICES) == list(DEPENDENCIES), "start order must follow the dependency table"


def get(name: str) -> Service:
    try:
        return SERVICES[name]
    except KeyError:
        raise ValueError(f"unknown service {name!r}: allowed: {', '.join(SERVICES)}") from None


def installed_source_root() -> Path:
    """The directory holding the `aistack` package this command runs from."""
    import aistack

    return Path(aistack.__file__).resolve().parent.parent
