"""How a service that ended before it was healthy is described to the person who started it."""

from __future__ import annotations

from aistack.procgroup import describe_exit


def exit_reason(code: int | None, log_tail: str, what: str = "the process") -> str:
    """Why a service ended before it was healthy: the last `✗` line it wrote (every service
    prints its fatal error that way), then how the process ended."""
    how = f"{what} {describe_exit(code)}" if code is not None else f"{what} ended"
    fatal = next((line.strip()[2:] for line in reversed(log_tail.splitlines()) if line.strip().startswith("✗ ")), None)
    return f"{fatal} ({how})" if fatal else how
