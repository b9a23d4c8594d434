"""Typed async client of the orchestrator's HTTP API, shared by the CLI and the dashboard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import aconnect_sse

from aistack.contracts import (
    DailyStats,
    EventView,
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

RESUME_SECONDS = 1.0  # before an event stream that broke off is resumed


class RalphError(Exception):
    """The orchestrator refused a request (4xx/5xx) or could not be reached (status 0)."""

    def __init__(self, status: int, detail: str, field: str | None = None):
        super().__init__(detail)
        self.status, self.detail, self.field = status, detail, field


class RalphClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 10.0, transport: httpx.AsyncBaseTransport | None = None):
        """`transport`: how requests reach the orchestrator; the network unless given (the MCP
        endpoint inside ralph-wiggum hands them to its own app with `httpx.ASGITransport`)."""
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        self.base_url = base_url
        self._http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout, transport=transport)

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

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any route, as given: its JSON answer, or a RalphError with the API's own message."""
        return await self._request(method, path, **kwargs)

    # --- reading ---------------------------------------------------------------------------------
    async def health(self) -> RalphHealth:
        return RalphHealth.model_validate(await self._request("GET", "/health"))

    async def stats(self) -> Stats:
        return Stats.model_validate(await self._request("GET", "/stats"))

    async def daily_stats(self) -> DailyStats:
        return DailyStats.model_validate(await self._request("GET", "/stats/daily"))

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

    async def follow(self, task_id: str, after: int = 0) -> AsyncIterator[EventView]:
        """The task's events from `after` on, parsed, until it has ended; a stream that breaks
        off is resumed where it stopped (as an EventSource does), one that cannot start is a RalphError."""
        timeout = httpx.Timeout(10.0, read=None)  # an idle stream is normal
        while True:
            try:
                path = _task_path(task_id, "/events")
                async with aconnect_sse(self._http, "GET", path, params={"after": after}, timeout=timeout) as source:
                    if source.response.status_code >= 400:
                        await source.response.aread()
                        raise RalphError(source.response.status_code, _detail(source.response))
                    async for sse in source.aiter_sse():
                        if sse.event == "end":
                            return
                        # a keep-alive comment comes out as a message without data (the decoder keeps
                        # the last id): only a stored event has both
                        if sse.id and sse.data:
                            event = EventView.model_validate_json(sse.data)
                            after = event.id
                            yield event
            except (httpx.RemoteProtocolError, httpx.ReadError):
                pass  # broke off mid-stream
            except httpx.HTTPError as exc:
                raise RalphError(0, f"orchestrator at {self.base_url} is unreachable ({type(exc).__name__})") from None
            await asyncio.sleep(RESUME_SECONDS)  # then resume after the last event seen


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:500] or response.reason_phrase


def _task_path(task_id: str, suffix: str = "") -> str:
    """The task's URL path; the id is quoted so no input can point the request elsewhere."""
    return f"/tasks/{quote(task_id, safe='')}{suffix}"
