"""Health probes for the Overview: one GET of a service's /health, classified healthy / degraded / down."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Probe:
    """One health check of one service, as the Overview shows it."""

    state: str  # healthy, degraded or down
    latency_ms: float | None
    body: dict[str, Any]
    error: str | None = None


async def probe(http: httpx.AsyncClient, url: str) -> Probe:
    """GET `url` (a /health endpoint) and classify the answer: healthy, degraded or down."""
    started = time.perf_counter()
    try:
        response = await http.get(url, timeout=3.0)
    except httpx.HTTPError as exc:
        return Probe("down", None, {}, f"unreachable ({type(exc).__name__})")
    latency = (time.perf_counter() - started) * 1000
    try:
        body = response.json()
        body = body if isinstance(body, dict) else {}
    except ValueError:
        body = {}
    status = str(body.get("status", "")).lower()
    if response.status_code == 200 and status in ("healthy", "ok", ""):
        return Probe("healthy", latency, body)
    # A service that answers but says it is not fully well (llama-server answers 503 while loading).
    detail = str(body.get("detail") or body.get("error") or status or f"HTTP {response.status_code}")
    troubled = [  # the orchestrator names the backends behind its "degraded"
        str(b.get("name")) for b in body.get("backends") or [] if isinstance(b, dict) and (b.get("reachable") is False or not b.get("available"))
    ]
    if troubled:
        detail = f"backend unreachable: {', '.join(troubled)}"
    return Probe("degraded", latency, body, detail[:200])
