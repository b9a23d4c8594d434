"""The aider-wrapper HTTP service.

    GET  /health                   WrapperHealth; never spawns aider, never waits on the LLM
    POST /api/execute              ExecuteRequest -> ExecuteResult (200 also when status=error); with
                                   `Accept: application/x-ndjson`, aider's output as it comes, then the
                                   result (ExecuteProgress lines)
    POST /api/runs/{run_id}/cancel ends that run's whole process group

A request's `context.test_command` (a shell command, as a task's check) makes aider test its own
edits and reflect on a failure (`--auto-test --test-cmd`): in aider's sandbox, within its timeout.

A run holds its workspace (a second run there gets 409) and one of AIDER_MAX_PARALLEL slots;
runs beyond the limit wait for a slot (the orchestrator already bounds its own concurrency, and
waiting beats making it retry). A client that disconnects cancels its run. Each run goes to one
of the LLM servers (`LLAMA_CPP_URLS`), the same one for every run of a task while it is healthy
(`aistack.llm_routing`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from aistack import __version__
from aistack.aider_wrapper import gitstate, invocation
from aistack.aider_wrapper.runs import ActiveRun, AiderCheck, Busy, Job, RunRegistry, check_aider, execute
from aistack.config import Settings, resolve_env_file
from aistack.contracts import NDJSON, ExecuteProgress, ExecuteRequest, ExecuteResult, HealthSummary, WrapperHealth
from aistack.gitcli import GitError, confine_repository
from aistack.llm_routing import Router
from aistack.paths import PathNotAllowed, confine
from aistack.sandbox import Sandbox
from aistack.web import check_bind, error_responses, http_error, install_error_handlers, require_api_key, sends_key, serve

log = logging.getLogger("aistack.aider_wrapper")

DISCONNECT_POLL_SECONDS = 0.5
CANCEL_WAIT_SECONDS = 5.0
TEST_COMMAND_MAX_CHARS = 10_000  # as a task's check_command


class WrapperState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sandbox = Sandbox(settings, resolve_env_file())  # ConfigError when RALPH_SANDBOX=bwrap cannot be had
        self.files = invocation.write_model_files(settings)
        self.registry = RunRegistry(settings.aider_max_parallel)
        self.aider = AiderCheck(None, None, "not checked yet")
        self.router = Router.from_settings(settings)  # which LLM server each task's runs go to


def create_app(settings: Settings) -> FastAPI:
    state = WrapperState(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        # Before the first request: whether aider runs at all (cached for the service's life).
        state.aider = await asyncio.to_thread(check_aider, settings, state.files)
        if state.aider.available:
            log.info("aider: %s (%s)", state.aider.path, state.aider.version)
        else:
            log.warning("aider is not available: %s", state.aider.problem)
        log.info("aider runs in sandbox %s (%s)", "bwrap" if state.sandbox.bwrap else "none", state.sandbox.reason)
        await state.router.poll()  # the first request finds the LLM servers' health known
        state.router.start()
        try:
            yield
        finally:
            await state.router.close()

    app = FastAPI(title="aistack aider-wrapper", version=__version__, lifespan=lifespan)
    started = time.monotonic()
    install_error_handlers(app)
    require_api_key(app, settings.api_key)

    @app.get("/health", response_model=WrapperHealth | HealthSummary)
    async def health(request: Request) -> WrapperHealth | HealthSummary:
        """The details (workspace root, the LLM servers) only with the API key, where one is set."""
        llm_ok = state.router.problem() is None
        status = "healthy" if state.aider.available and llm_ok else "degraded"
        if not sends_key(request.headers, settings.api_key):
            return HealthSummary(status=status)
        return WrapperHealth(
            status=status,
            version=__version__,
            aider_available=state.aider.available,
            workspace=str(settings.workspace_root),
            llama_cpp_url=settings.llm_urls[0],
            llm_reachable=llm_ok,
            llm_endpoints=state.router.endpoints(),
            isolation=state.sandbox.isolation(),
            uptime_seconds=round(time.monotonic() - started, 1),
        )

    # 400: a body that is not even text; 401: with RALPH_WIGGUM_API_KEY set; 503: aider is not installed
    streamed: dict[int | str, dict[str, Any]] = {200: {"content": {NDJSON: {}}, "description": "ExecuteResult, or ExecuteProgress lines"}}

    @app.post("/api/execute", response_model=ExecuteResult, responses={**error_responses(400, 401, 409, 422, 503), **streamed})
    async def execute_run(body: ExecuteRequest, request: Request) -> ExecuteResult | StreamingResponse:
        if not state.aider.available:
            raise http_error(503, f"aider is not available: {state.aider.problem}")
        job = await _validate(settings, body)
        try:
            run = state.registry.claim(job.workspace, body.run_id)
        except Busy as exc:
            raise http_error(409, str(exc), exc.field) from None
        if NDJSON in request.headers.get("accept", ""):
            return _streamed(state, job, run)
        watcher = asyncio.create_task(_cancel_on_disconnect(request, run))
        try:
            return await execute(settings, state.files, state.aider, state.sandbox, state.router, job, run, state.registry)
        finally:
            watcher.cancel()
            state.registry.release(run)

    @app.post("/api/runs/{run_id}/cancel", responses=error_responses(401, 404, 422))
    async def cancel_run(run_id: str) -> dict:
        run = state.registry.get(run_id)
        if run is None:
            raise http_error(404, f"no run {run_id!r} is in progress", "run_id")
        run.cancel.set()
        try:
            async with asyncio.timeout(CANCEL_WAIT_SECONDS):
                await run.finished.wait()
        except TimeoutError:
            return {"run_id": run_id, "cancelled": True, "ended": False}
        return {"run_id": run_id, "cancelled": True, "ended": True}

    return app


def _streamed(state: WrapperState, job: Job, run: ActiveRun) -> StreamingResponse:
    """The run's NDJSON answer: aider's output as the wrapper reads it, each piece with its read
    time, then the result. The run is the same as a plain request's and starts now; a client that
    goes away cancels it (the answer is cancelled where it waits), and it is released once ended."""
    pieces: asyncio.Queue[ExecuteProgress | None] = asyncio.Queue()

    def read(text: str) -> None:
        pieces.put_nowait(ExecuteProgress(output=text, at=datetime.now(UTC)))

    async def work() -> ExecuteResult:
        try:
            return await execute(state.settings, state.files, state.aider, state.sandbox, state.router, job, run, state.registry, read)
        finally:
            pieces.put_nowait(None)
            state.registry.release(run)

    running = asyncio.create_task(work())
    _RUNNING.add(running)  # the event loop keeps only a weak reference to a task
    running.add_done_callback(_RUNNING.discard)

    async def lines() -> AsyncIterator[str]:
        try:
            while (piece := await pieces.get()) is not None:
                yield piece.model_dump_json() + "\n"
            yield ExecuteProgress(result=await running).model_dump_json() + "\n"
        finally:
            if not running.done():
                run.cancel.set()

    return StreamingResponse(lines(), media_type=NDJSON)


_RUNNING: set[asyncio.Task] = set()


async def _cancel_on_disconnect(request: Request, run: ActiveRun) -> None:
    """Nobody is waiting for the answer any more: stop aider instead of finishing for no one."""
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_SECONDS)
    log.info("client of run %s disconnected: cancelling it", run.run_id)
    run.cancel.set()


async def _validate(settings: Settings, body: ExecuteRequest) -> Job:
    """Resolve and confine every path (the workspace's git directories too); 422 naming the field
    when one is not allowed, as for any other invalid field."""
    roots = [settings.workspace_root, settings.worktrees_dir]
    allowed = " or ".join(str(r) for r in roots)
    try:
        workspace = confine(body.workspace, roots, base=settings.workspace_root)
    except PathNotAllowed as exc:
        raise http_error(422, f"workspace: {exc}", "workspace") from None
    if not workspace.exists():
        raise http_error(422, f"workspace {body.workspace!r} does not exist (it must be a git repository inside {allowed})", "workspace")
    if not workspace.is_dir():
        raise http_error(422, f"workspace {body.workspace!r} is not a directory", "workspace")
    try:
        top = await gitstate.toplevel(workspace)
    except GitError:
        raise http_error(422, f"workspace {body.workspace!r} is not a git repository (run `git init` there first)", "workspace") from None
    if top != workspace:
        raise http_error(422, f"workspace {body.workspace!r} must be the top directory of its git repository ({top})", "workspace")
    try:
        await confine_repository(workspace, roots)
    except PathNotAllowed as exc:
        raise http_error(422, f"workspace: {exc}", "workspace") from None

    def inside(names: list[str], field: str, must_exist: bool) -> list[Path]:
        paths = []
        for i, name in enumerate(names):
            try:
                path = confine(name, [workspace], base=workspace)
            except PathNotAllowed as exc:
                raise http_error(422, f"{field}[{i}]: {exc}", f"{field}[{i}]") from None
            if ".git" in path.relative_to(workspace).parts:  # hooks and config there would run code
                raise http_error(422, f"{field}[{i}]: {name!r} lies inside .git, which aider may not touch", f"{field}[{i}]")
            if path == workspace or (path.exists() and not path.is_file()):
                raise http_error(422, f"{field}[{i}]: {name!r} is not a file", f"{field}[{i}]")
            if must_exist and not path.exists():
                raise http_error(422, f"{field}[{i}]: {name!r} does not exist", f"{field}[{i}]")
            paths.append(path)
        return paths

    test_command = body.context.get("test_command")
    if test_command is not None and not (isinstance(test_command, str) and 0 < len(test_command) <= TEST_COMMAND_MAX_CHARS):
        raise http_error(422, f"context.test_command must be a shell command of 1 to {TEST_COMMAND_MAX_CHARS} characters",
                         "context.test_command")  # fmt: skip
    limit = settings.aider_timeout_seconds
    return Job(
        prompt=body.prompt,
        workspace=workspace,
        files=inside(body.files, "files", must_exist=False),  # aider creates a missing one
        read_only_files=inside(body.read_only_files, "read_only_files", must_exist=True),
        timeout_seconds=min(body.timeout_seconds or limit, limit),
        task=body.task_id or str(workspace),  # a task's iterations share its worktree
        test_command=test_command,
        sampling=body.sampling,
    )


def run(settings: Settings) -> int:
    """`aistack serve aider-wrapper`: wait for llama-cpp (pre-flight), then serve until stopped."""
    check_bind(settings.aistack_bind_address, settings.api_key)
    from aistack.preflight import before_serve

    before_serve(settings, "aider-wrapper")
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per health poll
    serve(create_app(settings), settings.aistack_bind_address, settings.aider_wrapper_port, settings.log_level)
    return 0
