"""/health, /login and /logout: the routes that need no login."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from aistack import __version__
from aistack.dashboard.forms import safe_next
from aistack.dashboard.security import checked_form, key_matches, logged_in
from aistack.dashboard.site import SiteDep
from aistack.web import sends_key

router = APIRouter()


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
    if not key_matches(site.settings, str(form.get("api_key", ""))):
        return site.render(request, "login.html", 401, next=target, error="That is not the API key (RALPH_WIGGUM_API_KEY).")
    request.session["auth"] = True
    return RedirectResponse(target, status_code=303)


@router.post("/logout")
async def logout(request: Request):
    await checked_form(request)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)
