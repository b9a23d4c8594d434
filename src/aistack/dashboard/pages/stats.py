"""Stats: how the loop does over time, per backend and per prompt class (the orchestrator's
`/stats/daily`), as plots with their numbers beside them."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from aistack.dashboard.security import require_login
from aistack.dashboard.site import SiteDep, attempt

router = APIRouter(dependencies=[Depends(require_login)])


@router.get("/stats", response_class=HTMLResponse)
async def stats_page(request: Request, site: SiteDep):
    daily, error = await attempt(site.ralph.daily_stats())
    return site.render(request, "stats.html", page="stats", daily=daily, error=error)
