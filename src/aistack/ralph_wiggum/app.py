"""The orchestrator service: wires store, backends, loop and routes into one FastAPI app."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from starlette.routing import Route

from aistack import __version__
from aistack.config import ConfigError, Settings, resolve_env_file
from aistack.gitremote import Remotes
from aistack.preflight import before_serve
from aistack.ralph_wiggum import migrations, rules
from aistack.ralph_wiggum.api import router, storage_error, task_error
from aistack.ralph_wiggum.backends import configured_backends
from aistack.ralph_wiggum.events import Notifier
from aistack.ralph_wiggum.learner import Learner
from aistack.ralph_wiggum.mcp_server import HttpEndpoint
from aistack.ralph_wiggum.metrics import registry_for
from aistack.ralph_wiggum.scheduler import Scheduler
from aistack.ralph_wiggum.store import Store
from aistack.ralph_wiggum.tasks import TaskError, TaskService
from aistack.ralph_wiggum.workspace import GitWorktrees
from aistack.sandbox import Sandbox
from aistack.web import check_bind, install_error_handlers, require_api_key, serve

log = logging.getLogger("aistack.ralph")


ROLES = ("all", "api", "worker")  # api: the routes without the loop; worker: the loop (and /health); all: both
WORKER_PATHS = ("/health", "/metrics")


def create_app(settings: Settings, role: str = "all") -> FastAPI:
    sandbox = Sandbox(settings, resolve_env_file())  # ConfigError when RALPH_SANDBOX=bwrap cannot be had
    notifier = Notifier()
    store = open_store(settings, on_event=notifier.notify)
    mcp = HttpEndpoint(settings.api_key, settings.aistack_bind_address)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        notifier.bind(asyncio.get_running_loop())
        backends = configured_backends(settings, sandbox)
        remotes = Remotes(settings.ralph_git_credentials_file, settings.remote_file_roots)
        workspace = GitWorktrees(settings.worktrees_dir, settings.workspace_root, remotes, settings.repositories_dir)
        tasks = TaskService(settings, store, workspace, backends, sandbox)
        scheduler = Scheduler(tasks, settings.worker_id)
        learner = Learner(settings, store, tasks, resolve_env_file())
        app.state.tasks, app.state.scheduler, app.state.learner = tasks, scheduler, learner
        app.state.registry = registry_for(store, lambda: scheduler.active_count)
        for backend in backends.values():
            backend.start()
        await learner.start(schedule=role != "api")  # an API replica learns only when asked
        if role != "api":
            scheduler.start()
        who = role if role == "api" else f"{role}, worker {settings.worker_id}"
        log.info("ralph-wiggum %s ready (%s): backends %s, data in %s", __version__, who, ", ".join(backends), settings.aistack_data_dir)
        log.info("store: %s (schema %s)", settings.database_shown, migrations.head())
        log.info("agents and checks: sandbox %s (%s)", "bwrap" if sandbox.bwrap else "none", sandbox.reason)
        try:
            async with mcp.serving(app):
                yield
        finally:
            await learner.stop()
            await scheduler.shutdown()
            for backend in backends.values():
                await backend.close()
            store.close()

    app = FastAPI(
        title="aistack ralph-wiggum",
        version=__version__,
        description="Task API of the Ralph Wiggum loop: submit a task, watch it iterate, approve or stop it.",
        lifespan=lifespan,
    )
    app.state.started = time.monotonic()
    app.state.settings = settings
    app.state.sandbox = sandbox
    app.state.store = store
    app.state.notifier = notifier
    install_error_handlers(app)
    app.add_exception_handler(TaskError, task_error)
    app.add_exception_handler(OperationalError, storage_error)
    app.add_exception_handler(SATimeoutError, storage_error)
    require_api_key(app, settings.api_key, open_paths=("/health",))
    if role == "worker":  # what a probe or Prometheus asks of a worker; tasks are reached through an API replica
        app.include_router(APIRouter(routes=[route for route in router.routes if getattr(route, "path", "") in WORKER_PATHS]))
    else:
        app.include_router(router)
        app.router.routes.append(Route("/mcp", mcp, include_in_schema=False))  # inside the API-key middleware, like every route
    return app


def open_store(settings: Settings, on_event=None) -> Store:
    """The configured store, its schema upgraded; one that cannot be opened stops the service with
    one line (the URL's password masked, as everywhere). A PostgreSQL server that does not answer
    (not up yet, restarting, its name not yet in DNS) is waited for, with backoff, as a running
    replica answers 503 and its loop retries meanwhile: a worker started before its database
    comes up when it does. One that answers with a refusal (a wrong password, no such database)
    stops the service."""
    if settings.aistack_database_url is None:
        settings.db_path.parent.mkdir(parents=True, exist_ok=True)
    attempt, waiting_since, said = 0, time.monotonic(), ""
    while True:
        try:
            store = Store(settings.database_url, on_event, model=served_model(settings))
        except DBAPIError as exc:
            reason = str(exc.orig or exc).strip().splitlines()[0]
            if settings.aistack_database_url is None or not _not_answering(reason):
                raise ConfigError(f"cannot open the database {settings.database_shown}: {reason}") from None
            attempt += 1
            if reason != said:  # one line, not one per try
                log.warning("database %s does not answer (%s): trying again, with backoff", settings.database_shown, reason)
                said = reason
            time.sleep(rules.retry_delay(attempt, 0.0, float("inf")) or 0.0)
            continue
        if attempt:
            log.info("database %s answered after %.0f s", settings.database_shown, time.monotonic() - waiting_since)
        return store


def _not_answering(reason: str) -> bool:
    """Whether libpq's reason says the server did not answer (refused, no route, unknown host) or
    answered that it cannot take connections yet; a FATAL of any other kind is its refusal."""
    return "FATAL:" not in reason or "the database system is" in reason  # … starting up, shutting down, in recovery


def served_model(settings: Settings) -> str:
    """The model the local LLM serves, as the outcomes name it: its file, or the bundled one's name."""
    return settings.llama_cpp_model_file.name if settings.llama_cpp_model_file else settings.llama_cpp_model.value


def run(settings: Settings, role: str = "all") -> int:
    key = settings.api_key
    check_bind(settings.aistack_bind_address, key)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("httpx", "mcp.server.streamable_http"):  # not a line per MCP call (each is an in-process API request)
        logging.getLogger(name).setLevel(logging.WARNING)
    before_serve(settings, "ralph-wiggum")
    serve(create_app(settings, role), settings.aistack_bind_address, settings.ralph_wiggum_port, settings.log_level)
    return 0
