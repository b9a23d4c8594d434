"""Deploy / rollback per service, each run as `aistack deploy|rollback SERVICE` in its own process."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from aistack import services
from aistack.dashboard.deploy import ACTIONS
from aistack.dashboard.security import checked_form, require_login
from aistack.dashboard.site import Site, SiteDep

router = APIRouter(dependencies=[Depends(require_login)])


async def deploy_log(site: Site) -> dict[str, Any]:
    """What the log fragment shows (polled while a deploy runs): the job's log, or an earlier one's."""
    job = site.deploys.last
    earlier, job_log = await asyncio.to_thread(lambda: (site.deploys.earlier_log(), job.log() if job else ""))
    return {"job": job, "job_log": job_log, "earlier": earlier}


@router.get("/deploy", response_class=HTMLResponse)
async def deploy_page(request: Request, site: SiteDep):
    facts, log = await asyncio.gather(site.facts(), deploy_log(site))
    rows = [{"name": name, "facts": facts[name]} for name in services.NAMES]
    return site.render(request, "deploy.html", page="deploy", actions=ACTIONS, services=rows, **log)


@router.get("/fragments/deploy", response_class=HTMLResponse)
async def deploy_fragment(request: Request, site: SiteDep):
    return site.render(request, "_deploy_log.html", **await deploy_log(site))


@router.post("/deploy/{service}/{action}")
async def run_deploy(request: Request, site: SiteDep, service: str, action: str):
    await checked_form(request)
    try:
        await asyncio.to_thread(site.deploys.start, service, action)
    except ValueError as exc:
        return site.redirect("/deploy", str(exc), "error", request=request)
    return site.redirect("/deploy", f"Started `aistack {action} {service}`.", request=request)
