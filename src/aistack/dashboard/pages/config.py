"""The `.env` editor: every setting, validated before it is written (atomically, with a backup)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from aistack import envfile
from aistack.config import resolve_env_file
from aistack.dashboard.forms import LIMIT_FIELDS
from aistack.dashboard.security import CSRF_FIELD, checked_form, require_login
from aistack.dashboard.settings_form import grouped, rows, updates_from_form
from aistack.dashboard.site import SiteDep, attempt

router = APIRouter(dependencies=[Depends(require_login)])


def file_values() -> dict[str, str]:
    return envfile.read(resolve_env_file())


@router.get("/config", response_class=HTMLResponse)
async def config_page(request: Request, site: SiteDep):
    values = await asyncio.to_thread(file_values)
    return site.render(request, "config.html", page="config", groups=grouped(rows(values)), env_file=resolve_env_file(),
                       error=None, error_field=None)  # fmt: skip


@router.post("/config")
async def save_config(request: Request, site: SiteDep):
    posted = await checked_form(request)
    form = {k: str(v) for k, v in posted.items() if k != CSRF_FIELD}
    current = await asyncio.to_thread(file_values)
    updates = updates_from_form(form, current)
    try:
        if updates:
            await asyncio.to_thread(envfile.update, resolve_env_file(), updates)
    except envfile.EnvFileError as exc:
        return site.render(request, "config.html", 422, page="config", groups=grouped(rows(current, submitted=form)),
                           env_file=resolve_env_file(), error=str(exc), error_field=(exc.field or "").upper() or None)  # fmt: skip
    if not updates:
        return site.redirect("/config", "Nothing changed.", request=request)
    message = f"Saved {len(updates)} change(s) to {resolve_env_file()} (previous version: {envfile.backup_path(resolve_env_file()).name})."
    if any(key.lower() in LIMIT_FIELDS for key in updates):
        applied, error = await attempt(site.ralph.reload_config())
        message += " Iteration limits applied live." if applied else f" The orchestrator did not reload: {error}."
    if any(key.lower() not in LIMIT_FIELDS for key in updates):
        message += " Other settings take effect when the services restart."
    return site.redirect("/config", message, request=request)
