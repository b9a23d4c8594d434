"""The Overview: each service's health, uptime and last deploy, and the loop's totals."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from aistack import services
from aistack.contracts import RalphHealth, Stats
from aistack.dashboard.security import require_login
from aistack.dashboard.site import Site, SiteDep, attempt

router = APIRouter(dependencies=[Depends(require_login)])


async def overview(site: Site) -> dict[str, Any]:
    probes, (stats, stats_error), (health, _), facts = await asyncio.gather(
        asyncio.gather(*(site.probe(name) for name in services.NAMES)),
        attempt(site.ralph.stats()),
        attempt(site.ralph.health()),
        site.facts(),
    )
    rows = [
        {"name": name, "url": site.settings.url(name), "probe": probe, "facts": facts[name],
         "uptime": probe.body.get("uptime_seconds", facts[name].uptime_seconds)}
        for name, probe in zip(services.NAMES, probes, strict=True)
    ]  # fmt: skip
    return {"services": rows, "stats": stats, "stats_error": stats_error, "backends": backend_rows(health, stats),
            "checked": time.strftime("%H:%M:%S")}  # fmt: skip


def backend_rows(health: RalphHealth | None, stats: Stats | None) -> list[dict[str, Any]]:
    """Each backend the orchestrator offers (available or why not) with its stored outcomes, then
    those that only past tasks name."""
    listed = {b.name: b for b in health.backends} if health else {}
    outcomes = stats.per_backend if stats else {}
    return [
        {"name": name, "health": listed.get(name), "outcome": outcomes.get(name)}
        for name in [*listed, *sorted(outcomes.keys() - listed.keys())]
    ]


@router.get("/", response_class=HTMLResponse)
async def overview_page(request: Request, site: SiteDep):
    return site.render(request, "overview.html", page="overview", **await overview(site))


@router.get("/fragments/overview", response_class=HTMLResponse)
async def overview_fragment(request: Request, site: SiteDep):
    return site.render(request, "_overview.html", **await overview(site))
