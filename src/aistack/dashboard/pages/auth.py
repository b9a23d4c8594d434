"""/health, /login and /logout: the routes that need no login."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from aistack import __version__
from aistack.dashboard.forms import safe_next
from aistack.dashboard.security import checked_form, client_address, key_matches, log_in, log_out, logged_in
from aistack.dashboard.site import SiteDep
from aistack.web import sends_key

router = APIRouter()
log = logging.getLogger("aistack.dashboard")


@router.get("/health")
async def health(request: Request, site: SiteDep) -> dict[str, Any]:
    orchestrator = await site.probe("ralph-wiggum")
    # Degraded when the orchestrator does not serve (down, hung, loading); its own state, and
    # the rest of the stack's, is shown on the Overview.
    status = "healthy" if orchestrator.ready else "degraded"
    if not (logged_in(request) or sends_key(request.headers, site.settings.api_key)):
        return {"status": status}  # the details need the key, as on the other services
    return {
        "status": status,
        "version": __version__,
        "uptime_seconds": round(time.time() - site.started, 1),
        "ralph_wiggum": orchestrator.state,
    }


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, site: SiteDep, next: str = "/"):
    if logged_in(request):
        return RedirectResponse(safe_next(next), status_code=303)
    return site.render(request, "login.html", next=safe_next(next), error=None)


@router.post("/login")
async def login(request: Request, site: SiteDep):
    form = await checked_form(request)
    target = safe_next(str(form.get("next", "/")))
    client = client_address(request)
    if wait := math.ceil(site.throttle.wait(client)):  # refused at once, holding no worker: no guess is checked
        error = f"Too many wrong keys from {client}: try again in {wait} s."
        refused = site.render(request, "login.html", 429, next=target, error=error)
        refused.headers["Retry-After"] = str(wait)
        return refused
    if not key_matches(site.settings, str(form.get("api_key", ""))):
        log.warning("dashboard login with a wrong key from %s (%d in a row)", client, site.throttle.failed(client))
        return site.render(request, "login.html", 401, next=target, error="That is not the API key (RALPH_WIGGUM_API_KEY).")
    site.throttle.succeeded(client)
    log_in(request)
    return RedirectResponse(target, status_code=303)


@router.post("/logout")
async def logout(request: Request):
    await checked_form(request)
    log_out(request)
    return RedirectResponse("/login", status_code=303)
