"""Pre-flight dependency checks: a service waits for the services it calls before it serves.

A check is `GET /health` (`aistack.health`): 200 means ready, 503 means "up but still loading"
(llama-cpp loading its model) and is waited for like a refused connection. URLs come only from
`Settings.url`, so the same code works on one machine and on a container network.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aistack import health, services
from aistack.config import Settings
from aistack.health import Health


@dataclass(frozen=True)
class CheckResult:
    """One probe of one service's `/health`."""

    service: str
    url: str
    health: Health

    @property
    def ready(self) -> bool:
        return self.health.ready

    @property
    def reachable(self) -> bool:
        return self.health.reachable

    @property
    def detail(self) -> str:
        return self.health.detail

    @property
    def latency_ms(self) -> float | None:
        return self.health.latency_ms

    @property
    def advice(self) -> str:
        """What to do about a service that is not ready."""
        prefix = services.get(self.service).setting_prefix
        if self.ready:
            return ""
        if not self.reachable:
            return f"start it: aistack up (or aistack serve {self.service}); check {prefix}_HOST and {prefix}_PORT"
        if self.health.state == "loading":
            return "still loading: wait, then check again"
        return f"unhealthy: see aistack logs {self.service}"


def probe(service: str, url: str, timeout: float = health.PROBE_TIMEOUT_SECONDS, api_key: str | None = None) -> CheckResult:
    """One `GET /health` of `service` at `url`; never raises."""
    return CheckResult(service, url, health.check(url + services.get(service).health_path, timeout, api_key))


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
    for dependency in services.get(service).depends_on:
        url, result = _wait_ready(settings, dependency, deadline)
        if result.ready:
            _say(f"✓ {dependency} is reachable at {url}")
            continue
        what = "not ready" if result.reachable else "not reachable"
        if settings.startup_fail_fast:
            _say(f"✗ {dependency} at {url} {what} after {timeout} s ({result.detail}) — exiting")
            raise SystemExit(1)
        _say(f"⚠ {dependency} at {url} {what} after {timeout} s ({result.detail}) — continuing")


def _wait_ready(settings: Settings, dependency: str, deadline: float) -> tuple[str, Health]:
    """Where the dependency is, and its health once ready or at the deadline. Of the LLM servers
    of LLAMA_CPP_URLS one ready is enough (runs are routed around the others), and one without
    /health (Ollama) is ready when its OpenAI API answers."""
    if dependency != "llama-cpp" or not settings.llama_cpp_urls:
        return settings.url(dependency), health.wait_ready(settings.health_url(dependency), deadline)
    while True:
        for url in settings.llm_urls:
            timeout = max(0.1, min(health.PROBE_TIMEOUT_SECONDS, deadline - time.monotonic()))
            result = health.check(url + "/health", timeout)
            if result.detail == "HTTP 404":
                result = health.check(url + "/v1/models", timeout, settings.api_key)
            if result.ready:
                return url, result
        if time.monotonic() >= deadline:
            return settings.llama_cpp_urls.replace(",", ", "), result
        time.sleep(min(health.RETRY_SECONDS, max(0.0, deadline - time.monotonic())))


def check_all(
    settings: Settings, timeout: float = health.PROBE_TIMEOUT_SECONDS, names: Sequence[str] = services.NAMES, wait: float = 0.0
) -> list[CheckResult]:
    """One probe of each named service (the whole stack by default), in start order and in
    parallel. With `wait`, each is probed until it is ready or `wait` seconds have passed: a
    systemd unit is started only when this says its service is ready."""
    deadline = time.monotonic() + wait

    def check(name: str) -> CheckResult:
        if wait <= 0:
            return probe(name, settings.url(name), timeout, settings.api_key)
        return CheckResult(name, settings.url(name), health.wait_ready(settings.health_url(name), deadline))

    with ThreadPoolExecutor(max_workers=len(services.NAMES)) as pool:
        return list(pool.map(check, [name for name in services.NAMES if name in names]))


def _say(line: str) -> None:
    # Printed rather than logged: this runs before uvicorn has configured logging.
    print(line, file=sys.stderr, flush=True)
