"""A service's health as seen over HTTP — the only proof that it serves."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from aistack.config import Settings
from aistack.lifecycle.services import get
from aistack.procgroup import describe_exit


@dataclass(frozen=True)
class Health:
    state: str  # healthy | degraded | loading | unhealthy | down
    detail: str
    latency_ms: float | None = None

    @property
    def ready(self) -> bool:
        """Serving: 200 from /health (a degraded service serves, with a dependency missing)."""
        return self.state in ("healthy", "degraded")


def check(settings: Settings, service: str, timeout: float = 2.0) -> Health:
    url = settings.url(service) + get(service).health_path
    started = time.monotonic()
    try:
        response = httpx.get(url, timeout=timeout, trust_env=False)
    except httpx.TimeoutException:
        return Health("unhealthy", "no answer within the timeout")
    except httpx.HTTPError:
        return Health("down", "not reachable")
    latency = (time.monotonic() - started) * 1000
    status = _status_field(response)
    if response.status_code == 200:
        state = "degraded" if status == "degraded" else "healthy"
        return Health(state, f"HTTP 200{f' ({status})' if status else ''}", latency)
    if response.status_code == 503:
        return Health("loading", f"HTTP 503{f' ({status})' if status else ''}", latency)
    return Health("unhealthy", f"HTTP {response.status_code}", latency)


def _status_field(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("status", "")) if isinstance(body, dict) else ""


def exit_reason(code: int | None, log_tail: str, what: str = "the process") -> str:
    """Why a service ended before it was healthy: the last `✗` line it wrote (every service
    prints its fatal error that way), then how the process ended."""
    how = f"{what} {describe_exit(code)}" if code is not None else f"{what} ended"
    fatal = next((line.strip()[2:] for line in reversed(log_tail.splitlines()) if line.strip().startswith("✗ ")), None)
    return f"{fatal} ({how})" if fatal else how
