"""HTTP routes of the orchestrator: parse, call the store or the engine, answer."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Body, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette import EventSourceResponse, ServerSentEvent

from aistack import __version__
from aistack.config import ConfigError, load_settings
from aistack.contracts import (
    ApprovalDecision,
    EventView,
    IterationLimits,
    IterationView,
    RalphHealth,
    Stats,
    TaskAccepted,
    TaskCreate,
    TaskPage,
    TaskStatus,
    TaskView,
)
from aistack.paths import PathNotAllowed, confine
from aistack.ralph_wiggum import rules, worktrees
from aistack.ralph_wiggum.loop import LoopEngine, limits_from
from aistack.ralph_wiggum.store import Store, Task, event_view, iteration_view, task_view
from aistack.web import http_error

router = APIRouter()
# Reads run in asyncio's small default executor rather than in a sync route's thread pool: under
# 50 concurrent clients the pool's 40 threads fight over the GIL (measured: 485 → 916 requests/s).
SSE_KEEPALIVE_SECONDS = 15.0
MAX_INT = 2**62  # keeps numbers inside what every database integer column holds


def _engine(request: Request) -> LoopEngine:
    return request.app.state.engine


def _store(request: Request) -> Store:
    return request.app.state.store


def _task_or_404(store: Store, task_id: str) -> Task:
    task = store.get(task_id)
    if task is None:
        raise http_error(404, f"no task with id {task_id!r}", "task_id")
    return task


@router.get("/health", response_model=RalphHealth, tags=["service"])
async def health(request: Request) -> RalphHealth:
    """Answers at once from cached state; `degraded` when a backend's service is unreachable."""
    engine = _engine(request)
    backends = [b.health() for b in engine.backends.values()]
    degraded = any(b.reachable is False or not b.available for b in backends)
    return RalphHealth(
        status="degraded" if degraded else "healthy",
        version=__version__,
        loop_enabled=engine.settings.ralph_loop_enabled,
        active_tasks=engine.active_count,
        backends=backends,
        uptime_seconds=round(time.monotonic() - request.app.state.started, 1),
    )


# --- tasks ---------------------------------------------------------------------------------------


@router.post("/tasks", status_code=202, response_model=TaskAccepted, tags=["tasks"])
async def submit(body: TaskCreate, request: Request) -> TaskAccepted:
    engine = _engine(request)
    task = await asyncio.to_thread(_accept, engine, _store(request), body)
    engine.wake()
    how = f"{task.max_iterations} iterations ({task.limit_source}"
    how += f", {task.complexity})" if task.complexity else ")"
    return TaskAccepted(task_id=task.id, status=TaskStatus.queued, message=f"queued with up to {how}")


def _accept(engine: LoopEngine, store: Store, body: TaskCreate) -> Task:
    """Validate a submission against the configuration and the file system, then store it."""
    if body.backend not in engine.backends:
        raise http_error(422, f"unknown backend {body.backend!r}; available: {', '.join(sorted(engine.backends))}", "backend")
    if problem := rules.limit_error(body.max_iterations, engine.limits.cap):
        raise http_error(422, problem, "max_iterations")
    root = engine.settings.workspace_root
    try:
        workspace = confine(body.workspace or ".", [root])
    except PathNotAllowed as exc:
        raise http_error(422, f"workspace must lie inside WORKSPACE_ROOT: {exc}", "workspace") from None
    if problem := worktrees.repository_problem(workspace):
        raise http_error(422, problem, "workspace")
    for key in ("files", "read_only_files"):
        value = body.context.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise http_error(422, f"context.{key} must be a list of file paths", f"context.{key}")
    check = (body.check_command or "").strip() or None
    promise = (body.completion_promise or "").strip() or None
    choice = rules.choose_limit(body.max_iterations, body.prompt, engine.limits)
    return store.add_task(
        id=uuid.uuid4().hex[:12],
        prompt=body.prompt,
        backend=body.backend,
        workspace=str(workspace),
        max_iterations=choice.max_iterations,
        limit_source=choice.source,
        complexity=choice.complexity.value if choice.complexity else None,
        complexity_reason=choice.reason,
        require_approval=body.require_approval,
        check_command=check,
        completion_promise=promise,
        context=body.context,
    )


@router.get("/tasks", response_model=TaskPage, tags=["tasks"])
async def list_tasks(
    request: Request,
    status: Annotated[TaskStatus | None, Query(description="Only tasks in this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
) -> TaskPage:
    rows, total = await asyncio.to_thread(_store(request).list_tasks, status.value if status else None, limit, offset)
    return TaskPage(items=[task_view(t) for t in rows], total=total, limit=limit, offset=offset)


@router.get("/tasks/{task_id}", response_model=TaskView, tags=["tasks"])
async def get_task(task_id: str, request: Request) -> TaskView:
    return task_view(await asyncio.to_thread(_task_or_404, _store(request), task_id))


@router.get("/tasks/{task_id}/iterations", response_model=list[IterationView], tags=["tasks"])
async def get_iterations(task_id: str, request: Request) -> list[IterationView]:
    store = _store(request)
    await asyncio.to_thread(_task_or_404, store, task_id)
    return [iteration_view(it) for it in await asyncio.to_thread(store.iterations, task_id)]


@router.get("/tasks/{task_id}/diff", tags=["tasks"])
def get_diff(task_id: str, request: Request, iteration: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None) -> dict:
    """Unified diff of one iteration's checkpoint, or of the whole task so far."""
    store = _store(request)
    task = _task_or_404(store, task_id)
    commits = [(it.number, it.checkpoint_commit) for it in store.iterations(task_id)]
    if iteration is not None:
        commit = dict(commits).get(iteration)
        if iteration not in dict(commits):
            raise http_error(404, f"task {task_id} has no iteration {iteration}", "iteration")
        earlier = [c for n, c in commits if n < iteration and c]
        base = earlier[-1] if earlier else task.base_commit
    else:
        done = [c for _, c in commits if c]
        commit, base = (done[-1] if done else None), task.base_commit
    text = worktrees.diff(Path(task.workspace), base, commit) if commit and base else ""
    return {"task_id": task_id, "iteration": iteration, "base": base, "commit": commit, "diff": text}


@router.get("/tasks/{task_id}/events", tags=["tasks"])
async def stream_events(
    task_id: str,
    request: Request,
    after: Annotated[int | None, Query(ge=0, le=MAX_INT, description="Resume after this event id (or send Last-Event-ID).")] = None,
):
    """Server-Sent Events of one task; ends after the task reaches a final status."""
    store = _store(request)
    if await asyncio.to_thread(store.get, task_id) is None:
        raise http_error(404, f"no task with id {task_id!r}", "task_id")
    header = request.headers.get("last-event-id", "")
    last_id = after if after is not None else (min(int(header), MAX_INT) if header.isdigit() else 0)
    notifier = request.app.state.notifier

    async def events():
        nonlocal last_id
        while True:
            wake = notifier.current()
            # status first, events second: a final status read here has its events in the batch
            task = await asyncio.to_thread(store.get, task_id)
            batch = await asyncio.to_thread(store.events_after, task_id, last_id)
            for ev in batch:
                last_id = ev.id
                view = event_view(ev)
                yield ServerSentEvent(id=str(ev.id), event=ev.type, data=view.model_dump_json())
            if not batch:
                if TaskStatus(task.status).terminal:
                    yield ServerSentEvent(event="end", data=json.dumps({"task_id": task_id, "status": task.status}))
                    return
                try:
                    await asyncio.wait_for(wake.wait(), SSE_KEEPALIVE_SECONDS)
                except TimeoutError:
                    pass

    return EventSourceResponse(events(), ping=SSE_KEEPALIVE_SECONDS)


@router.get("/tasks/{task_id}/events.json", response_model=list[EventView], tags=["tasks"])
def list_events(task_id: str, request: Request, after: Annotated[int, Query(ge=0, le=MAX_INT)] = 0) -> list[EventView]:
    """The same events as plain JSON, for clients without SSE."""
    store = _store(request)
    _task_or_404(store, task_id)
    return [event_view(ev) for ev in store.events_after(task_id, after)]


@router.post("/tasks/{task_id}/stop", status_code=202, response_model=TaskAccepted, tags=["tasks"])
async def stop(task_id: str, request: Request) -> TaskAccepted:
    """Stop a task; a running iteration is ended (its whole process group) at once."""
    store, engine = _store(request), _engine(request)
    task = await asyncio.to_thread(store.get, task_id)
    if task is None:
        raise http_error(404, f"no task with id {task_id!r}", "task_id")
    if TaskStatus(task.status).terminal:
        raise http_error(409, f"task {task_id} already ended as {task.status}")
    await asyncio.to_thread(store.transition, task_id, stop_requested=True)
    if not engine.stop(task_id):
        stopped = await asyncio.to_thread(
            store.transition, task_id, {"queued", "awaiting_approval"}, status="stopped", completion_reason="stopped by user"
        )
        if stopped is not None and stopped.worktree:
            await asyncio.to_thread(worktrees.remove, Path(stopped.workspace), Path(stopped.worktree))
    return TaskAccepted(task_id=task_id, status=TaskStatus.stopped, message="stop requested")


@router.post("/tasks/{task_id}/approve", response_model=TaskAccepted, tags=["tasks"])
async def approve(
    task_id: str,
    request: Request,
    decision: Annotated[ApprovalDecision | None, Body()] = None,
    approved: Annotated[bool | None, Query(description="Alternative to the body.")] = None,
) -> TaskAccepted:
    """Let the next iteration run (`approved: true`) or end the task as `rejected`."""
    if decision is None and approved is None:
        raise http_error(422, "approved: required, true or false (in the body or as ?approved=)", "approved")
    yes = decision.approved if decision is not None else approved
    store, engine = _store(request), _engine(request)
    task = await asyncio.to_thread(store.get, task_id)
    if task is None:
        raise http_error(404, f"no task with id {task_id!r}", "task_id")
    if task.status != TaskStatus.awaiting_approval.value:
        raise http_error(409, f"task {task_id} is {task.status}, not awaiting approval")
    if yes:
        changed = await asyncio.to_thread(
            store.transition, task_id, {"awaiting_approval"}, status="running", approved_through=task.iteration + 1
        )
        engine.wake()
    else:
        changed = await asyncio.to_thread(
            store.transition, task_id, {"awaiting_approval"}, status="rejected", completion_reason="rejected by user"
        )
        if changed is not None and changed.worktree:
            await asyncio.to_thread(worktrees.remove, Path(changed.workspace), Path(changed.worktree))
    if changed is None:
        raise http_error(409, f"task {task_id} changed status meanwhile; try again")
    status = TaskStatus(changed.status)
    return TaskAccepted(task_id=task_id, status=status, message=f"iteration {task.iteration + 1} approved" if yes else "rejected")


# --- statistics and configuration -----------------------------------------------------------------


@router.get("/stats", response_model=Stats, tags=["service"])
def stats(request: Request) -> Stats:
    return _store(request).stats()


@router.get("/metrics", tags=["service"])
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)


def _limits_view(engine: LoopEngine) -> IterationLimits:
    s = engine.settings
    return IterationLimits(
        ralph_max_iterations_simple=s.ralph_max_iterations_simple,
        ralph_max_iterations_default=s.ralph_max_iterations_default,
        ralph_max_iterations_complex=s.ralph_max_iterations_complex,
        ralph_adaptive_iterations=s.ralph_adaptive_iterations,
        ralph_max_iterations_cap=s.ralph_max_iterations_cap,
    )


@router.get("/config/limits", response_model=IterationLimits, tags=["service"])
def get_limits(request: Request) -> IterationLimits:
    return _limits_view(_engine(request))


@router.post("/config/reload", response_model=IterationLimits, tags=["service"])
def reload_limits(request: Request) -> IterationLimits:
    """Re-read the .env and apply the iteration limits without a restart (other settings need one)."""
    engine = _engine(request)
    try:
        fresh = load_settings()
    except ConfigError as exc:
        raise http_error(422, str(exc)) from None
    updates = {name: getattr(fresh, name) for name in IterationLimits.model_fields}
    engine.settings = engine.settings.model_copy(update=updates)
    engine.limits = limits_from(engine.settings)
    return _limits_view(engine)
