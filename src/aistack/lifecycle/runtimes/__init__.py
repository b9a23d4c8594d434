"""Where a service's releases run: a process of its own (`process.py`) or a podman container
(`podman.py`). The one deploy algorithm (`lifecycle/deploy.py`) drives either through `Runtime`;
both wait for health and explain an early exit the same way (`wait_healthy`, `exit_reason`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aistack import health
from aistack.health import Health
from aistack.lifecycle.releases import Releases
from aistack.procgroup import describe_exit

Say = Callable[[str], None]


class BuildError(Exception):
    """A release could not be built; the message is one line."""


@dataclass(frozen=True)
class Swap:
    """How bringing a release up went."""

    health: Health  # of the release brought up
    log_tail: str = ""  # its last log lines, when it failed
    serving: str | None = None  # what serves afterwards: that release, the one restored, or nothing
    restore_s: float | None = None  # failed check → the previous release healthy again
    note: str = ""  # what became of the previous release after a failure


class Runtime(Protocol):
    name: str
    releases: Releases

    def unavailable(self) -> str | None:
        """Why this runtime cannot deploy on this machine, or None."""
        ...

    def current(self, service: str) -> str | None:
        """The release that serves now (None: nothing runs)."""
        ...

    def problem(self, service: str) -> str | None:
        """Why `service` cannot be started here now (its port is someone else's), or None."""
        ...

    def build(self, service: str, root: Path) -> str:
        """A new immutable release of the package at `root`; its version. Raises BuildError."""
        ...

    def swap(self, service: str, version: str, timeout: float) -> Swap:
        """Back up what runs, start `version` and check its health; on failure bring back what ran."""
        ...

    def forget(self, service: str, versions: list[str]) -> None:
        """Remove what is left of releases gone from `releases` (their images)."""
        ...

    def can_return_to(self, service: str, version: str) -> bool:
        """Whether a rollback to `version` has something to start."""
        ...


def wait_healthy(url: str, timeout: float, ended: Callable[[], Health | None], interval: float) -> Health:
    """Probe `url` until it is ready, `ended()` reports the service gone, or `timeout` passes."""
    result = health.wait_ready(url, time.monotonic() + timeout, interval, ended)
    if result.ready or result.state == "exited":
        return result
    return Health(result.state, f"/health not ready after {timeout:.0f} s (last: {result.detail})")


def exit_reason(code: int | None, log_tail: str, what: str = "the process") -> str:
    """Why a service ended before it was healthy: the last `✗` line it wrote (every service
    prints its fatal error that way), then how the process ended."""
    how = f"{what} {describe_exit(code)}" if code is not None else f"{what} ended"
    fatal = next((line.strip()[2:] for line in reversed(log_tail.splitlines()) if line.strip().startswith("✗ ")), None)
    return f"{fatal} ({how})" if fatal else how
