"""Pre-flight dependency checks: a service waits for the services it calls before it serves.

A check is a TCP connect to the dependency's host and port, then `GET /health`: 200 means ready,
503 means "up but still loading" (llama-cpp loading its model) and is waited for like a refused
connection. URLs come only from `Settings.url`, so the same code works on one machine and on a
container network.
"""

from __future__ import annotations

import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from aistack.config import Settings

# Which services each service calls. Order of the keys = the order the stack starts in.
DEPENDENCIES: dict[str, list[str]] = {
    "llama-cpp": [],
    "aider-wrapper": ["llama-cpp"],
    "ralph-wiggum": ["aider-wrapper"],
    "dashboard": ["ralph-wiggum"],
}

RETRY_INTERVAL_SECONDS = 2.0
PROBE_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class CheckResult:
    """One probe of one service's `/health`."""

    service: str
    url: str
    reachable: bool  # the TCP port accepted a connection
    ready: bool  # /health answered 200
    latency_ms: float | None  # of the /health request, when one was answered
    detail: str  # what was seen: "HTTP 200", "HTTP 503 (loading)", "connection refused", ...

    @property
    def advice(self) -> str:
        """What to do about a service that is not ready."""
        env = self.service.upper().replace("-", "_")
        if self.ready:
            return ""
        if not self.reachable:
            return f"start it: aistack up (or aistack serve {self.service}); check {env}_HOST and {env}_PORT"
        if "503" in self.detail:
            return "still loading: wait, then check again"
        return f"unhealthy: see aistack logs {self.service}"


def probe(service: str, url: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> CheckResult:
    """TCP connect, then one `GET /health`; never raises."""
    parsed = httpx.URL(url)
    host, port = parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = "connection refused" if isinstance(exc, ConnectionRefusedError) else _short(exc)
        return CheckResult(service, url, reachable=False, ready=False, latency_ms=None, detail=reason)
    started = time.monotonic()
    try:
        response = httpx.get(url + "/health", timeout=timeout, trust_env=False)
    except httpx.HTTPError as exc:
        return CheckResult(service, url, reachable=True, ready=False, latency_ms=None, detail=_short(exc))
    latency = (time.monotonic() - started) * 1000
    status = response.status_code
    detail = f"HTTP {status}" + (" (loading)" if status == 503 else "")
    return CheckResult(service, url, reachable=True, ready=status == 200, latency_ms=latency, detail=detail)


def wait_ready(service: str, url: str, deadline: float) -> CheckResult:
    """Probe every RETRY_INTERVAL_SECONDS until ready or `deadline` (a `time.monotonic()` value).
    Each probe is cut short at the deadline, so the wait never overruns it by more than a moment."""
    while True:
        remaining = deadline - time.monotonic()
        result = probe(service, url, timeout=max(0.1, min(PROBE_TIMEOUT_SECONDS, remaining)))
        if result.ready:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return result
        time.sleep(min(RETRY_INTERVAL_SECONDS, remaining))


def before_serve(settings: Settings, service: str) -> None:
    """Wait for `service`'s dependencies; call this at the top of a service's `run()`.

    Logs one line per dependency. With STARTUP_FAIL_FAST (the default) a dependency that stays
    unready exits the process with status 1; otherwise the service starts anyway (degraded).
    STARTUP_DEPENDENCY_CHECK=false skips everything.
    """
    if not settings.startup_dependency_check:
        return
    timeout = settings.startup_timeout_seconds
    deadline = time.monotonic() + timeout
    for dependency in DEPENDENCIES.get(service, []):
        url = settings.url(dependency)
        result = wait_ready(dependency, url, deadline)
        if result.ready:
            _say(f"✓ {dependency} is reachable at {url}")
            continue
        what = "not ready" if result.reachable else "not reachable"
        if settings.startup_fail_fast:
            _say(f"✗ {dependency} at {url} {what} after {timeout} s ({result.detail}) — exiting")
            raise SystemExit(1)
        _say(f"⚠ {dependency} at {url} {what} after {timeout} s ({result.detail}) — continuing")


def unready_dependencies(settings: Settings, service: str, timeout: float = 1.0) -> list[str]:
    """Names of `service`'s dependencies not ready right now (one quick probe each), for a
    `/health` that reports `degraded` while a dependency is missing."""
    return [d for d in DEPENDENCIES.get(service, []) if not probe(d, settings.url(d), timeout).ready]


def check_all(settings: Settings, timeout: float = PROBE_TIMEOUT_SECONDS) -> list[CheckResult]:
    """One probe of every service of the stack, in start order (probes run in parallel)."""
    names = list(DEPENDENCIES)
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        return list(pool.map(lambda name: probe(name, settings.url(name), timeout), names))


def _say(line: str) -> None:
    # Printed rather than logged: this runs before uvicorn has configured logging.
    print(line, file=sys.stderr, flush=True)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 80 else text[:77] + "..."
