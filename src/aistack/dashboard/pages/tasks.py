"""Tasks: the list, the submit form, one task live (its events relayed on our own origin, so the
API key stays here), its diff, and Stop / Approve / Reject."""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, StreamingResponse
from markupsafe import escape

from aistack.client import RalphError
from aistack.contracts import MAX_INT, TERMINAL_STATUSES
from aistack.dashboard.forms import STRATEGY_CHOICES, FormError, checked_task_id, task_from_form
from aistack.dashboard.security import CSRF_FIELD, checked_form, require_login
from aistack.dashboard.site import STATUSES, Site, SiteDep, attempt

router = APIRouter(dependencies=[Depends(require_login)])
PAGE_SIZE = 20
ACTIONS = {"stop": "Stop requested.", "approve": "Approved: the next iteration runs.", "reject": "Rejected."}


@router.get("/tasks", response_class=HTMLResponse)
async def task_list(request: Request, site: SiteDep, status: str = "", page: int = 1):
    status = status if status in STATUSES else ""
    page = max(page, 1)
    result, error = await attempt(site.ralph.tasks(status or None, PAGE_SIZE, (page - 1) * PAGE_SIZE))
    pages = max(1, -(-result.total // PAGE_SIZE)) if result else 1
    return site.render(request, "tasks.html", page="tasks", result=result, error=error, status=status, page_no=page, pages=pages)


async def submit_form(site: Site) -> dict[str, Any]:
    health, _ = await attempt(site.ralph.health())
    limits, _ = await attempt(site.ralph.limits())
    backends = [b.name for b in health.backends if b.available] if health else []  # the API refuses the others
    return {"backends": backends or ["aider"], "limits": limits, "workspace_root": site.settings.workspace_root,
            "strategy_choices": STRATEGY_CHOICES}  # fmt: skip


@router.get("/tasks/new", response_class=HTMLResponse)
async def new_task(request: Request, site: SiteDep):
    return site.render(request, "new_task.html", page="new", form={}, error=None, error_field=None, **await submit_form(site))


@router.post("/tasks")
async def submit_task(request: Request, site: SiteDep):
    values = {k: str(v) for k, v in (await checked_form(request)).items() if k != CSRF_FIELD}

    async def again(message: str, field: str | None, status_code: int = 422):
        return site.render(request, "new_task.html", status_code, page="new", form=values, error=message, error_field=field,
                           **await submit_form(site))  # fmt: skip

    try:
        accepted = await site.ralph.submit(task_from_form(values))
    except FormError as exc:
        return await again(str(exc), exc.field)
    except RalphError as exc:
        field = exc.field.replace(".", "_") if exc.field and exc.field.startswith("strategy.") else exc.field  # its select
        return await again(exc.detail, field, exc.status if 400 <= exc.status < 500 else 502)
    return site.redirect(f"/tasks/{accepted.task_id}", f"Task accepted: {accepted.message}", request=request)


def relayed(status: int) -> int:
    """The status to answer with when the orchestrator refused: its 4xx (no such task, a bad
    iteration) is the client's mistake here too; anything else is a bad gateway."""
    return status if 400 <= status < 500 else 502


async def one_task(site: Site, task_id: str) -> dict[str, Any]:
    task = await site.ralph.task(checked_task_id(task_id))
    iterations, error = await attempt(site.ralph.iterations(task_id))
    return {"task": task, "iterations": iterations or [], "iterations_error": error, "terminal": task.status in TERMINAL_STATUSES}


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
async def task_page(request: Request, site: SiteDep, task_id: str):
    try:
        context = await one_task(site, task_id)
    except RalphError as exc:
        return site.render(request, "error.html", relayed(exc.status), title="Task", message=exc.detail)
    return site.render(request, "task.html", page="tasks", **context)


@router.get("/fragments/tasks/{task_id}", response_class=HTMLResponse)
async def task_fragment(request: Request, site: SiteDep, task_id: str):
    try:
        context = await one_task(site, task_id)
    except RalphError as exc:
        return HTMLResponse(f'<p class="error" role="alert">{escape(exc.detail)}</p>', status_code=relayed(exc.status))
    return site.render(request, "_task.html", **context)


@router.get("/tasks/{task_id}/diff", response_class=PlainTextResponse)
async def task_diff(site: SiteDep, task_id: str, iteration: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None):
    try:
        text = await site.ralph.diff(checked_task_id(task_id), iteration)
    except RalphError as exc:
        return PlainTextResponse(f"(diff unavailable: {exc.detail})", status_code=relayed(exc.status))
    return PlainTextResponse(text or "(no changes)")


@router.get("/tasks/{task_id}/events")
async def task_events(request: Request, site: SiteDep, task_id: str):
    """Same-origin relay of the orchestrator's event stream (the API key stays here)."""
    last_id = request.headers.get("last-event-id")

    async def relay():
        try:
            async for chunk in site.ralph.events(checked_task_id(task_id), last_id):
                yield chunk
        except RalphError as exc:
            yield f"event: relay_error\ndata: {json.dumps({'detail': exc.detail})}\n\n".encode()
        except httpx.HTTPError as exc:
            yield f"event: relay_error\ndata: {json.dumps({'detail': type(exc).__name__})}\n\n".encode()

    return StreamingResponse(relay(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/tasks/{task_id}/{action}")
async def task_action(request: Request, site: SiteDep, task_id: str, action: str):
    await checked_form(request)
    if action not in ACTIONS:
        return site.render(request, "error.html", 404, title="Task", message=f"unknown action {action!r}: allowed: {', '.join(ACTIONS)}")
    try:
        checked_task_id(task_id)
        await (site.ralph.stop(task_id) if action == "stop" else site.ralph.decide(task_id, action == "approve"))
    except RalphError as exc:
        return site.redirect(f"/tasks/{task_id}", f"{action} refused: {exc.detail}", "error", request=request)
    return site.redirect(f"/tasks/{task_id}", ACTIONS[action], request=request)
