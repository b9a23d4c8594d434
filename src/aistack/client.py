"""Typed async client of the orchestrator's HTTP API, shared by the CLI and the dashboard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import cache
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import SSEError, aconnect_sse
from pydantic import TypeAdapter, ValidationError

from aistack.contracts import (
    DailyStats,
    EventView,
    IterationLimits,
    IterationView,
    ProposalView,
    RalphHealth,
    Stats,
    TaskAccepted,
    TaskCreate,
    TaskPage,
    TaskView,
    first_error,
)
from aistack.web import API_KEY_HEADER

RESUME_SECONDS = 1.0  # before an event stream that broke off is resumed


class RalphError(Exception):
    """The orchestrator refused a request (4xx/5xx), could not be reached or broke off (status 0),
    answered what this client cannot read (502, as a gateway says of a bad upstream answer), or
    the request could not be put into a URL (414). Every failure of a call is one: its `detail`
    is one line a person can act on."""

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

    async def _request(self, method: str, path: str, into: Any = None, **kwargs: Any) -> Any:
        """The route's JSON answer, read `into` that type when given."""
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._failure(exc) from None
        except httpx.InvalidURL as exc:  # an argument too long for a URL (httpx's limit: 64 KiB)
            raise RalphError(414, f"the request cannot be sent: {exc}") from None
        if response.status_code >= 400:
            raise RalphError(response.status_code, *_refusal(response))
        try:
            body = response.json()
            return body if into is None else _adapter(into).validate_python(body)
        except ValueError as exc:  # not JSON, or not the contract's shape (ValidationError is one)
            raise _unreadable(self.base_url, response, exc) from None

    def _failure(self, exc: httpx.HTTPError) -> RalphError:
        """A request that got no answer, in words: unreachable, too slow, or cut off."""
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.UnsupportedProtocol):
            what = "is unreachable"
        elif isinstance(exc, httpx.TimeoutException):
            what = f"did not answer within {self._http.timeout.read} s"
        elif isinstance(exc, SSEError):
            what = f"answered without an event stream ({exc})"
        else:
            what = "broke off the connection"
        return RalphError(0, f"orchestrator at {self.base_url} {what} ({type(exc).__name__})")

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any route, as given: its JSON answer, or a RalphError with the API's own message."""
        return await self._request(method, path, **kwargs)

    # --- reading ---------------------------------------------------------------------------------
    async def health(self) -> RalphHealth:
        return await self._request("GET", "/health", RalphHealth)

    async def stats(self) -> Stats:
        return await self._request("GET", "/stats", Stats)

    async def daily_stats(self) -> DailyStats:
        return await self._request("GET", "/stats/daily", DailyStats)

    async def proposals(self, status: str | None = None) -> list[ProposalView]:
        return await self._request("GET", "/learn/proposals", list[ProposalView], params={"status": status} if status else {})

    async def tasks(self, status: str | None = None, limit: int = 20, offset: int = 0) -> TaskPage:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        return await self._request("GET", "/tasks", TaskPage, params=params)

    async def task(self, task_id: str) -> TaskView:
        return await self._request("GET", _task_path(task_id), TaskView)

    async def iterations(self, task_id: str) -> list[IterationView]:
        return await self._request("GET", _task_path(task_id, "/iterations"), list[IterationView])

    async def diff(self, task_id: str, iteration: int | None = None) -> str:
        params = {"iteration": iteration} if iteration is not None else {}
        return str((await self._request("GET", _task_path(task_id, "/diff"), dict[str, Any], params=params)).get("diff", ""))

    async def limits(self) -> IterationLimits:
        return await self._request("GET", "/config/limits", IterationLimits)

    # --- acting ----------------------------------------------------------------------------------
    async def submit(self, task: TaskCreate) -> TaskAccepted:
        body = task.model_dump(mode="json", exclude_none=True)
        return await self._request("POST", "/tasks", TaskAccepted, json=body)

    async def stop(self, task_id: str) -> dict[str, Any]:
        return await self._request("POST", _task_path(task_id, "/stop"), dict[str, Any])

    async def decide(self, task_id: str, approved: bool) -> dict[str, Any]:
        return await self._request("POST", _task_path(task_id, "/approve"), dict[str, Any], json={"approved": approved})

    async def learn(self) -> list[ProposalView]:
        return await self._request("POST", "/learn", list[ProposalView])

    async def decide_proposal(self, proposal_id: int | str, action: str, who: str, detail: str | None = None) -> ProposalView:
        body = {"who": who, **({"detail": detail} if detail else {})}
        return await self._request("POST", f"/learn/proposals/{path_segment(str(proposal_id))}/{action}", ProposalView, json=body)

    async def reload_config(self) -> IterationLimits:
        return await self._request("POST", "/config/reload", IterationLimits)

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
                raise RalphError(response.status_code, *_refusal(response))
            async for chunk in response.aiter_raw():
                yield chunk

    async def follow(self, task_id: str, after: int = 0) -> AsyncIterator[EventView]:
        """The task's events from `after` on, parsed, until it has ended; a stream that breaks
        off is resumed where it stopped (as an EventSource does), one that cannot start is a RalphError."""
        timeout = httpx.Timeout(10.0, read=None)  # an idle stream is normal
        while True:
            started = False  # a stream that broke off before its first byte is a failure, not a pause
            try:
                path = _task_path(task_id, "/events")
                async with aconnect_sse(self._http, "GET", path, params={"after": after}, timeout=timeout) as source:
                    if source.response.status_code >= 400:
                        await source.response.aread()
                        raise RalphError(source.response.status_code, *_refusal(source.response))
                    async for sse in source.aiter_sse():
                        started = True
                        if sse.event == "end":
                            return
                        # a keep-alive comment comes out as a message without data (the decoder keeps
                        # the last id): only a stored event has both
                        if sse.id and sse.data:
                            try:
                                event = EventView.model_validate_json(sse.data)
                            except ValidationError as exc:
                                raise _unreadable(self.base_url, source.response, exc) from None
                            after = event.id
                            yield event
            except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                if not started:
                    raise self._failure(exc) from None
            except httpx.HTTPError as exc:
                raise self._failure(exc) from None
            await asyncio.sleep(RESUME_SECONDS)  # then resume after the last event seen


@cache
def _adapter(into: Any) -> TypeAdapter[Any]:
    return TypeAdapter(into)


def _unreadable(base_url: str, response: httpx.Response, exc: ValueError) -> RalphError:
    """An answer that is not the API's: another server on the port, a proxy's page, another version."""
    if isinstance(exc, ValidationError):
        field, msg = first_error(exc.errors())
        what = f"an unexpected body ({field}: {msg})"
    else:
        what = f"{response.headers.get('content-type', 'no content type').partition(';')[0]}, not JSON"
    where = f"{response.request.method} {response.request.url.path}"
    return RalphError(502, f"orchestrator at {base_url} answered {where} with {what}: is it ralph-wiggum?")


def _refusal(response: httpx.Response) -> tuple[str, str | None]:
    """The API's own words for a refusal (`detail`, `field`), or the start of whatever answered."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "detail" in body:
        field = body.get("field")
        return str(body["detail"]), field if isinstance(field, str) else None
    return f"HTTP {response.status_code} {response.reason_phrase}: {' '.join(response.text[:500].split())}".rstrip(": "), None


def _task_path(task_id: str, suffix: str = "") -> str:
    """The task's URL path; the id is quoted so no input can point the request elsewhere."""
    return f"/tasks/{path_segment(task_id)}{suffix}"


def path_segment(value: str) -> str:
    """`value` as one segment of a URL path. Quoted, and a dot segment too: `.` or `..` left as
    it is would be resolved away (`/tasks/..` is `/`), asking another route."""
    quoted = quote(value, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted
