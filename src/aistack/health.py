"""A service's health as seen over HTTP, the only proof that it serves: one probe, one vocabulary.

| answer                                      | state       | ready |
|---------------------------------------------|-------------|-------|
| 200                                         | healthy     | yes   |
| 200 with `"status": "degraded"`             | degraded    | yes: it serves, something behind it is missing |
| 503                                         | loading     | no: up, not ready yet (llama-server loading its model) |
| any other status, or connected but no answer | unhealthy  | no    |
| connection refused, no route, none in time  | down        | no    |
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from aistack.web import API_KEY_HEADER

State = Literal["healthy", "degraded", "loading", "unhealthy", "down", "exited"]
PROBE_TIMEOUT_SECONDS = 2.0
RETRY_SECONDS = 2.0


@dataclass(frozen=True)
class Health:
    state: State
    detail: str  # what was seen: "HTTP 200", "HTTP 503 (loading)", "connection refused", …
    latency_ms: float | None = None
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        """It serves: 200 from /health (a degraded service serves, with something behind it missing)."""
        return self.state in ("healthy", "degraded")

    @property
    def reachable(self) -> bool:
        return self.state not in ("down", "exited")


def classify(status_code: int, body: Any, latency_ms: float | None = None) -> Health:
    """The state an answer of /health means (the table above)."""
    body = body if isinstance(body, dict) else {}
    said = str(body.get("status", "")).lower()
    if status_code == 200:
        if said == "degraded":
            return Health("degraded", f"HTTP 200 (degraded{_why_degraded(body)})", latency_ms, body)
        return Health("healthy", "HTTP 200", latency_ms, body)
    if status_code == 503:  # in the service's own words when it gives them ("starting", "loading model")
        return Health("loading", f"HTTP 503 ({said or 'loading'})", latency_ms, body)
    return Health("unhealthy", f"HTTP {status_code}", latency_ms, body)


def check(url: str, timeout: float = PROBE_TIMEOUT_SECONDS, api_key: str | None = None) -> Health:
    """One GET of a /health URL; never raises. Proxy variables are ignored: these are our own
    services. With the API key the answer carries the service's details (why it is degraded)."""
    started = time.monotonic()
    try:
        response = _client().get(url, timeout=timeout, headers={API_KEY_HEADER: api_key} if api_key else None)
    except httpx.HTTPError as exc:
        return _unanswered(exc)
    return _answered(response, started)


async def acheck(client: httpx.AsyncClient, url: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> Health:
    """`check` for async callers, on their client (make it with `trust_env=False`)."""
    started = time.monotonic()
    try:
        response = await client.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return _unanswered(exc)
    return _answered(response, started)


def wait_ready(url: str, deadline: float, interval: float = RETRY_SECONDS, ended: Callable[[], Health | None] = lambda: None) -> Health:
    """Check until ready, until `ended()` says why it never will be (the process behind it
    exited), or until `deadline` (a `time.monotonic()` value): then the last answer. Each probe
    is cut short at the deadline, so the wait never overruns it by more than a moment."""
    while True:
        if (gone := ended()) is not None:
            return gone
        remaining = deadline - time.monotonic()
        result = check(url, timeout=max(0.1, min(PROBE_TIMEOUT_SECONDS, remaining)))
        remaining = deadline - time.monotonic()
        if result.ready or remaining <= 0:
            return result
        time.sleep(min(interval, remaining))


@functools.cache
def _client() -> httpx.Client:
    """One client for every probe (making one costs ~20 ms); no kept-alive connections, so each
    probe connects afresh, as the question "does it accept connections now?" needs."""
    return httpx.Client(trust_env=False, limits=httpx.Limits(max_keepalive_connections=0))


def _answered(response: httpx.Response, started: float) -> Health:
    try:
        body = response.json()
    except ValueError:
        body = {}
    return classify(response.status_code, body, (time.monotonic() - started) * 1000)


def _unanswered(exc: httpx.HTTPError) -> Health:
    if isinstance(exc, httpx.ConnectTimeout):  # nothing accepted the connection: not there, or filtered
        return Health("down", "no connection within the timeout")
    if isinstance(exc, httpx.TimeoutException):  # connected, then no answer: up but hung
        return Health("unhealthy", "no answer within the timeout")
    if _refused(exc):
        return Health("down", "connection refused")
    text = str(exc) or type(exc).__name__
    return Health("down", f"not reachable ({text if len(text) <= 80 else text[:77] + '...'})")


def _refused(exc: BaseException | None) -> bool:
    """Somewhere down the chain (httpx → httpcore → anyio → the socket) the connection was refused."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, ConnectionRefusedError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _why_degraded(body: dict[str, Any]) -> str:
    """The orchestrator names the backends behind its `degraded` (one that is not installed is
    listed too, but degrades nothing)."""
    backends = [b for b in body.get("backends") or [] if isinstance(b, dict)]
    troubled = [str(b.get("name")) for b in backends if b.get("reachable") is False]
    if not troubled and backends and not any(b.get("available") for b in backends):
        return ": no backend is available"
    return f": backend unreachable: {', '.join(troubled)}" if troubled else ""
