"""The Overview: each service's health, uptime and last deploy, and the loop's totals."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from aistack import services
from aistack.dashboard.security import require_login
from aistack.dashboard.site import Site, SiteDep, attempt
from aistack.health import acheck

router = APIRouter(dependencies=[Depends(require_login)])
PROBE_SECONDS = 3.0  # a hung service is cut here; one that is down fails at once on loopback


async def overview(site: Site) -> dict[str, Any]:
    urls = {name: site.settings.health_url(name) for name in services.NAMES}
    probes, (stats, stats_error), facts = await asyncio.gather(
        asyncio.gather(*(acheck(site.probes, url, PROBE_SECONDS) for url in urls.values())),
        attempt(site.ralph.stats()),
        site.facts(),
    )
    rows = [
        {"name": name, "url": site.settings.url(name), "probe": probe, "facts": facts[name],
         "uptime": probe.body.get("uptime_seconds", facts[name].uptime_seconds)}
        for name, probe in zip(urls, probes, strict=True)
    ]  # fmt: skip
    return {"services": rows, "stats": stats, "stats_error": stats_error, "checked": time.strftime("%H:%M:%S")}


@router.get("/", response_class=HTMLResponse)
async def overview_page(request: Request, site: SiteDep):
    return site.render(request, "overview.html", page="overview", **await overview(site))


@router.get("/fragments/overview", response_class=HTMLResponse)
async def overview_fragment(request: Request, site: SiteDep):
    return site.render(request, "_overview.html", **await overview(site))
