"""What every dashboard page shares: the orchestrator client, the templates, render and redirect,
the deploy runner, and the lifecycle facts (read from files, so off the event loop)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from aistack import __version__
from aistack.client import RalphClient, RalphError
from aistack.config import Settings
from aistack.contracts import TaskStatus
from aistack.dashboard.deploy import DeployRunner
from aistack.dashboard.history import ServiceFacts, service_facts
from aistack.dashboard.security import CSRF_FIELD, LoginThrottle, Sessions, csrf_token
from aistack.health import Health, acheck
from aistack.web import API_KEY_HEADER

HERE = Path(__file__).parent
STATUSES = [s.value for s in TaskStatus]
PROBE_SECONDS = 3.0  # a hung service is cut here; one that is down fails at once on loopback
T = TypeVar("T")


class Site:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.auth_required = settings.api_key is not None
        self.sessions = Sessions(settings.dashboard_session_idle_minutes * 60, settings.dashboard_session_max_hours * 3600)
        self.throttle = LoginThrottle()
        self.started = time.time()
        self.ralph = RalphClient(settings.url("ralph-wiggum"), settings.api_key)
        # Our own services: never through a proxy; with the key, their /health tells the details.
        key_header = {API_KEY_HEADER: settings.api_key} if settings.api_key else {}
        self.probes = httpx.AsyncClient(trust_env=False, headers=key_header)
        self.deploys = DeployRunner(settings)
        self.templates = Jinja2Templates(directory=HERE / "templates")
        self.templates.env.globals.update(version=__version__, csrf_field=CSRF_FIELD, statuses=STATUSES)
        self.templates.env.filters["duration"] = duration
        self.templates.env.filters["when"] = lambda d: d.strftime("%Y-%m-%d %H:%M:%S") if d else "—"

    async def close(self) -> None:
        await self.ralph.aclose()
        await self.probes.aclose()

    def render(self, request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        flash = request.session.pop("flash", None)
        values = {"csrf": csrf_token(request), "auth_required": self.auth_required, "flash": flash, **context}
        return self.templates.TemplateResponse(request, name, values, status_code=status_code)

    @staticmethod
    def redirect(url: str, message: str | None = None, kind: str = "ok", *, request: Request) -> RedirectResponse:
        if message:
            request.session["flash"] = {"kind": kind, "text": message}
        return RedirectResponse(url, status_code=303)

    async def probe(self, service: str) -> Health:
        """One `/health` probe of a service of the stack."""
        return await acheck(self.probes, self.settings.health_url(service), PROBE_SECONDS)

    async def facts(self) -> dict[str, ServiceFacts]:
        """What the lifecycle's files say of each service (pid files, deploy history)."""
        return await asyncio.to_thread(service_facts, self.settings)


def site_of(request: Request) -> Site:
    return request.app.state.site


SiteDep = Annotated[Site, Depends(site_of)]


async def attempt(call: Awaitable[T]) -> tuple[T | None, str | None]:
    """(result, None) or (None, the orchestrator's one-line error)."""
    try:
        return await call, None
    except RalphError as exc:
        return None, exc.detail


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
