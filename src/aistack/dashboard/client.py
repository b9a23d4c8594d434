"""Typed client of the orchestrator's public HTTP API (the dashboard uses nothing else of it)."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from aistack.contracts import (
    IterationLimits,
    IterationView,
    RalphHealth,
    Stats,
    TaskAccepted,
    TaskCreate,
    TaskPage,
    TaskView,
)
from aistack.web import API_KEY_HEADER


class RalphError(Exception):
    """The orchestrator refused a request (4xx/5xx) or could not be reached (status 0)."""

    def __init__(self, status: int, detail: str, field: str | None = None):
        super().__init__(detail)
        self.status, self.detail, self.field = status, detail, field


@dataclass
class Probe:
    """One health check of one service, as the Overview shows it."""

    state: str  # healthy, degraded or down
    latency_ms: float | None
    body: dict[str, Any]
    error: str | None = None


_TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")


def _task_path(task_id: str, suffix: str = "") -> str:
    """`/tasks/{id}{suffix}`, refusing ids that could change the path (`..`, `/`, `?`)."""
    if not _TASK_ID.fullmatch(task_id):
        raise RalphError(404, f"no task with id {task_id[:100]!r}", "task_id")
    return f"/tasks/{task_id}{suffix}"


class RalphClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 10.0):
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        self.base_url = base_url
        self._http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise RalphError(0, f"orchestrator at {self.base_url} is unreachable ({type(exc).__name__})") from None
        if response.status_code >= 400:
            try:
                body = response.json()
                detail, field = str(body.get("detail", response.text)), body.get("field")
            except ValueError:
                detail, field = response.text[:500] or response.reason_phrase, None
            raise RalphError(response.status_code, detail, field)
        return response.json()

    # --- reading ---------------------------------------------------------------------------------
    async def health(self) -> RalphHealth:
        return RalphHealth.model_validate(await self._request("GET", "/health"))

    async def stats(self) -> Stats:
        return Stats.model_validate(await self._request("GET", "/stats"))

    async def tasks(self, status: str | None = None, limit: int = 20, offset: int = 0) -> TaskPage:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        return TaskPage.model_validate(await self._request("GET", "/tasks", params=params))

    async def task(self, task_id: str) -> TaskView:
        return TaskView.model_validate(await self._request("GET", _task_path(task_id)))

    async def iterations(self, task_id: str) -> list[IterationView]:
        return [IterationView.model_validate(i) for i in await self._request("GET", _task_path(task_id, "/iterations"))]

    async def diff(self, task_id: str, iteration: int | None = None) -> str:
        params = {"iteration": iteration} if iteration is not None else {}
        return str((await self._request("GET", _task_path(task_id, "/diff"), params=params)).get("diff", ""))

    async def limits(self) -> IterationLimits:
        return IterationLimits.model_validate(await self._request("GET", "/config/limits"))

    # --- acting ----------------------------------------------------------------------------------
    async def submit(self, task: TaskCreate) -> TaskAccepted:
        body = task.model_dump(mode="json", exclude_none=True)
        return TaskAccepted.model_validate(await self._request("POST", "/tasks", json=body))

    async def stop(self, task_id: str) -> dict[str, Any]:
        return await self._request("POST", _task_path(task_id, "/stop"))

    async def decide(self, task_id: str, approved: bool) -> dict[str, Any]:
        return await self._request("POST", _task_path(task_id, "/approve"), json={"approved": approved})

    async def reload_config(self) -> IterationLimits:
        return IterationLimits.model_validate(await self._request("POST", "/config/reload"))

    # --- live events -----------------------------------------------------------------------------
    async def events(self, task_id: str, last_event_id: str | None = None) -> AsyncIterator[bytes]:
        """The task's server-sent events, passed through byte for byte (the browser parses them)."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        timeout = httpx.Timeout(10.0, read=None)  # an idle stream is normal
        async with self._http.stream("GET", _task_path(task_id, "/events"), headers=headers, timeout=timeout) as response:
            if response.status_code >= 400:
                await response.aread()
                raise RalphError(response.status_code, response.text[:500])
            async for chunk in response.aiter_raw():
                yield chunk


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
