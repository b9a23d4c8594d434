"""Learning: the proposals the orchestrator learned from its finished tasks, with their evidence,
and Accept / Reject / Roll back (the orchestrator writes the .env and applies the change)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from aistack.client import RalphError
from aistack.contracts import MAX_INT, ProposalView
from aistack.dashboard.security import checked_form, require_login
from aistack.dashboard.site import SiteDep, attempt

router = APIRouter(dependencies=[Depends(require_login)])
ACTIONS = {
    "accept": "Accepted: written to the .env and applied to the running orchestrator.",
    "reject": "Rejected.",
    "rollback": "Rolled back: the earlier values are written and applied again.",
}
WHO = "dashboard"  # the dashboard has one login (the API key): its decisions are the dashboard's


@router.get("/learning", response_class=HTMLResponse)
async def learning(request: Request, site: SiteDep):
    found, error = await attempt(site.ralph.proposals())
    proposals = found or []
    return site.render(request, "learning.html", page="learning", proposals=proposals, savings=savings(proposals), error=error)


def savings(proposals: list[ProposalView]) -> list[ProposalView]:
    """The proposals whose evidence says what they would save (iterations and tokens spent on tasks
    that failed anyway), oldest first. A superseded one is left out: the proposal that replaced
    it carries the same class's savings, counted again on newer outcomes."""
    keyed = [p for p in proposals if p.status != "superseded" and {"iterations_saved", "tokens_saved"} <= p.evidence.keys()]
    return sorted(keyed, key=lambda p: p.id)


@router.post("/learning/run")
async def learn_now(request: Request, site: SiteDep):
    await checked_form(request)
    try:
        made = await site.ralph.learn()
    except RalphError as exc:
        return site.redirect("/learning", f"learning failed: {exc.detail}", "error", request=request)
    nothing = "Nothing to propose yet (too few finished tasks, or nothing to change)."
    message = f"{len(made)} proposal(s) made or refreshed." if made else nothing
    return site.redirect("/learning", message, request=request)


@router.post("/learning/{proposal_id}/{action}")
async def decide(request: Request, site: SiteDep, proposal_id: str, action: str):
    posted = await checked_form(request)  # first: a post without its token learns nothing, not even that the id is bad
    if action not in ACTIONS or not proposal_id.isascii() or not proposal_id.isdigit() or not 1 <= int(proposal_id) <= MAX_INT:
        message = f"no proposal {proposal_id!r}, or unknown action {action!r} (allowed: {', '.join(ACTIONS)})"
        return site.render(request, "error.html", 404, title="Learning", message=message)
    why = str(posted.get("detail", "")).strip()[:2000] or None
    try:
        done = await site.ralph.decide_proposal(proposal_id, action, WHO, why)
    except RalphError as exc:
        return site.redirect("/learning", f"{action} refused: {exc.detail}", "error", request=request)
    detail = done.decisions[-1].detail if done.decisions else None
    return site.redirect("/learning", ACTIONS[action] + (f" {detail}." if detail and action == "accept" else ""), request=request)
