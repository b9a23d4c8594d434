"""HTTP routes of the orchestrator: parse, call the task service (or the store, for reads), answer."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated

from fastapi import APIRouter, Body, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette import EventSourceResponse, ServerSentEvent

from aistack import __version__
from aistack.config import ConfigError, load_settings
from aistack.contracts import (
    MAX_INT,
    ApprovalDecision,
    DailyStats,
    EventView,
    HealthSummary,
    IterationLimits,
    IterationView,
    ProposalDecision,
    ProposalView,
    RalphHealth,
    Stats,
    TaskAccepted,
    TaskCreate,
    TaskPage,
    TaskStatus,
    TaskView,
)
from aistack.ralph_wiggum import space
from aistack.ralph_wiggum.learner import Learner
from aistack.ralph_wiggum.scheduler import Scheduler
from aistack.ralph_wiggum.store import Store, unreachable
from aistack.ralph_wiggum.tasks import TaskError, TaskService
from aistack.web import error_body, error_responses, http_error, sends_key

router = APIRouter(responses=error_responses(401, 422))  # 401 when RALPH_WIGGUM_API_KEY is set
NOT_FOUND = error_responses(404)
BAD_BODY = error_responses(400)  # a body that is not even text (FastAPI's own answer)
SSE_KEEPALIVE_SECONDS = 15.0
SSE_POLL_SECONDS = 0.5  # a store other processes write to (PostgreSQL) is read this often, woken or not


def _tasks(request: Request) -> TaskService:
    return request.app.state.tasks


def _store(request: Request) -> Store:
    return request.app.state.store


def _learner(request: Request) -> Learner:
    return request.app.state.learner


def _scheduler(request: Request) -> Scheduler:
    return request.app.state.scheduler


async def task_error(_: Request, exc: Exception) -> JSONResponse:
    """A TaskError as `{"detail", "field"}` with its own status (installed by `app.py`)."""
    assert isinstance(exc, TaskError)
    return JSONResponse(error_body(str(exc), exc.field), status_code=exc.status)


async def storage_error(request: Request, exc: Exception) -> JSONResponse:
    """A write the full data dir could not take as 507, and a database that cannot be reached
    (PostgreSQL restarting, cut off) as 503, each with the reason; anything else stays a 500
    (raised on to the generic handler). Installed by `app.py` for the database's errors."""
    if (down := unreachable(exc)) is not None:
        return JSONResponse(error_body(f"{down}; try again shortly"), status_code=503, headers={"Retry-After": "2"})
    why = space.reason(exc)
    if why is None:
        raise exc
    where = request.app.state.settings.aistack_data_dir
    return JSONResponse(error_body(f"no space left for the data dir {where} ({why}): writes are refused until there is; "
                                   "reads still work"), status_code=507)  # fmt: skip


@router.get("/health", response_model=RalphHealth | HealthSummary, tags=["service"])
async def health(request: Request) -> RalphHealth | HealthSummary:
    """Answers at once from cached state; `degraded` when a backend's service is unreachable or
    no backend can take tasks (one that is not installed or configured is listed, with why, and
    degrades nothing). The details (backends, their commands and URLs) only with the API key,
    where one is set."""
    backends = [b.health() for b in _tasks(request).backends.values()]
    degraded = any(b.reachable is False for b in backends) or not any(b.available for b in backends)
    status = "degraded" if degraded else "healthy"
    if not sends_key(request.headers, request.app.state.settings.api_key):
        return HealthSummary(status=status)
    return RalphHealth(
        status=status,
        version=__version__,
        loop_enabled=request.app.state.settings.ralph_loop_enabled,
        active_tasks=_scheduler(request).active_count,
        backends=backends,
        isolation=request.app.state.sandbox.isolation(),
        uptime_seconds=round(time.monotonic() - request.app.state.started, 1),
    )


# --- tasks ---------------------------------------------------------------------------------------


@router.post("/tasks", status_code=202, response_model=TaskAccepted, tags=["tasks"], responses=BAD_BODY)
async def submit(body: TaskCreate, request: Request) -> TaskAccepted:
    task = await _tasks(request).accept(body)
    how = f"{task.max_iterations} iterations ({task.limit_source}"
    how += f", {task.complexity})" if task.complexity else ")"
    return TaskAccepted(task_id=task.id, status=TaskStatus.queued, message=f"queued with up to {how}")


@router.get("/tasks", response_model=TaskPage, tags=["tasks"])
async def list_tasks(
    request: Request,
    status: Annotated[TaskStatus | None, Query(description="Only tasks in this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
) -> TaskPage:
    rows, total = await _store(request).list_tasks(status, limit, offset)
    return TaskPage(items=[t.view() for t in rows], total=total, limit=limit, offset=offset)


@router.get("/tasks/{task_id}", response_model=TaskView, tags=["tasks"], responses=NOT_FOUND)
async def get_task(task_id: str, request: Request) -> TaskView:
    return (await _tasks(request).get(task_id)).view()


@router.get("/tasks/{task_id}/iterations", response_model=list[IterationView], tags=["tasks"], responses=NOT_FOUND)
async def get_iterations(task_id: str, request: Request) -> list[IterationView]:
    await _tasks(request).get(task_id)
    return [it.view() for it in await _store(request).iterations(task_id)]


@router.get("/tasks/{task_id}/diff", tags=["tasks"], responses=NOT_FOUND)
async def get_diff(task_id: str, request: Request, iteration: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None) -> dict:
    """Unified diff of one iteration's checkpoint, or of the whole task so far."""
    base, commit, text = await _tasks(request).diff(task_id, iteration)
    return {"task_id": task_id, "iteration": iteration, "base": base, "commit": commit, "diff": text}


@router.get("/tasks/{task_id}/events", tags=["tasks"], responses=NOT_FOUND)
async def stream_events(
    task_id: str,
    request: Request,
    after: Annotated[int | None, Query(ge=0, le=MAX_INT, description="Resume after this event id (or send Last-Event-ID).")] = None,
    last_event_id: Annotated[int | None, Header(ge=0, le=MAX_INT, description="Sent by a reconnecting EventSource.")] = None,
):
    """Server-Sent Events of one task; ends after the task reaches a final status."""
    tasks, store = _tasks(request), _store(request)
    await tasks.get(task_id)
    last_id = after if after is not None else (last_event_id or 0)
    notifier = request.app.state.notifier

    async def events():
        nonlocal last_id
        while True:
            wake = notifier.current()
            # status first, events second: a final status read here has its events in the batch
            task = await tasks.get(task_id)
            batch = await store.events_after(task_id, last_id)
            for ev in batch:
                last_id = ev.id
                yield ServerSentEvent(id=str(ev.id), event=ev.type, data=ev.view().model_dump_json())
            if not batch:
                if task.status.terminal:
                    yield ServerSentEvent(event="end", data=json.dumps({"task_id": task_id, "status": task.status.value}))
                    return
                try:  # asyncio.timeout: a client's disconnect (a cancel) is never lost to a wake-up
                    async with asyncio.timeout(SSE_POLL_SECONDS if store.shared else SSE_KEEPALIVE_SECONDS):
                        await wake.wait()
                except TimeoutError:
                    pass

    return EventSourceResponse(events(), ping=SSE_KEEPALIVE_SECONDS)


@router.get("/tasks/{task_id}/events.json", response_model=list[EventView], tags=["tasks"], responses=NOT_FOUND)
async def list_events(task_id: str, request: Request, after: Annotated[int, Query(ge=0, le=MAX_INT)] = 0) -> list[EventView]:
    """The same events as plain JSON, for clients without SSE."""
    await _tasks(request).get(task_id)
    return [ev.view() for ev in await _store(request).events_after(task_id, after)]


@router.post("/tasks/{task_id}/stop", status_code=202, response_model=TaskAccepted, tags=["tasks"], responses=error_responses(404, 409))
async def stop(task_id: str, request: Request) -> TaskAccepted:
    """Stop a task; a running iteration is ended (its whole process group) at once."""
    await _tasks(request).stop(task_id)
    return TaskAccepted(task_id=task_id, status=TaskStatus.stopped, message="stop requested")


@router.post("/tasks/{task_id}/approve", response_model=TaskAccepted, tags=["tasks"], responses=error_responses(400, 404, 409))
async def approve(
    task_id: str,
    request: Request,
    decision: Annotated[ApprovalDecision | None, Body()] = None,
    approved: Annotated[bool | None, Query(description="Alternative to the body.")] = None,
) -> TaskAccepted:
    """Let the next iteration run (`approved: true`) or end the task as `rejected`."""
    if decision is None and approved is None:
        raise http_error(422, "approved: required, true or false (in the body or as ?approved=)", "approved")
    yes = bool(decision.approved if decision is not None else approved)
    task = await _tasks(request).decide(task_id, yes)
    message = f"iteration {task.approved_through} approved" if yes else "rejected"
    return TaskAccepted(task_id=task_id, status=task.status, message=message)


# --- statistics and configuration -----------------------------------------------------------------


@router.get("/stats", response_model=Stats, tags=["service"])
async def stats(request: Request) -> Stats:
    return await _store(request).stats()


@router.get("/stats/daily", response_model=DailyStats, tags=["service"])
async def daily_stats(request: Request) -> DailyStats:
    """The rates of `/stats` per day the tasks finished on, for plots over time."""
    return await _store(request).daily_stats()


@router.get("/metrics", response_class=PlainTextResponse, tags=["service"])
def metrics(request: Request) -> Response:  # sync: the collector scans the database in this worker thread
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/config/limits", response_model=IterationLimits, tags=["service"])
async def get_limits(request: Request) -> IterationLimits:
    return request.app.state.settings.iteration_limits()


@router.post("/config/reload", response_model=IterationLimits, tags=["service"])
async def reload_limits(request: Request) -> IterationLimits:
    """Re-read the .env and apply the iteration limits without a restart (other settings need one)."""
    try:
        fresh = await asyncio.to_thread(load_settings)
    except ConfigError as exc:
        raise http_error(422, str(exc)) from None
    settings = request.app.state.settings  # shared by the task service, the runner and the scheduler
    for name in IterationLimits.model_fields:
        setattr(settings, name, getattr(fresh, name))
    return settings.iteration_limits()


# --- learning -----------------------------------------------------------------------------------

ProposalId = Annotated[int, Path(ge=1, le=MAX_INT)]
PROPOSAL_STATUSES = ("open", "accepted", "rejected", "rolled_back", "superseded")


@router.post("/learn", response_model=list[ProposalView], tags=["learning"])
async def learn(request: Request) -> list[ProposalView]:
    """Learn from every finished task's outcome now: the proposals made or refreshed (each with its evidence)."""
    return [p.view() for p in await _learner(request).learn()]


@router.get("/learn/proposals", response_model=list[ProposalView], tags=["learning"])
async def list_proposals(
    request: Request, status: Annotated[str | None, Query(description="Only proposals in this status.")] = None
) -> list[ProposalView]:
    if status is not None and status not in PROPOSAL_STATUSES:
        raise http_error(422, f"status must be one of {', '.join(PROPOSAL_STATUSES)}, got {status!r}", "status")
    return [p.view() for p in await _store(request).proposals(status)]


@router.get("/learn/proposals/{proposal_id}", response_model=ProposalView, tags=["learning"], responses=NOT_FOUND)
async def get_proposal(proposal_id: ProposalId, request: Request) -> ProposalView:
    """One proposal with every decision taken on it."""
    proposal = await _learner(request).get(proposal_id)
    return proposal.view(await _store(request).decisions(proposal_id))


DECIDED = error_responses(400, 404, 409)


@router.post("/learn/proposals/{proposal_id}/accept", response_model=ProposalView, tags=["learning"], responses=DECIDED)
async def accept_proposal(proposal_id: ProposalId, request: Request, body: ProposalDecision | None = None) -> ProposalView:
    """Write its settings to the .env (atomic, with a backup) and apply them without a restart; a drafted task is submitted."""
    body = body or ProposalDecision()
    await _learner(request).accept(proposal_id, body.who, body.detail)
    return await get_proposal(proposal_id, request)


@router.post("/learn/proposals/{proposal_id}/reject", response_model=ProposalView, tags=["learning"], responses=DECIDED)
async def reject_proposal(proposal_id: ProposalId, request: Request, body: ProposalDecision | None = None) -> ProposalView:
    body = body or ProposalDecision()
    await _learner(request).reject(proposal_id, body.who, body.detail)
    return await get_proposal(proposal_id, request)


@router.post("/learn/proposals/{proposal_id}/rollback", response_model=ProposalView, tags=["learning"], responses=DECIDED)
async def rollback_proposal(proposal_id: ProposalId, request: Request, body: ProposalDecision | None = None) -> ProposalView:
    """Write back and apply the values an accepted proposal replaced."""
    body = body or ProposalDecision()
    await _learner(request).rollback(proposal_id, body.who, body.detail)
    return await get_proposal(proposal_id, request)
