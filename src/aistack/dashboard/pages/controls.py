"""Iteration controls: the loop's limits, saved to the `.env` and applied to the running orchestrator."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from aistack import envfile
from aistack.client import RalphError
from aistack.config import resolve_env_file
from aistack.dashboard.forms import LIMIT_FIELDS, FormError, limits_env, limits_from_form
from aistack.dashboard.security import checked_form, require_login
from aistack.dashboard.site import Site, SiteDep, attempt

router = APIRouter(dependencies=[Depends(require_login)])


def saved_settings():
    """The `.env`'s settings, or None when it does not validate (read from disk: off the loop)."""
    path = resolve_env_file()
    try:
        return envfile.validate(path.read_text() if path.is_file() else "")
    except envfile.EnvFileError:
        return None


async def limits_page(site: Site) -> dict[str, Any]:
    (live, live_error), saved = await asyncio.gather(attempt(site.ralph.limits()), asyncio.to_thread(saved_settings))
    return {"live": live, "live_error": live_error, "saved": saved, "env_file": resolve_env_file()}


@router.get("/controls", response_class=HTMLResponse)
async def controls(request: Request, site: SiteDep):
    context = await limits_page(site)
    shown = context["live"] or (context["saved"].iteration_limits() if context["saved"] else None)
    form = shown.model_dump() if shown else {}
    return site.render(request, "controls.html", page="controls", form=form, error=None, error_field=None, **context)


@router.post("/controls")
async def save_controls(request: Request, site: SiteDep):
    posted = await checked_form(request)
    form: dict[str, Any] = {name: str(posted.get(name, "")).strip() for name in LIMIT_FIELDS}
    form["ralph_adaptive_iterations"] = posted.get("ralph_adaptive_iterations") == "true"
    try:
        limits = limits_from_form(form)
        await asyncio.to_thread(envfile.update, resolve_env_file(), limits_env(limits))
    except (FormError, envfile.EnvFileError) as exc:
        context = await limits_page(site)
        return site.render(request, "controls.html", 422, page="controls", form=form, error=str(exc), error_field=exc.field, **context)
    try:
        applied = await site.ralph.reload_config()
    except RalphError as exc:
        message = f"Saved to {resolve_env_file()}, but the orchestrator did not apply it: {exc.detail}"
        return site.redirect("/controls", message, "error", request=request)
    if applied != limits:
        message = "Saved, but the orchestrator reports other limits (an environment variable overrides the .env?)."
        return site.redirect("/controls", message, "error", request=request)
    return site.redirect("/controls", "Saved to the .env and applied to the running orchestrator.", request=request)
