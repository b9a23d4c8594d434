"""The orchestrator service: wires store, backends, loop and routes into one FastAPI app."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI

from aistack import __version__
from aistack.config import Settings
from aistack.ralph_wiggum.api import router
from aistack.ralph_wiggum.backends import configured_backends
from aistack.ralph_wiggum.backends.aider import AiderBackend
from aistack.ralph_wiggum.events import Notifier
from aistack.ralph_wiggum.loop import LoopEngine
from aistack.ralph_wiggum.metrics import registry_for
from aistack.ralph_wiggum.store import Store
from aistack.web import check_bind, install_error_handlers, require_api_key, serve

log = logging.getLogger("aistack.ralph")


def create_app(settings: Settings) -> FastAPI:
    notifier = Notifier()
    store = Store.sqlite(settings.db_path, on_event=notifier.notify)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        notifier.bind(asyncio.get_running_loop())
        backends = configured_backends(settings)
        engine = LoopEngine(settings, store, backends)
        app.state.engine = engine
        app.state.registry = registry_for(store, lambda: engine.active_count)
        for backend in backends.values():
            if isinstance(backend, AiderBackend):
                backend.start()
        engine.start()
        log.info("ralph-wiggum %s ready: backends %s, data in %s", __version__, ", ".join(backends), settings.aistack_data_dir)
        try:
            yield
        finally:
            await engine.shutdown()
            for backend in backends.values():
                await backend.aclose()

    app = FastAPI(
        title="aistack ralph-wiggum",
        version=__version__,
        description="Task API of the Ralph Wiggum loop: submit a task, watch it iterate, approve or stop it.",
        lifespan=lifespan,
    )
    app.state.started = time.monotonic()
    app.state.settings = settings
    app.state.store = store
    app.state.notifier = notifier
    install_error_handlers(app)
    key = settings.api_key
    require_api_key(app, key, open_paths=("/health",))
    app.include_router(router)
    return app


def run(settings: Settings) -> int:
    key = settings.api_key
    check_bind(settings.aistack_bind_address, key)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from aistack.preflight import before_serve
    except ImportError:  # pragma: no cover - preflight ships with the lifecycle package
        before_serve = None
    if before_serve is not None:
        before_serve(settings, "ralph-wiggum")
    serve(create_app(settings), settings.aistack_bind_address, settings.ralph_wiggum_port, settings.log_level)
    return 0
